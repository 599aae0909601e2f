/** The longest delay Node's timers represent (ms); a longer one fires after 1 ms instead. */
const MAX_TIMER_MS = 2_147_483_647;

const GRPC_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000_001 };

/**
 * Clamps a request's deadline header to the longest Node can wait. gRPC allows up
 * to 8 digits with an hour unit (`99999999H`, 11,000 years) and Connect up to 10
 * digits of milliseconds; connect hands such values to setTimeout, which treats
 * anything over ~24.8 days as 1 ms, so "practically no deadline" became "expired".
 */
export function clampDeadline(header: Headers): void {
  const grpc = header.get("grpc-timeout");
  const match = grpc === null ? null : /^(\d{1,8})([HMSmun])$/.exec(grpc);
  if (match !== null && Number(match[1]) * GRPC_UNIT_MS[match[2]!]! > MAX_TIMER_MS) {
    header.set("grpc-timeout", `${Math.floor(MAX_TIMER_MS / 1000)}S`);
  }
  const connect = header.get("connect-timeout-ms");
  if (connect !== null && /^\d{1,10}$/.test(connect) && Number(connect) > MAX_TIMER_MS) {
    header.set("connect-timeout-ms", String(MAX_TIMER_MS));
  }
}
