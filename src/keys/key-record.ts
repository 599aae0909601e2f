import type { CredentialTypeName } from "../db/schema.js";
import type { Refill } from "./refill.js";

/** A key's limit: at most `requests` per `periodMs`. */
export interface RateLimit {
  requests: number;
  periodMs: number;
}

/** What a verification needs to know about a key, as read from the database. */
export interface KeyRecord {
  id: string;
  name: string;
  enabled: boolean;
  start: string;
  createdOn: Date;
  updatedOn: Date;
  lastUsedOn: Date | null;
  createdBy: string | null;
  description: string;
  metadata: Record<string, string>;
  expiresOn: Date | null;
  allowedCidrs: string[];
  environment: Record<string, string | number | boolean>;
  rateLimit: RateLimit | null;
  /** Credits left when the record was read (null: unlimited); the spend itself always goes to the database. */
  remaining: number | null;
  refill: Refill | null;
  /** "signing" keys authenticate with HS256 JWTs instead of a bearer token. */
  credentialType: CredentialTypeName;
  /** The token a rotation replaced, while its grace period lasts. */
  previousToken?: { start: string; expiresOn: Date } | null;
  /** The consumer holding the key, if any. */
  consumer: { id: string; username: string } | null;
  policy: {
    id: string;
    name: string;
    description: string;
    createdOn: Date;
    updatedOn: Date;
    createdBy: string | null;
    /** Sorted canonical names. */
    permissions: string[];
  };
}

