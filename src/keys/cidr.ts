import { isIP } from "node:net";

/** A network: its address bytes (4 for IPv4, 16 for IPv6) and prefix length. */
export interface Cidr {
  bytes: Uint8Array;
  prefix: number;
}

function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^\d{1,3}$/.test(parts[i]!)) return undefined;
    const value = Number(parts[i]);
    if (value > 255) return undefined;
    bytes[i] = value;
  }
  return bytes;
}

function parseIpv6(text: string): Uint8Array | undefined {
  const zone = text.indexOf("%");
  let address = zone >= 0 ? text.slice(0, zone) : text;
  const lastColon = address.lastIndexOf(":");
  const tail = address.slice(lastColon + 1);
  if (tail.includes(".")) {
    // An embedded IPv4 tail (e.g. ::ffff:10.0.0.1) stands for the last two groups.
    const v4 = parseIpv4(tail);
    if (v4 === undefined) return undefined;
    address = `${address.slice(0, lastColon + 1)}${((v4[0]! << 8) | v4[1]!).toString(16)}:${((v4[2]! << 8) | v4[3]!).toString(16)}`;
  }
  const halves = address.split("::");
  if (halves.length > 2) return undefined;
  const left = halves[0] === "" ? [] : halves[0]!.split(":");
  const right = halves.length === 2 && halves[1] !== "" ? halves[1]!.split(":") : [];
  const missing = 8 - left.length - right.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...left, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...right];
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(groups[i]!)) return undefined;
    const value = parseInt(groups[i]!, 16);
    bytes[2 * i] = value >> 8;
    bytes[2 * i + 1] = value & 0xff;
  }
  return bytes;
}

function parseAddress(text: string): Uint8Array | undefined {
  switch (isIP(text)) {
    case 4:
      return parseIpv4(text);
    case 6:
      return parseIpv6(text);
    default:
      return undefined;
  }
}

/**
 * Parses a client address; an IPv4-mapped IPv6 address (::ffff:a.b.c.d, as a
 * dual-stack socket reports IPv4 peers) is returned as the IPv4 address.
 */
export function parseClientAddress(text: string): Uint8Array | undefined {
  const bytes = parseAddress(text);
  if (bytes === undefined || bytes.length === 4) return bytes;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return bytes;
  return bytes[10] === 0xff && bytes[11] === 0xff ? bytes.subarray(12) : bytes;
}

/**
 * Parses "address/prefix" (IPv4 or IPv6); a bare address means that one host.
 * Returns the canonical text (bare addresses get /32 or /128) or undefined.
 */
export function parseCidr(text: string): { cidr: Cidr; text: string } | undefined {
  const slash = text.indexOf("/");
  const address = slash < 0 ? text : text.slice(0, slash);
  const bytes = parseAddress(address);
  if (bytes === undefined) return undefined;
  const maxPrefix = bytes.length * 8;
  if (slash < 0) return { cidr: { bytes, prefix: maxPrefix }, text: `${address}/${maxPrefix}` };
  const prefixText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > maxPrefix) return undefined;
  return { cidr: { bytes, prefix }, text };
}

function contains(cidr: Cidr, address: Uint8Array): boolean {
  if (cidr.bytes.length !== address.length) return false;
  const whole = cidr.prefix >> 3;
  for (let i = 0; i < whole; i++) if (cidr.bytes[i] !== address[i]) return false;
  const rest = cidr.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (cidr.bytes[whole]! & mask) === (address[whole]! & mask);
}

/** A key's allowed CIDRs, compiled once per cached key. */
export class OriginFilter {
  private readonly networks: Cidr[];
  /** True when every IPv4 and every IPv6 address is admitted. */
  readonly anyOrigin: boolean;

  constructor(cidrs: readonly string[]) {
    // Stored CIDRs were validated on write; anything unparsable admits nothing.
    this.networks = cidrs.flatMap((text) => {
      const parsed = parseCidr(text);
      return parsed === undefined ? [] : [parsed.cidr];
    });
    const anyV4 = this.networks.some((n) => n.bytes.length === 4 && n.prefix === 0);
    const anyV6 = this.networks.some((n) => n.bytes.length === 16 && n.prefix === 0);
    this.anyOrigin = anyV4 && anyV6;
  }

  /**
   * Whether a client address may use the key. An unknown address ("") passes
   * only when the key admits any origin, since it could be any address.
   */
  allows(clientIp: string): boolean {
    if (this.anyOrigin) return true;
    if (clientIp === "") return false;
    const address = parseClientAddress(clientIp);
    return address !== undefined && this.networks.some((n) => contains(n, address));
  }
}
