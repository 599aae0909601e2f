import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import { RefillInterval } from "../../src/gen/apikeys/v1/resources_pb.js";
import { BROWSER_TEST_TIMEOUT_MS, launchChromium, newTestContext } from "../helpers/browser.js";
import { clientsFor, startTestServer, type TestServer } from "../helpers/server.js";

/*
 * The key details' usage chart in a real browser: real verifications through
 * the API, flushed as the server flushes them, then read back as bars, legend
 * and table; under the dashboard's real CSP, and axe-core clean.
 */

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SCREENSHOTS = fileURLToPath(new URL("./screenshots/", import.meta.url));
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const DAY_MS = 86_400_000;

describe("key details: 30-day usage chart", { timeout: BROWSER_TEST_TIMEOUT_MS }, () => {
  let server: TestServer;
  let browser: Browser;
  let keyId: string;

  beforeAll(async () => {
    execFileSync("node", ["scripts/build-web-if-stale.mjs"], { cwd: ROOT, stdio: "inherit", timeout: 120_000 });
    mkdirSync(SCREENSHOTS, { recursive: true });
    server = await startTestServer();
    const { admin, data } = clientsFor(server.baseUrl, "connect", server.adminToken);
    await data.registerPermissions({ service: "reports", permissions: [{ name: "read", description: "Read reports." }] });
    const policy = (await admin.adminCreateApiKeyPolicy({ name: "report-reader", permissions: ["reports:read"] })).policy!;
    const created = await admin.adminCreateApiKey({
      name: "usage-key",
      policyId: policy.id,
      remaining: 5n,
      refill: { amount: 5n, interval: RefillInterval.MONTHLY, day: 1 },
    });
    keyId = created.apiKey!.id;
    // Today: 3 refused for permissions (no credit spent), 5 valid, then 2 out of credits.
    const codes: VerifyCode[] = [];
    for (let i = 0; i < 3; i++) codes.push((await data.verifyToken({ token: created.token, allOf: ["reports:write"] })).code);
    for (let i = 0; i < 7; i++) codes.push((await data.verifyToken({ token: created.token, allOf: ["reports:read"] })).code);
    expect(codes.filter((c) => c === VerifyCode.VALID)).toHaveLength(5);
    expect(codes.filter((c) => c === VerifyCode.USAGE_EXCEEDED)).toHaveLength(2);
    await server.server.ctx.verifier.usage.flush();
    // Three days ago, as another instance's earlier flush would have left it.
    const earlier = new Date(Math.floor(Date.now() / DAY_MS) * DAY_MS - 3 * DAY_MS + 9 * 3_600_000);
    await server.server.ctx.db.insertInto("key_usage").values({ key_id: keyId, hour: earlier, code: "VERIFY_CODE_RATE_LIMITED", count: 7 }).execute();
    browser = await launchChromium();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  async function openDetails(options: { axe: boolean }) {
    const context = await newTestContext(browser, { viewport: { width: 1280, height: 900 }, bypassCSP: options.axe });
    await context.addInitScript(`sessionStorage.setItem("apikeys.adminToken", ${JSON.stringify(server.adminToken)})`);
    const page = await context.newPage();
    const problems: string[] = [];
    page.on("pageerror", (err) => problems.push(err.message));
    page.on("console", (m) => {
      if (m.text().includes("Content Security Policy")) problems.push(m.text());
    });
    await page.goto(`${server.baseUrl}/keys`);
    await page.getByRole("button", { name: "usage-key", exact: true }).click();
    const details = page.getByRole("dialog", { name: "Key usage-key" });
    await expect.poll(() => details.getByTestId("usage-chart").isVisible()).toBe(true);
    return { page, context, details, problems };
  }

  it("shows today's and an earlier day's real counts as bars, legend and table", async () => {
    const { page, context, details, problems } = await openDetails({ axe: false });
    const chart = details.getByTestId("usage-chart");
    expect(await chart.getAttribute("data-total")).toBe("17");
    expect(await chart.locator("figcaption").textContent()).toBe("Verifications, last 30 days (UTC): 17 in total");
    const legend = (await details.getByTestId("usage-legend").getByRole("listitem").allTextContents()).map((text) => text.trim());
    expect(legend).toEqual(["Valid: 5", "Insufficient permissions: 3", "Rate limited: 7", "Out of credits: 2"]);
    // 30 day slots; two with traffic, each a stack of one rect per outcome (plus its hover slot).
    const days = chart.locator("g[data-day]");
    expect(await days.count()).toBe(30);
    const today = new Date().toISOString().slice(0, 10);
    const earlier = new Date(Date.now() - 3 * DAY_MS).toISOString().slice(0, 10);
    expect(await chart.locator(`g[data-day="${today}"]`).getAttribute("data-total")).toBe("10");
    expect(await chart.locator(`g[data-day="${today}"] rect:not([fill="transparent"])`).count()).toBe(3);
    expect(await chart.locator(`g[data-day="${earlier}"]`).getAttribute("data-total")).toBe("7");
    expect(await chart.locator('g[data-total="0"]').count()).toBe(28);
    // The bars are drawn to scale: today's stack is the tallest (10 of a 10 peak), the earlier one 7/10 of it.
    const height = async (day: string) =>
      page.evaluate<number>(`[...document.querySelectorAll('g[data-day="${day}"] rect:not([fill="transparent"])')].reduce((h, r) => h + Number(r.getAttribute("height")), 0)`);
    const [h10, h7] = [await height(today), await height(earlier)];
    expect(h7 / h10).toBeCloseTo(0.7, 5);
    // The same numbers as a table, for whoever cannot see the bars.
    await details.getByText("Show as a table").click();
    const rows = details.locator(".usage-table tbody tr");
    expect(await rows.count()).toBe(2);
    expect(await rows.nth(1).locator("td").allTextContents()).toEqual(["5", "3", "0", "2"]);
    expect(await details.getByText(/^0 left; set back to 5 on day 1 of every month \(UTC\)$/).count()).toBe(1);
    await page.screenshot({ path: `${SCREENSHOTS}50-key-usage-chart.png`, fullPage: true });
    expect(problems).toEqual([]);
    await context.close();
  });

  it("has no axe A/AA violation in the key details with the chart", async () => {
    const { page, context } = await openDetails({ axe: true });
    await page.getByText("Show as a table").click();
    await page.addScriptTag({ content: AXE_SOURCE });
    const result = await page.evaluate<{ passes: number; violations: { id: string; nodes: { target: string[] }[] }[] }>(
      `axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"] } }).then(r => ({ passes: r.passes.length, violations: r.violations.map(v => ({ id: v.id, nodes: v.nodes.map(n => ({ target: n.target })) })) }))`,
    );
    expect(result.passes).toBeGreaterThan(5);
    expect(result.violations).toEqual([]);
    await context.close();
  });

  it("says so when a key has no verifications", async () => {
    const { admin } = clientsFor(server.baseUrl, "connect", server.adminToken);
    const policyId = (await admin.adminGetApiKeyPolicies({})).policies.find((p) => p.name === "report-reader")!.id;
    await admin.adminCreateApiKey({ name: "idle-key", policyId });
    const context = await newTestContext(browser);
    await context.addInitScript(`sessionStorage.setItem("apikeys.adminToken", ${JSON.stringify(server.adminToken)})`);
    const page = await context.newPage();
    await page.goto(`${server.baseUrl}/keys`);
    await page.getByRole("button", { name: "idle-key", exact: true }).click();
    const details = page.getByRole("dialog", { name: "Key idle-key" });
    await expect.poll(() => details.getByText("No verifications in the last 30 days.").isVisible()).toBe(true);
    expect(await details.getByTestId("usage-chart").getAttribute("data-total")).toBe("0");
    expect(await details.getByText("Unlimited").count()).toBe(1);
    await context.close();
  });
});
