import { failedPrecondition } from "../errors.js";
import { decodeJwt, decodeProtectedHeader, errors, jwtVerify } from "jose";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { Database } from "../db/schema.js";
import { databaseError } from "../db/database-errors.js";
import { isUuid } from "../validation.js";
import { VerifyCode } from "../gen/apikeys/v1/api_keys_pb.js";
import { findKeyRecordById } from "../keys/key.repository.js";
import type { KeyRecord } from "../keys/key-record.js";
import type { CachedKey, VerdictCache } from "./verdict-cache.js";
import type { SecretBox } from "../jwt/secret-box.js";
import { findSigningSecret, pruneJtis, recordJti } from "../jwt/signing-secret.repository.js";

/** How signed credentials are checked; from config. */
export interface SigningSettings {
  /** Undefined when APIKEYS_SECRET_KEY is not set: no signing keys can be made or checked. */
  secrets: SecretBox | undefined;
  /** Longest accepted exp - iat. */
  maxLifetimeMs: number;
  /** Clock difference tolerated on iat and exp. */
  clockSkewMs: number;
}

const ALGORITHM = "HS256";
const MAX_JTI_LENGTH = 256;
// A jti is an identifier: control characters (NUL among them, which Postgres cannot store) make it a malformed claim.
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;
// Expired JWT ids are deleted after this many new ones, so the table stays small without a timer.
const PRUNE_EVERY = 1000;

/** Whether a presented credential is shaped like a compact JWS (three base64url parts; the last may be empty, as with alg "none"). */
export function looksLikeJwt(token: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token);
}

/**
 * Checks HS256 JWTs presented by holders of signing keys: `iss` names the key,
 * the signature must verify with its secret, `iat`/`exp` must be present and
 * within the allowed lifetime and skew, and a `jti` may be used once.
 */
export class SignedCredentialVerifier {
  // Secrets travel with the cached record object, so an invalidated record takes its secret with it.
  private readonly secrets = new WeakMap<KeyRecord, Uint8Array>();
  private recorded = 0;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly settings: SigningSettings,
    private readonly cache: VerdictCache,
    /** How long a key read now may be cached (zero while invalidations may be missed). */
    private readonly cacheTtlMs: () => number,
    private readonly logger: Logger,
  ) {}

  /** The signing key a JWT proves possession of, or the code refusing it. */
  async resolve(token: string): Promise<CachedKey | VerifyCode> {
    let keyId: string;
    try {
      const header = decodeProtectedHeader(token);
      // Checked before any key lookup: "none" and every other algorithm are refused outright.
      if (header.alg !== ALGORITHM) return VerifyCode.SIGNATURE_INVALID;
      const iss = decodeJwt(token).iss;
      if (typeof iss !== "string" || !isUuid(iss)) return VerifyCode.NOT_FOUND;
      keyId = iss.toLowerCase();
    } catch {
      return VerifyCode.NOT_FOUND;
    }
    const found = await this.loadKey(keyId);
    if (found === undefined) return VerifyCode.NOT_FOUND;
    const secret = this.secrets.get(found.record)!;

    const skewSeconds = Math.ceil(this.settings.clockSkewMs / 1000);
    let payload;
    try {
      ({ payload } = await jwtVerify(token, secret, {
        algorithms: [ALGORITHM],
        issuer: keyId,
        requiredClaims: ["iat", "exp"],
        clockTolerance: skewSeconds,
      }));
    } catch (err) {
      return refusalFor(err);
    }
    const now = Date.now();
    const iat = payload.iat! * 1000;
    const exp = payload.exp! * 1000;
    if (iat > now + this.settings.clockSkewMs) return VerifyCode.CLAIMS_INVALID;
    // A token that expires before it was issued has no lifetime at all, whatever the skew tolerates.
    if (exp <= iat || exp - iat > this.settings.maxLifetimeMs) return VerifyCode.CLAIMS_INVALID;
    const jti = (payload as { jti?: unknown }).jti;
    if (jti !== undefined) {
      if (typeof jti !== "string" || jti === "" || jti.length > MAX_JTI_LENGTH || CONTROL_CHARACTER.test(jti)) {
        return VerifyCode.CLAIMS_INVALID;
      }
      if (!(await this.firstUse(keyId, jti, new Date(exp + this.settings.clockSkewMs)))) return VerifyCode.REPLAYED;
    }
    return found;
  }

  private async loadKey(keyId: string): Promise<CachedKey | undefined> {
    const cacheKey = `jwt:${keyId}`;
    const cached = this.cache.get(cacheKey);
    if (cached !== undefined) return cached;
    const generation = this.cache.currentGeneration();
    let record: KeyRecord | undefined;
    let sealed: Uint8Array | undefined;
    try {
      record = await findKeyRecordById(this.db, keyId);
      if (record === undefined || record.credentialType !== "signing") return undefined;
      sealed = await findSigningSecret(this.db, keyId);
    } catch (err) {
      throw databaseError(err) ?? err;
    }
    if (sealed === undefined) return undefined;
    const box = this.settings.secrets;
    let secret: string;
    try {
      if (box === undefined) throw new Error("APIKEYS_SECRET_KEY is not set");
      secret = box.open(sealed, keyId);
    } catch (err) {
      this.logger.error({ key_id: keyId, err: (err as Error).message }, "cannot open a signing key's secret");
      throw failedPrecondition("this server cannot check signing keys: APIKEYS_SECRET_KEY is missing or differs from the one the key was created with");
    }
    const entry = this.cache.set(cacheKey, record, this.cacheTtlMs(), generation);
    this.secrets.set(entry.record, new TextEncoder().encode(secret));
    return entry;
  }

  private async firstUse(keyId: string, jti: string, until: Date): Promise<boolean> {
    try {
      const first = await recordJti(this.db, keyId, jti, until);
      if (++this.recorded % PRUNE_EVERY === 0) await pruneJtis(this.db);
      return first;
    } catch (err) {
      throw databaseError(err) ?? err;
    }
  }
}

function refusalFor(err: unknown): VerifyCode {
  if (err instanceof errors.JWTExpired) return VerifyCode.EXPIRED;
  if (err instanceof errors.JWSSignatureVerificationFailed || err instanceof errors.JOSEAlgNotAllowed) {
    return VerifyCode.SIGNATURE_INVALID;
  }
  if (err instanceof errors.JWTClaimValidationFailed || err instanceof errors.JWTInvalid) return VerifyCode.CLAIMS_INVALID;
  return VerifyCode.NOT_FOUND;
}
