import { useId } from "react";

/** What a key admits when no CIDRs are given (the server's default): any IPv4 and any IPv6 address. */
export const ANY_ORIGIN = ["0.0.0.0/0", "::/0"];

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function validCidr(entry: string): boolean {
  const [address = "", prefix, ...rest] = entry.split("/");
  if (rest.length > 0) return false;
  const v4 = IPV4.test(address);
  // IPv6: hex groups and at most one "::"; the server checks the details.
  const v6 = !v4 && /^[0-9a-fA-F:.]+$/.test(address) && address.includes(":") && address.split("::").length <= 2;
  if (!v4 && !v6) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (v4 ? 32 : 128);
}

/** The textarea's CIDRs (one per line, or separated by spaces or commas). */
export function parseCidrs(text: string): string[] {
  return text.split(/[\s,]+/).filter((c) => c !== "");
}

/** The entries that are not CIDRs or addresses, for the field's error. */
export function invalidCidrs(text: string): string[] {
  return parseCidrs(text).filter((c) => !validCidr(c));
}

/** The text a key's CIDRs are edited as: empty when it admits any origin. */
export function cidrText(cidrs: readonly string[]): string {
  return cidrs.join(" ") === ANY_ORIGIN.join(" ") ? "" : cidrs.join("\n");
}

/** The allowed-networks field, with its own validation shown next to it. */
export function CidrField(props: { value: string; onChange: (value: string) => void; showErrors: boolean }) {
  const id = useId();
  const hintId = useId();
  const errorId = useId();
  const invalid = props.showErrors ? invalidCidrs(props.value) : [];
  return (
    <div className="field">
      <label htmlFor={id}>Allowed networks (CIDRs)</label>
      <textarea
        id={id}
        className="mono"
        rows={2}
        placeholder={"10.0.0.0/8\n2001:db8::/32"}
        value={props.value}
        aria-describedby={invalid.length > 0 ? `${errorId} ${hintId}` : hintId}
        aria-invalid={invalid.length > 0}
        onChange={(e) => props.onChange(e.target.value)}
      />
      {invalid.length > 0 && (
        <p id={errorId} className="field-error">
          Not a CIDR or address: {invalid.slice(0, 3).join(", ")}
          {invalid.length > 3 && ` and ${invalid.length - 3} more`}
        </p>
      )}
      <p id={hintId} className="muted">
        One per line. Empty: any address may use the key.
      </p>
    </div>
  );
}
