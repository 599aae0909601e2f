import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
// The SDK's browser-safe entry: the generated services alone, without Node APIs.
import { ApiKeysAdminService, type Consumer } from "@apikeys/client/services";

// Session storage: gone when the tab closes, never sent anywhere but the Authorization header.
const TOKEN_KEY = "apikeys.adminToken";

/** The admin token of this tab, if signed in. */
export function readToken(): string | undefined {
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

export function saveToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Connect transport to this page's own origin, authenticated with the session's token. */
export const transport = createConnectTransport({
  baseUrl: window.location.origin,
  interceptors: [
    (next) => (req) => {
      const token = readToken();
      if (token !== undefined && !req.header.has("authorization")) req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    },
  ],
});

export type AdminClient = Client<typeof ApiKeysAdminService>;

export const adminClient: AdminClient = createClient(ApiKeysAdminService, transport);

/** Checks that `token` may use the dashboard; resolves to an error message when it may not. */
export async function checkAdminToken(token: string): Promise<string | undefined> {
  try {
    await adminClient.adminGetApiKeyPolicies({}, { headers: { authorization: `Bearer ${token}` } });
    return undefined;
  } catch (err) {
    const e = ConnectError.from(err);
    if (e.code === Code.Unauthenticated) return "That token is not valid.";
    if (e.code === Code.PermissionDenied) return `That token is valid but is not an admin token: ${e.rawMessage}`;
    return describeError(e);
  }
}

/** The server's message for a failed call, with its code so admins can search for it. */
export function describeError(err: unknown): string {
  const e = ConnectError.from(err);
  return `${e.rawMessage} (${codeName(e.code)})`;
}

function codeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(/[A-Z]/g, (c, i: number) => (i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`));
}

/** Every consumer, following pages, with how many keys each holds. */
export async function listAllConsumers(): Promise<{ consumers: Consumer[]; apiKeyCounts: Map<string, number> }> {
  const consumers: Consumer[] = [];
  const apiKeyCounts = new Map<string, number>();
  let pageToken = "";
  do {
    const page = await adminClient.adminGetConsumers({ pageSize: 500, pageToken });
    consumers.push(...page.consumers);
    for (const [id, count] of Object.entries(page.apiKeyCounts)) apiKeyCounts.set(id, count);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return { consumers, apiKeyCounts };
}
