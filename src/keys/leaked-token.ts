import type { Writer } from "../db/write.js";
import { invalidArgument } from "../errors.js";
import { hashToken, parseToken } from "../tokens/token.js";
import * as repo from "./key.repository.js";
import type { TokenSettings } from "./key.service.js";

const MAX_LEAKED_TOKEN = 1024;
const MAX_SOURCE_URL = 2048;

function requireSourceUrl(value: string): string {
  if (value === "") return value;
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (value.length > MAX_SOURCE_URL || url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) {
    throw invalidArgument(`source_url must be an http or https URL of at most ${MAX_SOURCE_URL} characters`);
  }
  return value;
}

/**
 * Handles a leaked-token report: a token of ours (prefix and checksum) that
 * still identifies a key disables that key at once. The answer says only
 * whether the token was recognised and found, never which key (`keyId` is for
 * the caller's cache, not for the reporter). The write disables it in the caller's transaction
 * transaction, only when a key was disabled.
 */
export async function reportLeakedToken(
  w: Writer,
  tokens: TokenSettings,
  req: { token: string; sourceUrl: string },
): Promise<{ recognized: boolean; found: boolean }> {
  const token = req.token.trim();
  if (token === "") throw invalidArgument("token is required");
  if (token.length > MAX_LEAKED_TOKEN) throw invalidArgument(`token must be at most ${MAX_LEAKED_TOKEN} characters`);
  requireSourceUrl(req.sourceUrl);
  if (parseToken(token, tokens.prefix) === undefined) return { recognized: false, found: false };
  const hash = hashToken(token, tokens.pepper);
  const id = await repo.lockKeyByTokenHash(w.tx, hash);
  if (id === undefined) return { recognized: true, found: false };
  await repo.updateKey(w.tx, id, { enabled: false });
  await w.invalidate({ kind: "key", id });
  w.wrote(id);
  return { recognized: true, found: true };
}
