import { useQuery } from "@connectrpc/connect-query";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { useId } from "react";
import { ApiKeysAdminService, UsageGranularity } from "../../src/gen/apikeys/v1/admin_pb.js";
import { type ApiKey, RefillInterval } from "../../src/gen/apikeys/v1/resources_pb.js";
import { ErrorMessage, Loading } from "./components.js";

const DAY_MS = 86_400_000;
const DAYS = 30;
const WIDTH = 600;
const HEIGHT = 140;
const GAP = 2;

/** Outcomes in stacking order (bottom first), with their colour and label; others share the last slot. */
const OUTCOMES: ReadonlyArray<{ code: string; label: string; color: string }> = [
  { code: "VERIFY_CODE_VALID", label: "Valid", color: "#2e7d4f" },
  { code: "VERIFY_CODE_INSUFFICIENT_PERMISSIONS", label: "Insufficient permissions", color: "#b3261e" },
  { code: "VERIFY_CODE_RATE_LIMITED", label: "Rate limited", color: "#d9822b" },
  { code: "VERIFY_CODE_USAGE_EXCEEDED", label: "Out of credits", color: "#6a3fb5" },
  { code: "VERIFY_CODE_DISABLED", label: "Disabled", color: "#5b6575" },
  { code: "VERIFY_CODE_EXPIRED", label: "Expired", color: "#8a5a2b" },
  { code: "VERIFY_CODE_IP_NOT_ALLOWED", label: "Address not allowed", color: "#1f4e8c" },
];
const OTHER = { code: "", label: "Other refusals", color: "#9aa3b0" };

function outcomeOf(code: string) {
  return OUTCOMES.find((o) => o.code === code) ?? OTHER;
}

/** A key's credits in words: "Unlimited", or what is left and how it is refilled. */
export function creditsText(k: ApiKey): string {
  if (k.remaining === undefined) return "Unlimited";
  const left = `${k.remaining.toLocaleString()} left`;
  const refill = k.refill;
  if (refill === undefined) return `${left}, never refilled`;
  const amount = refill.amount.toLocaleString();
  if (refill.interval === RefillInterval.DAILY) return `${left}; set back to ${amount} every day at 00:00 UTC`;
  if (refill.interval === RefillInterval.MONTHLY) return `${left}; set back to ${amount} on day ${refill.day || 1} of every month (UTC)`;
  const seconds = Number(refill.period?.seconds ?? 0n);
  const every = seconds % 86_400 === 0 ? `${seconds / 86_400} day(s)` : seconds % 3600 === 0 ? `${seconds / 3600} hour(s)` : `${seconds} s`;
  return `${left}; set back to ${amount} every ${every}`;
}

const dayLabel = (at: number) => new Date(at).toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });

/**
 * A key's verification outcomes per UTC day over the last 30 days, as stacked
 * bars, with a legend of totals and the same numbers as a table.
 */
