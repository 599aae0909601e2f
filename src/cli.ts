import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type ApiKeysClients, createApiKeysClients } from "@apikeys/client";
import { Code, ConnectError } from "@connectrpc/connect";
import { AdminGetApiKeyUsageResponseSchema, UsageGranularity } from "./gen/apikeys/v1/admin_pb.js";
import { type ApiKey, ApiKeySchema, type ApiKeyPolicy, ApiKeyPolicySchema, PermissionSchema } from "./gen/apikeys/v1/resources_pb.js";

/** Exit codes scripts can rely on (also in docs/cli.md). */
export const EXIT = {
  ok: 0,
  refused: 1,
  usage: 2,
  auth: 3,
  unavailable: 4,
  notFound: 5,
  alreadyExists: 6,
} as const;

const USAGE = `usage: apikeys <command> [options]

commands:
  serve                                      run the service (configured by environment, see docs/configuration.md)
  migrate                                    apply database migrations and exit
  policies list
  policies create <name> [--permissions a:b,c:d] [--description text]
  policies delete <id|name>                  also deletes every key of the policy
  keys list [--policy <id|name>]
  keys create <name> --policy <id|name> [--description text] [--expires <ISO time>]
  keys rotate <id|name> [--grace <seconds>]  prints the new token
  keys disable <id|name>
  keys usage <id|name> [--days <n>] [--hourly]  verification outcomes per day (or hour), default the last 30 days
  keys delete <id|name>
  permissions list

options:
  --json      print JSON instead of a table
  --help      print this help

environment:
  APIKEYS_URL          the service (default http://localhost:5000; its ADMIN_PORT if it has one)
  APIKEYS_ADMIN_TOKEN  a key with the apikeys:* permissions the command needs
`;

class UsageError extends Error {}

interface Parsed {
  words: string[];
  flags: Map<string, string | true>;
}

const VALUE_FLAGS = new Set(["permissions", "description", "policy", "expires", "grace", "days"]);
const BOOLEAN_FLAGS = new Set(["json", "help", "hourly"]);

function parse(argv: string[]): Parsed {
  const words: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) {
      words.push(arg);
      continue;
    }
    const [name, inline] = arg.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    if (BOOLEAN_FLAGS.has(name) && inline === undefined) flags.set(name, true);
    else if (VALUE_FLAGS.has(name)) {
      const value = inline ?? argv[++i];
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
      flags.set(name, value);
    } else throw new UsageError(`unknown option --${name}`);
  }
  return { words, flags };
}

/** A plain-text table: a header row, then one row per item, columns padded. */
function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

type Admin = ApiKeysClients["admin"];

