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
