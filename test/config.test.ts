import { describe, expect, it } from "vitest";
import { ConfigError, readConfig } from "../src/config.js";
import { generateToken } from "../src/tokens/token.js";

describe("config", () => {
  it("has working defaults", () => {
    const config = readConfig({});
    expect(config.port).toBe(5000);
    expect(config.adminPort).toBeUndefined();
    expect(config.databaseUrl).toBeUndefined();
    expect(config.dataDir).toMatch(/data$/);
    expect(config.tokenPrefix).toBe("ak");
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
  ])("refuses %j with a clear message", (env, message) => {
    expect(() => readConfig(env)).toThrow(ConfigError);
    expect(() => readConfig(env)).toThrow(message);
  });

  it("accepts a well-formed bootstrap token", () => {
    const token = generateToken("ak");
    expect(readConfig({ APIKEYS_BOOTSTRAP_TOKEN: token }).bootstrapToken).toBe(token);
  });
});