async function allKeys(admin: Admin, policyId = ""): Promise<ApiKey[]> {
  const keys: ApiKey[] = [];
  let pageToken = "";
  do {
    const page = await admin.adminGetApiKeys({ pageSize: 500, pageToken, policyId });
    keys.push(...page.apiKeys);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return keys;
}

async function policyId(admin: Admin, ref: string): Promise<string> {
  if (UUID.test(ref)) return ref;
  const found = (await admin.adminGetApiKeyPolicies({})).policies.find((p) => p.name === ref);
  if (found === undefined) throw new ConnectError(`no policy named "${ref}"`, Code.NotFound);
  return found.id;
}

async function keyId(admin: Admin, ref: string): Promise<string> {
  if (UUID.test(ref)) return ref;
  const found = (await allKeys(admin)).find((k) => k.name === ref);
  if (found === undefined) throw new ConnectError(`no API key named "${ref}"`, Code.NotFound);
  return found.id;
}

const when = (ts: Parameters<typeof timestampDate>[0] | undefined) => (ts === undefined ? "-" : timestampDate(ts).toISOString());

function keyRows(keys: ApiKey[]): string {
  return table(
    ["ID", "NAME", "POLICY", "ENABLED", "START", "EXPIRES", "LAST USED"],
    keys.map((k) => [k.id, k.name, k.policy?.name ?? "-", k.enabled ? "yes" : "no", k.start, when(k.expiresOn), when(k.lastUsedOn)]),
  );
}

/** One row per bucket and a TOTAL row; a column per outcome seen (VERIFY_CODE_ left off). */
function usageRows(buckets: Array<{ startTime?: Parameters<typeof timestampDate>[0]; counts: Record<string, bigint> }>, totals: Record<string, bigint>): string {
  const codes = Object.keys(totals).sort((a, b) => (a === "VERIFY_CODE_VALID" ? -1 : b === "VERIFY_CODE_VALID" ? 1 : a.localeCompare(b)));
  const short = (code: string) => code.replace(/^VERIFY_CODE_/, "");
  const rows = buckets.map((b) => [when(b.startTime), ...codes.map((c) => String(b.counts[c] ?? 0n))]);
  rows.push(["TOTAL", ...codes.map((c) => String(totals[c] ?? 0n))]);
  return table(["START", ...codes.map(short)], rows);
}

function policyRows(policies: ApiKeyPolicy[]): string {
  return table(
    ["ID", "NAME", "PERMISSIONS", "DESCRIPTION"],
    policies.map((p) => [p.id, p.name, p.permissions.join(",") || "-", p.description]),
  );
}

const json = <D extends DescMessage>(schema: D, message: MessageShape<D>) => toJson(schema, message);

/** Runs one CLI command; resolves with the exit code after writing to `out`/`err`. */
export async function runCli(
  argv: string[],
  env: Record<string, string | undefined>,
  out: (text: string) => void,
  err: (text: string) => void,
): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parse(argv);
  } catch (e) {
    err(`apikeys: ${(e as Error).message}\n${USAGE}`);
    return EXIT.usage;
  }
  const { words, flags } = parsed;
  const asJson = flags.has("json");
  const command = words.slice(0, 2).join(" ");
  if (flags.has("help") || words.length === 0) {
    (words.length === 0 && !flags.has("help") ? err : out)(USAGE);
    return words.length === 0 && !flags.has("help") ? EXIT.usage : EXIT.ok;
  }
  const token = env.APIKEYS_ADMIN_TOKEN;
  if (token === undefined || token === "") {
    err("apikeys: set APIKEYS_ADMIN_TOKEN to an admin key's token\n");
    return EXIT.usage;
  }
  const baseUrl = env.APIKEYS_URL || "http://localhost:5000";
  // The SDK's clients, as any other team gets them (deadline, retries of idempotent calls).
  const { admin } = createApiKeysClients({ baseUrl, token, httpVersion: "1.1" });
  const arg = (n: number, what: string) => {
    const value = words[n];
    if (value === undefined) throw new UsageError(`${command} needs ${what}`);
    return value;
  };
  const flag = (name: string) => {
    const value = flags.get(name);
    return typeof value === "string" ? value : undefined;
  };
  const print = (text: string, value: unknown) => out(asJson ? `${JSON.stringify(value, null, 2)}\n` : text);

  try {
    switch (command) {
      case "policies list": {
        const { policies } = await admin.adminGetApiKeyPolicies({});
        print(policyRows(policies), policies.map((p) => json(ApiKeyPolicySchema, p)));
        break;
      }
      case "policies create": {
        const permissions = (flag("permissions") ?? "").split(",").map((p) => p.trim()).filter((p) => p !== "");
        const { policy } = await admin.adminCreateApiKeyPolicy({ name: arg(2, "a name"), description: flag("description") ?? "", permissions });
        print(policyRows([policy!]), json(ApiKeyPolicySchema, policy!));
        break;
      }
      case "policies delete": {
        const id = await policyId(admin, arg(2, "a policy id or name"));
        const res = await admin.adminDeleteApiKeyPolicy({ id });
        print(`deleted policy ${res.policyDeleted?.name ?? id} and ${res.apiKeysDeleted} key(s)\n`, {
          policy: res.policyDeleted && json(ApiKeyPolicySchema, res.policyDeleted),
          apiKeysDeleted: res.apiKeysDeleted,
        });
        break;
      }
      case "keys list": {
        const ref = flag("policy");
        const keys = await allKeys(admin, ref === undefined ? "" : await policyId(admin, ref));
        print(keyRows(keys), keys.map((k) => json(ApiKeySchema, k)));
        break;
      }
      case "keys create": {
        const ref = flag("policy");
        if (ref === undefined) throw new UsageError("keys create needs --policy <id|name>");
        const expires = flag("expires");
        const expiresOn = expires === undefined ? undefined : new Date(expires);
        if (expiresOn !== undefined && Number.isNaN(expiresOn.getTime())) throw new UsageError(`--expires is not a time: "${expires}"`);
        const res = await admin.adminCreateApiKey({
          name: arg(2, "a name"),
          policyId: await policyId(admin, ref),
          description: flag("description") ?? "",
          ...(expiresOn !== undefined && { expiresOn: { seconds: BigInt(Math.floor(expiresOn.getTime() / 1000)), nanos: 0 } }),
        });
        print(`${keyRows([res.apiKey!])}\ntoken (shown once, store it now): ${res.token}\n`, { apiKey: json(ApiKeySchema, res.apiKey!), token: res.token });
        break;
      }
      case "keys rotate": {
        const grace = flag("grace");
        if (grace !== undefined && !/^\d+$/.test(grace)) throw new UsageError(`--grace must be whole seconds, got "${grace}"`);
        const id = await keyId(admin, arg(2, "a key id or name"));
        const res = await admin.adminRotateApiKey({ id, ...(grace !== undefined && { gracePeriod: { seconds: BigInt(grace), nanos: 0 } }) });
        print(`${keyRows([res.apiKey!])}\nnew token (shown once, store it now): ${res.token}\n`, { apiKey: json(ApiKeySchema, res.apiKey!), token: res.token });
        break;
      }
      case "keys disable": {
        const id = await keyId(admin, arg(2, "a key id or name"));
        const { apiKey } = await admin.adminUpdateApiKey({ id, enabled: false });
        print(keyRows([apiKey!]), json(ApiKeySchema, apiKey!));
        break;
      }
      case "keys usage": {
        const days = flag("days") ?? "30";
        const hourly = flags.get("hourly") === true;
        if (!/^\d+$/.test(days) || Number(days) < 1 || Number(days) > (hourly ? 31 : 366)) {
          throw new UsageError(`--days must be a whole number from 1 to ${hourly ? 31 : 366}, got "${days}"`);
        }
        const id = await keyId(admin, arg(2, "a key id or name"));
        const start = Date.now() - Number(days) * 86_400_000;
        const usage = await admin.adminGetApiKeyUsage({
          id,
          granularity: hourly ? UsageGranularity.HOUR : UsageGranularity.DAY,
          startTime: { seconds: BigInt(Math.floor(start / 1000)), nanos: 0 },
        });
        print(usageRows(usage.buckets, usage.totals), json(AdminGetApiKeyUsageResponseSchema, usage));
        break;
      }
      case "keys delete": {
        const id = await keyId(admin, arg(2, "a key id or name"));
        const res = await admin.adminDeleteApiKey({ id });
        print(`deleted API key ${res.apiKeyDeleted?.name ?? id}\n`, res.apiKeyDeleted && json(ApiKeySchema, res.apiKeyDeleted));
        break;
      }
      case "permissions list": {
        const { permissions } = await admin.adminGetApiKeyPermissions({});
        print(
          table(["PERMISSION", "DEPRECATED", "DESCRIPTION"], permissions.map((p) => [p.name, p.deprecated ? "yes" : "no", p.description])),
          permissions.map((p) => json(PermissionSchema, p)),
        );
        break;
      }
      default:
        throw new UsageError(`unknown command "${words.join(" ")}"`);
    }
    return EXIT.ok;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`apikeys: ${e.message}\n${USAGE}`);
      return EXIT.usage;
    }
    const error = ConnectError.from(e);
    err(`apikeys: ${error.rawMessage} (${Code[error.code] ?? error.code})\n`);
    switch (error.code) {
      case Code.Unauthenticated:
      case Code.PermissionDenied:
        return EXIT.auth;
      case Code.Unavailable:
      case Code.DeadlineExceeded:
        return EXIT.unavailable;
      case Code.NotFound:
        return EXIT.notFound;
      case Code.AlreadyExists:
        return EXIT.alreadyExists;
      default:
        return EXIT.refused;
    }
  }
}
