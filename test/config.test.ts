import { describe, expect, it } from "vitest";
import { ConfigError, readConfig } from "../src/config.js";
import { generateToken } from "../src/tokens/token.js";

describe("config", () => {
  it("has working defaults", () => {
    const config = readConfig({});
    expect(config.http.port).toBe(5000);
    expect(config.http.adminPort).toBeUndefined();
    expect(config.database.url).toBeUndefined();
    expect(config.database.dataDir).toMatch(/data$/);
    expect(config.tokens.prefix).toBe("ak");
    expect(config.http.limits).toEqual({
      sniffTimeoutMs: 10_000,
      headersTimeoutMs: 15_000,
      requestTimeoutMs: 60_000,
      keepAliveTimeoutMs: 65_000,
      h2IdleTimeoutMs: 300_000,
      maxConnectionsPerAddress: 256,
    });
    expect(config.database.statementTimeoutMs).toBe(10_000);
    expect(config.cache.maxBytes).toBe(64 * 1024 * 1024);
    expect([config.http.maxWatchStreamsPerKey, config.http.maxWatchStreamsPerAddress, config.http.maxHealthWatchStreamsPerAddress]).toEqual([128, 16, 16]);
    // Rate limits per instance unless REDIS_URL is set; usage kept 90 days.
    expect(config.redis).toBeUndefined();
    expect(config.usage.retentionMs).toBe(90 * 86_400_000);
    expect(config.usage.flushIntervalMs).toBe(5_000);
    expect(readConfig({ APIKEYS_USAGE_FLUSH_SECONDS: "60" }).usage.flushIntervalMs).toBe(60_000);
  });

  it("reads the Redis settings when REDIS_URL is set", () => {
    expect(readConfig({ REDIS_URL: "redis://cache:6379/2" }).redis).toEqual({
      url: "redis://cache:6379/2",
      keyPrefix: "apikeys:",
      connectTimeoutMs: 2_000,
      commandTimeoutMs: 500,
    });
    expect(readConfig({ REDIS_URL: "rediss://cache:6380", APIKEYS_REDIS_KEY_PREFIX: "prod:" }).redis?.keyPrefix).toBe("prod:");
  });

  it.each([
    [{ PORT: "abc" }, /PORT must be a whole number/],
    [{ PORT: "70000" }, /PORT must be between 0 and 65535/],
    [{ PORT: "5000", ADMIN_PORT: "5000" }, /ADMIN_PORT must differ from PORT/],
    [{ DATABASE_URL: "mysql://x" }, /DATABASE_URL must start with postgres/],
    [{ APIKEYS_TOKEN_PREFIX: "Bad_" }, /APIKEYS_TOKEN_PREFIX/],
    [{ APIKEYS_BOOTSTRAP_TOKEN: "not-a-token" }, /APIKEYS_BOOTSTRAP_TOKEN is not a well-formed/],
    [{ LOG_LEVEL: "loud" }, /LOG_LEVEL must be one of/],
    [{ APIKEYS_TOKEN_PEPPER: "short" }, /APIKEYS_TOKEN_PEPPER must be at least 32/],
    [{ APIKEYS_HEADERS_TIMEOUT_SECONDS: "0" }, /APIKEYS_HEADERS_TIMEOUT_SECONDS must be between 1/],
    [{ APIKEYS_HEADERS_TIMEOUT_SECONDS: "30", APIKEYS_REQUEST_TIMEOUT_SECONDS: "20" }, /APIKEYS_REQUEST_TIMEOUT_SECONDS must be 0 or at least/],
    [{ APIKEYS_MAX_CONNECTIONS_PER_ADDRESS: "-1" }, /APIKEYS_MAX_CONNECTIONS_PER_ADDRESS must be a whole number/],
    [{ REDIS_URL: "http://127.0.0.1:6379" }, /REDIS_URL must start with redis:\/\/ or rediss:\/\//],
    [{ REDIS_URL: "redis://127.0.0.1:6379", APIKEYS_REDIS_COMMAND_TIMEOUT_MS: "0" }, /APIKEYS_REDIS_COMMAND_TIMEOUT_MS must be between 10/],
    [{ APIKEYS_USAGE_RETENTION_DAYS: "0" }, /APIKEYS_USAGE_RETENTION_DAYS must be between 1 and 3650/],
    [{ APIKEYS_USAGE_FLUSH_SECONDS: "0" }, /APIKEYS_USAGE_FLUSH_SECONDS must be between 1 and 3600/],
    [{ APIKEYS_FAST_PATH: "yes" }, /APIKEYS_FAST_PATH must be a whole number/],
    [{ APIKEYS_FAST_PATH: "2" }, /APIKEYS_FAST_PATH must be between 0 and 1/],
  ])("refuses %j with a clear message", (env, message) => {
    expect(() => readConfig(env)).toThrow(ConfigError);
    expect(() => readConfig(env)).toThrow(message);
  });

  it("accepts a well-formed bootstrap token", () => {
    const token = generateToken("ak");
    expect(readConfig({ APIKEYS_BOOTSTRAP_TOKEN: token }).tokens.bootstrapToken).toBe(token);
  });

  it("turns the fast path on by default and off with APIKEYS_FAST_PATH=0", () => {
    expect(readConfig({}).http.fastPath).toBe(true);
    expect(readConfig({ APIKEYS_FAST_PATH: "1" }).http.fastPath).toBe(true);
    expect(readConfig({ APIKEYS_FAST_PATH: "0" }).http.fastPath).toBe(false);
  });
});
