import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // expect.poll waits on real browsers, processes and servers; its 1 s default flaked on two busy
    // cores (a dashboard's first page interactive after 1.4 s while the rest of the suite ran).
    expect: { poll: { timeout: 10_000 } },
    pool: "forks",
    // Two cores: more workers only add contention.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