export function UsageChart({ keyId }: { keyId: string }) {
  const titleId = useId();
  // Today's bucket included: the first day starts 29 days before today's midnight.
  const today = Math.floor(Date.now() / DAY_MS) * DAY_MS;
  const first = today - (DAYS - 1) * DAY_MS;
  const usage = useQuery(ApiKeysAdminService.method.adminGetApiKeyUsage, {
    id: keyId,
    granularity: UsageGranularity.DAY,
    startTime: timestampFromDate(new Date(first)),
  });
  if (usage.isPending) return <Loading what="usage" />;
  if (usage.error) return <ErrorMessage error={usage.error} />;

  const days = Array.from({ length: DAYS }, (_, i) => ({ at: first + i * DAY_MS, counts: new Map<string, number>(), total: 0 }));
  for (const bucket of usage.data.buckets) {
    const at = bucket.startTime === undefined ? 0 : timestampDate(bucket.startTime).getTime();
    const day = days[Math.round((at - first) / DAY_MS)];
    if (day === undefined) continue;
    for (const [code, count] of Object.entries(bucket.counts)) {
      const slot = outcomeOf(code).code;
      day.counts.set(slot, (day.counts.get(slot) ?? 0) + Number(count));
      day.total += Number(count);
    }
  }
  const totals = new Map<string, number>();
  for (const [code, count] of Object.entries(usage.data.totals)) {
    const slot = outcomeOf(code).code;
    totals.set(slot, (totals.get(slot) ?? 0) + Number(count));
  }
  const shown = [...OUTCOMES, OTHER].filter((o) => (totals.get(o.code) ?? 0) > 0);
  const grandTotal = [...totals.values()].reduce((a, b) => a + b, 0);
  const peak = Math.max(1, ...days.map((d) => d.total));
  const barWidth = WIDTH / DAYS;
  const describe = (d: (typeof days)[number]) =>
    `${dayLabel(d.at)}: ${d.total === 0 ? "no verifications" : shown.filter((o) => d.counts.has(o.code)).map((o) => `${d.counts.get(o.code)} ${o.label.toLowerCase()}`).join(", ")}`;

  return (
    <figure className="usage" aria-labelledby={titleId} data-testid="usage-chart" data-total={grandTotal}>
      <figcaption id={titleId}>
        Verifications, last {DAYS} days (UTC): {grandTotal.toLocaleString()} in total
      </figcaption>
      <svg
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        role="img"
        aria-label={`Stacked bars of daily verifications by outcome over the last ${DAYS} days; peak ${peak.toLocaleString()} in one day`}
        preserveAspectRatio="none"
        className="usage-bars"
      >
        <line x1="0" y1={HEIGHT - 0.5} x2={WIDTH} y2={HEIGHT - 0.5} stroke="#d7dce3" />
        {days.map((d) => {
          let y = HEIGHT;
          return (
            <g key={d.at} data-day={new Date(d.at).toISOString().slice(0, 10)} data-total={d.total}>
              <title>{describe(d)}</title>
              {/* A transparent full-height slot, so the day's title shows on hover even without traffic. */}
              <rect x={(d.at - first) / DAY_MS * barWidth} y="0" width={barWidth} height={HEIGHT} fill="transparent" />
              {shown.map((o) => {
                const count = d.counts.get(o.code) ?? 0;
                if (count === 0) return null;
                const h = (count / peak) * (HEIGHT - 4);
                y -= h;
                return <rect key={o.code} x={((d.at - first) / DAY_MS) * barWidth + GAP / 2} y={y} width={barWidth - GAP} height={h} fill={o.color} />;
              })}
            </g>
          );
        })}
      </svg>
      <div className="usage-axis muted" aria-hidden="true">
        <span>{dayLabel(first)}</span>
        <span>{dayLabel(today)}</span>
      </div>
      {shown.length === 0 ? (
        <p className="muted">No verifications in the last {DAYS} days.</p>
      ) : (
        <ul className="usage-legend" data-testid="usage-legend">
          {shown.map((o) => (
            <li key={o.code} data-code={o.code || "OTHER"}>
              <svg width="12" height="12" aria-hidden="true">
                <rect width="12" height="12" rx="2" fill={o.color} />
              </svg>{" "}
              {o.label}: <strong>{(totals.get(o.code) ?? 0).toLocaleString()}</strong>
            </li>
          ))}
        </ul>
      )}
      {shown.length > 0 && (
        <details>
          <summary>Show as a table</summary>
          <table className="usage-table">
            <thead>
              <tr>
                <th scope="col">Day (UTC)</th>
                {shown.map((o) => (
                  <th scope="col" key={o.code}>
                    {o.label}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {days
                .filter((d) => d.total > 0)
                .map((d) => (
                  <tr key={d.at}>
                    <th scope="row">{dayLabel(d.at)}</th>
                    {shown.map((o) => (
                      <td key={o.code}>{(d.counts.get(o.code) ?? 0).toLocaleString()}</td>
                    ))}
                  </tr>
                ))}
            </tbody>
          </table>
        </details>
      )}
    </figure>
  );
}
