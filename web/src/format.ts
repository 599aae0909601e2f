import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** A timestamp for a table cell; `fallback` when the server sent none. */
export function formatTime(ts: Timestamp | undefined, fallback = "—"): string {
  return ts === undefined ? fallback : dateTime.format(timestampDate(ts));
}

/** ISO form for a tooltip / machine-readable attribute. */
export function isoTime(ts: Timestamp | undefined): string | undefined {
  return ts === undefined ? undefined : timestampDate(ts).toISOString();
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** `date` as a `datetime-local` input value, in the browser's time zone. */
export function toLocalInput(date: Date): string {
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 16);
}

/** A `datetime-local` value (browser's time zone) as a Date; undefined when empty or invalid. */
export function fromLocalInput(value: string): Date | undefined {
  if (value === "") return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const UNITS: [Intl.RelativeTimeFormatUnit, number][] = [
  ["year", 365 * 86_400_000],
  ["month", 30 * 86_400_000],
  ["day", 86_400_000],
  ["hour", 3_600_000],
  ["minute", 60_000],
];

/** "3 hours ago", "in 2 days"; `fallback` when the server sent no time. */
export function relativeTime(ts: Timestamp | undefined, fallback = "—", now = Date.now()): string {
  if (ts === undefined) return fallback;
  const delta = timestampDate(ts).getTime() - now;
  for (const [unit, ms] of UNITS) {
    if (Math.abs(delta) >= ms) return relative.format(Math.round(delta / ms), unit);
  }
  return delta < 0 ? "just now" : "in a moment";
}
