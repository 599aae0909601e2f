import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

const VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * Encrypts signing-key secrets at rest with AES-256-GCM under a key derived from
 * the server's APIKEYS_SECRET_KEY. Each box is bound to its key id (as associated
 * data), so a ciphertext copied onto another key's row does not open.
 */
export class SecretBox {
  private readonly key: Buffer;

  constructor(serverSecret: string) {
    this.key = Buffer.from(hkdfSync("sha256", serverSecret, "", "apikeys signing-key secrets v1", 32));
  }

  /** Encrypts `plaintext` for the record `boundTo`. */
  seal(plaintext: string, boundTo: string): Buffer {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.key, iv);
    cipher.setAAD(Buffer.from(boundTo, "utf8"));
    const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return Buffer.concat([Buffer.from([VERSION]), iv, cipher.getAuthTag(), body]);
  }

  /** Decrypts a box sealed for `boundTo`; throws if it was altered, sealed for another record or under another key. */
  open(box: Uint8Array, boundTo: string): string {
    const bytes = Buffer.from(box);
    if (bytes.length < 1 + IV_BYTES + TAG_BYTES || bytes[0] !== VERSION) throw new Error("not a sealed secret");
    const iv = bytes.subarray(1, 1 + IV_BYTES);
    const tag = bytes.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
    const decipher = createDecipheriv("aes-256-gcm", this.key, iv);
    decipher.setAAD(Buffer.from(boundTo, "utf8"));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(bytes.subarray(1 + IV_BYTES + TAG_BYTES)), decipher.final()]).toString("utf8");
  }
}

/** A new HS256 secret: 256 random bits, base64url. */
export function generateSigningSecret(): string {
  return randomBytes(32).toString("base64url");
}
