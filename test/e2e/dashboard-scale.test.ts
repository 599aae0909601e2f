import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { sql } from "kysely";
import type { Browser, BrowserContext, Page, Request } from "playwright-core";
// Browser-side expressions are passed to page.evaluate as strings: this tsconfig has no DOM types.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BROWSER_TEST_TIMEOUT_MS, launchChromium, newTestContext } from "../helpers/browser.js";
import { clientsFor, startTestServer, type TestServer } from "../helpers/server.js";

/*
 * The dashboard at 10,000 keys in Debian's Chromium, against a real server:
 * paging, server-side search and sort, the audit log under a flood of reads,
 * the token reveal, a read-only admin, a server outage, and axe-core (A/AA)
 * on every page and dialog at desktop and phone sizes.
 */

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SCREENSHOTS = fileURLToPath(new URL("./screenshots/", import.meta.url));
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const KEY_COUNT = 10_000;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

interface Tab {
  page: Page;
  context: BrowserContext;
  /** Bodies of the key-list requests the page made. */
  keyLists: Array<{ pageSize?: number; filter?: string; orderBy?: string }>;
  problems: string[];
}

describe("admin dashboard at 10,000 keys", { timeout: BROWSER_TEST_TIMEOUT_MS }, () => {
  let server: TestServer;
  let browser: Browser;
  let clients: ReturnType<typeof clientsFor>;
  let readerToken: string;
  let readerPolicyId: string;

  beforeAll(async () => {
    execFileSync("node", ["scripts/build-web-if-stale.mjs"], { cwd: ROOT, stdio: "inherit", timeout: 120_000 });
    mkdirSync(SCREENSHOTS, { recursive: true });
    server = await startTestServer();
    clients = clientsFor(server.baseUrl, "connect", server.adminToken);
    await clients.data.registerPermissions({ service: "billing", permissions: [{ name: "invoices.read", description: "Read invoices." }] });
    readerPolicyId = (await clients.admin.adminCreateApiKeyPolicy({ name: "invoice-reader", permissions: ["billing:invoices.read"] })).policy!.id;
    // One statement, as the bench seeds: every third key never used, the others used i minutes ago.
    await sql`insert into api_keys (name, policy_id, token_hash, start, last_used_on)
      select 'bulk-' || lpad(i::text, 5, '0'), ${readerPolicyId}::uuid, sha256(('bulk-token-' || i)::bytea), 'ak_bulk',
             case when i % 3 = 0 then null else now() - i * interval '1 minute' end
      from generate_series(1, ${KEY_COUNT}::int) as i`.execute(server.server.ctx.db);
    const readOnly = await clients.admin.adminCreateApiKeyPolicy({
      name: "admin-readonly",
      permissions: ["apikeys:keys.read", "apikeys:policies.read", "apikeys:consumers.read", "apikeys:permissions.read", "apikeys:audit.read"],
    });
    readerToken = (await clients.admin.adminCreateApiKey({ name: "auditor", policyId: readOnly.policy!.id })).token;
    browser = await launchChromium();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** A tab already signed in with `token` (the token put in sessionStorage before the page loads). */
  async function openTab(options: { token?: string; viewport?: { width: number; height: number }; baseUrl?: string; axe?: boolean } = {}): Promise<Tab> {
    // CSP is bypassed only where axe-core is injected; every other tab runs under the real policy.
    const context = await newTestContext(browser, { viewport: options.viewport ?? DESKTOP, bypassCSP: options.axe === true });
    await context.addInitScript(`sessionStorage.setItem("apikeys.adminToken", ${JSON.stringify(options.token ?? server.adminToken)})`);
    const page = await context.newPage();
    const tab: Tab = { page, context, keyLists: [], problems: [] };
    page.on("request", (r: Request) => {
      if (r.url().endsWith("/apikeys.v1.ApiKeysAdminService/AdminGetApiKeys")) tab.keyLists.push(JSON.parse(r.postData() ?? "{}"));
    });
    page.on("pageerror", (err) => tab.problems.push(err.message));
    if (process.env.DEBUG_TIMING) page.on("requestfinished", (r) => console.log(r.url(), JSON.stringify(r.timing())));
    page.on("console", (m) => {
      if (m.text().includes("Content Security Policy")) tab.problems.push(m.text());
    });
    return tab;
  }

  const shot = (page: Page, name: string) => page.screenshot({ path: `${SCREENSHOTS}${name}.png`, fullPage: true });
  const keyRows = (page: Page) => page.locator("tbody tr[data-key-id]");

  it("shows the first page of 10,000 keys with one list request of 50 (load time printed)", async () => {
    // A server that has been serving a while: the database's first-query costs are paid.
    await clients.admin.adminGetApiKeys({ pageSize: 50 });
    // Best of three fresh tabs (no cache), so a CPU shared with other jobs does not decide the figure.
    let fastest = Infinity;
    for (let i = 0; i < 2; i++) {
      const probe = await openTab();
      await probe.page.goto(`${server.baseUrl}/keys`);
      await expect.poll(() => keyRows(probe.page).count(), { timeout: 10_000 }).toBe(50);
      fastest = Math.min(fastest, await probe.page.evaluate<number>("performance.now()"));
      await probe.context.close();
    }
    const { page, context, keyLists, problems } = await openTab();
    await page.goto(`${server.baseUrl}/keys`);
    await expect.poll(() => keyRows(page).count(), { timeout: 10_000 }).toBe(50);
    // Milliseconds since navigation started, as the browser measured it: document, bundle, sign-in check, list.
    fastest = Math.min(fastest, await page.evaluate<number>("performance.now()"));
    // Printed, not asserted: timing targets belong in `npm run bench`, not in tests that a
    // shared CPU can fail (the 10 s poll above is the only bound here).
    const contention = Math.max(1, loadavg()[0]! / cpus().length);
    console.log(`first keys page interactive after ${Math.round(fastest)} ms (CPU contention ×${contention.toFixed(1)})`);
    expect(await page.getByRole("button", { name: "New API key" }).isEnabled()).toBe(true);
    await expect.poll(() => page.getByTestId("keys-total").textContent()).toMatch(/Showing 1–50 of 10,00\d keys/);
    // One page asked for: a slow sign-in check can remount the page once and repeat the
    // same request, but never a second page or a bigger one.
    expect(new Set(keyLists.map((r) => JSON.stringify(r))).size).toBe(1);
    expect(keyLists.length).toBeLessThanOrEqual(2);
    expect(keyLists[0]!.pageSize).toBe(50);
    // The bundle went out precompressed and cacheable for a year.
    const bundle = await page.evaluate<string>("document.querySelector('script[src]').src");
    const res = await fetch(bundle, { headers: { "accept-encoding": "br" } });
    expect(res.headers.get("content-encoding")).toBe("br");
    expect(res.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    await shot(page, "30-keys-10000");

    // Next and previous: one request of 50 each way at most.
    await page.getByRole("button", { name: "Next" }).click();
    await expect.poll(() => page.getByTestId("keys-total").textContent()).toMatch(/Showing 51–100 of/);
    await page.getByRole("button", { name: "Previous" }).click();
    await expect.poll(() => page.getByTestId("keys-total").textContent()).toMatch(/Showing 1–50 of/);
    expect(keyLists.length).toBeLessThanOrEqual(3);
    expect(keyLists.every((r) => (r.pageSize ?? 0) <= 100)).toBe(true);
    expect(problems).toEqual([]);
    await context.close();
  });

  it("finds a key on no loaded page by server-side search, and sorts by last use", async () => {
    const { page, context, keyLists } = await openTab();
    await page.goto(`${server.baseUrl}/keys`);
    await expect.poll(() => keyRows(page).count()).toBe(50);
    await page.getByLabel("Search").fill("bulk-09876");
    await expect.poll(() => keyRows(page).count()).toBe(1);
    expect(await keyRows(page).first().textContent()).toContain("bulk-09876");
    expect(keyLists.at(-1)!.filter).toBe("bulk-09876");
    // The search is in the address bar: a reload shows the same result.
    expect(page.url()).toContain("q=bulk-09876");
    await page.reload();
    await expect.poll(() => keyRows(page).count()).toBe(1);
    await shot(page, "31-keys-search");

    await page.getByLabel("Search").fill("");
    await page.getByRole("button", { name: "Never used" }).click();
    await expect.poll(() => page.getByTestId("keys-total").textContent()).toMatch(/of 3,33\d matching keys/);
    await page.getByRole("button", { name: "All", exact: true }).click();

    const header = page.getByRole("columnheader", { name: /Last used/ });
    expect(await header.getAttribute("aria-sort")).toBe("none");
    await header.getByRole("button").click();
    await expect.poll(() => header.getAttribute("aria-sort")).toBe("descending");
    await expect.poll(() => keyLists.at(-1)!.orderBy).toBe("last_used_on desc");
    await expect.poll(async () => (await keyRows(page).allTextContents()).filter((t) => t.includes("bulk-"))[0]).toContain("bulk-00001");
    const cells = await page.locator("tbody td[data-label='Last used'] time").all();
    const used = (await Promise.all(cells.map((c) => c.getAttribute("datetime")))).filter((t): t is string => t !== null);
    expect(used).toEqual([...used].sort().reverse());
    await header.getByRole("button").click();
    await expect.poll(() => header.getAttribute("aria-sort")).toBe("ascending");
    await shot(page, "32-keys-sorted");
    await context.close();
  });

  it("shows the latest change at the top of the audit log after 500 reads", async () => {
    const created = await clients.admin.adminCreateApiKey({ name: "audit-target", policyId: readerPolicyId });
    for (let batch = 0; batch < 10; batch++) {
      await Promise.all(Array.from({ length: 50 }, () => clients.admin.adminGetApiKey({ id: created.apiKey!.id })));
    }
    const { page, context } = await openTab();
    await page.goto(`${server.baseUrl}/audit`);
    const firstRow = page.locator("tbody tr").first();
    await expect.poll(() => firstRow.textContent()).toContain("AdminCreateApiKey");
    expect(await firstRow.textContent()).toContain("audit-target");
    expect(await firstRow.textContent()).toContain("Success");
    // One row per call: the create's attempt is joined to it.
    expect(await page.getByRole("row", { name: /audit-target/ }).count()).toBe(1);
    await page.getByLabel("Target").fill("audit-target");
    await page.getByLabel("Show").selectOption({ label: "Reads" });
    await page.getByRole("button", { name: "Filter" }).click();
    await expect.poll(() => page.locator("tbody tr").count()).toBe(50);
    expect(await page.getByRole("button", { name: "Load older events" }).isVisible()).toBe(true);
    await shot(page, "33-audit-after-reads");
    await clients.admin.adminDeleteApiKey({ id: created.apiKey!.id });
    await context.close();
  }, 90_000);

  it("refuses to close the token reveal on Escape until closing without copying is confirmed", async () => {
    const { page, context } = await openTab();
    await page.goto(`${server.baseUrl}/keys`);
    await page.getByRole("button", { name: "New API key" }).click();
    const form = page.getByRole("dialog", { name: "New API key" });
    await form.getByLabel("Name").fill("escape-test");
    await form.getByLabel("Policy").selectOption({ label: "invoice-reader (1 permission)" });
    await form.getByText("Description, expiry, allowed networks, environment").click();
    // Field-level validation next to the field, before anything is sent.
    await form.getByLabel("Allowed networks (CIDRs)").fill("10.0.0.0/33\n10.1.0.0/16");
    await form.getByLabel("Expires").fill("2001-01-01T00:00");
    await form.getByRole("button", { name: "Create key" }).click();
    await expect.poll(() => form.getByText("Not a CIDR or address: 10.0.0.0/33").isVisible()).toBe(true);
    expect(await form.getByLabel("Expires").getAttribute("aria-invalid")).toBe("true");
    expect(await form.getByText("The expiry must be in the future.").isVisible()).toBe(true);
    await shot(page, "34-key-form-errors");
    await form.getByRole("button", { name: "30 days" }).click();
    await form.getByLabel("Allowed networks (CIDRs)").fill("10.1.0.0/16");
    expect(await form.getByLabel("Expires").getAttribute("aria-invalid")).toBe("false");
    await form.getByRole("button", { name: "Create key" }).click();

    const reveal = page.getByRole("dialog", { name: "API key created" });
    await expect.poll(() => reveal.getByTestId("new-token").textContent()).toMatch(/^ak_/);
    await page.keyboard.press("Escape");
    await expect.poll(() => reveal.getByText("Close without copying? The token cannot be shown again.").isVisible()).toBe(true);
    expect(await reveal.isVisible()).toBe(true);
    await shot(page, "35-token-confirm-close");
    await reveal.getByRole("button", { name: "Keep open" }).click();
    await reveal.getByRole("button", { name: "Close" }).click();
    await reveal.getByRole("button", { name: "Close without copying" }).click();
    await expect.poll(() => reveal.count()).toBe(0);
    await context.close();
  });

  it("disables what a read-only admin may not do, naming the permission", async () => {
    const { page, context } = await openTab({ token: readerToken });
    await page.goto(`${server.baseUrl}/keys`);
    await expect.poll(() => keyRows(page).count()).toBe(50);
    await expect.poll(() => page.getByRole("button", { name: "New API key" }).isDisabled()).toBe(true);
    expect(await page.getByRole("note").textContent()).toContain("apikeys:keys.write");
    expect(await page.getByRole("button", { name: /^Delete / }).first().isDisabled()).toBe(true);
    expect(await page.getByRole("button", { name: /^Disable / }).first().getAttribute("title")).toBe("Your key lacks apikeys:keys.write");
    // Its own key is marked, and there is no bootstrap banner.
    await page.getByLabel("Search").fill("auditor");
    await expect.poll(() => keyRows(page).count()).toBe(1);
    expect(await keyRows(page).first().getByText("you", { exact: true }).isVisible()).toBe(true);
    expect(await page.getByText("bootstrap key").count()).toBe(0);
    await shot(page, "36-read-only-admin");
    await page.getByRole("link", { name: "Policies" }).click();
    await expect.poll(() => page.getByRole("button", { name: "New policy" }).isDisabled()).toBe(true);
    await context.close();
  });

  it("asks before disabling your own key, and offers Undo after disabling another", async () => {
    const victim = await clients.admin.adminCreateApiKey({ name: "undo-me", policyId: readerPolicyId });
    const { page, context } = await openTab();
    await page.goto(`${server.baseUrl}/keys?q=undo-me`);
    await expect.poll(() => keyRows(page).count()).toBe(1);
    await page.getByRole("button", { name: "Disable undo-me" }).click();
    const toast = page.locator(".toast");
    await expect.poll(() => toast.textContent()).toContain("undo-me disabled.");
    await toast.getByRole("button", { name: "Undo" }).click();
    await expect.poll(async () => (await clients.admin.adminGetApiKey({ id: victim.apiKey!.id })).apiKey!.enabled).toBe(true);
    await page.goto(`${server.baseUrl}/keys?q=bootstrap`);
    await expect.poll(() => keyRows(page).count()).toBe(1);
    await page.getByRole("button", { name: "Disable bootstrap" }).click();
    const confirm = page.getByRole("dialog", { name: "Disable bootstrap, your own key?" });
    await expect.poll(() => confirm.isVisible()).toBe(true);
    await confirm.getByRole("button", { name: "Cancel" }).click();
    expect(await keyRows(page).first().getByText("Enabled").isVisible()).toBe(true);
    await context.close();
  });

  it("shows a server-down banner, disables writes, and recovers on Retry", async () => {
    const first = await startTestServer();
    const port = new URL(first.baseUrl).port;
    const { page, context } = await openTab({ token: first.adminToken, baseUrl: first.baseUrl });
    await page.goto(`${first.baseUrl}/keys`);
    await expect.poll(() => keyRows(page).count()).toBe(1);
    await first.stop();
    let second: TestServer | undefined;
    try {
      await page.getByRole("button", { name: "Disabled" }).click();
      const banner = page.getByRole("alert").filter({ hasText: "The server cannot be reached" });
      await expect.poll(() => banner.isVisible()).toBe(true);
      expect(await page.getByRole("button", { name: "New API key" }).isDisabled()).toBe(true);
      await shot(page, "37-server-down");
      // The same port, the same bootstrap token: as if the server came back.
      second = await startTestServer({ PORT: port, APIKEYS_BOOTSTRAP_TOKEN: first.adminToken });
      await banner.getByRole("button", { name: "Retry" }).click();
      await expect.poll(() => banner.count()).toBe(0);
      expect(await page.getByRole("button", { name: "New API key" }).isEnabled()).toBe(true);
    } finally {
      await context.close();
      await second?.stop();
    }
  });

  it("has no axe A/AA violation on any page or dialog, on desktop and phone", async () => {
    const { page, context } = await openTab({ axe: true });
    const audit = async (where: string) => {
      await page.addScriptTag({ content: AXE_SOURCE });
      const result = await page.evaluate<{ passes: number; violations: { id: string; help: string; nodes: { target: string[] }[] }[] }>(
        `axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"] } }).then(r => ({ passes: r.passes.length, violations: r.violations.map(v => ({ id: v.id, help: v.help, nodes: v.nodes.map(n => ({ target: n.target })) })) }))`,
      );
      // Rules ran and passed (axe saw the page), and none failed.
      expect(result.passes, where).toBeGreaterThan(5);
      expect(result.violations, where).toEqual([]);
    };
    for (const [label, viewport] of [["desktop", DESKTOP], ["phone", PHONE]] as const) {
      await page.setViewportSize(viewport);
      await page.goto(`${server.baseUrl}/keys`);
      await expect.poll(() => keyRows(page).count()).toBe(50);
      await audit(`${label} keys`);
      await shot(page, `40-${label}-keys`);
      await keyRows(page).first().getByRole("button").first().click();
      const details = page.getByRole("dialog");
      await expect.poll(() => details.getByText("Recent changes").isVisible()).toBe(true);
      await audit(`${label} key details`);
      await shot(page, `41-${label}-key-details`);
      await page.keyboard.press("Escape");
      await page.getByRole("button", { name: "New API key" }).click();
      const form = page.getByRole("dialog", { name: "New API key" });
      await form.getByText("Description, expiry, allowed networks, environment").click();
      await form.getByRole("button", { name: "Create key" }).click();
      await audit(`${label} key form`);
      await shot(page, `42-${label}-key-form`);
      await page.keyboard.press("Escape");
      for (const [name, heading] of [["Policies", "Policies"], ["Consumers", "Consumers"], ["Permissions", "Permissions"], ["Audit log", "Audit log"]] as const) {
        await page.getByRole("link", { name }).click();
        await expect.poll(() => page.getByRole("heading", { name: heading, level: 1 }).isVisible()).toBe(true);
        await expect.poll(() => page.getByText(/Loading/).count()).toBe(0);
        await audit(`${label} ${name}`);
        await shot(page, `43-${label}-${name.toLowerCase().replace(" ", "-")}`);
      }
      await page.getByRole("link", { name: "Policies" }).click();
      await page.getByRole("button", { name: "New policy" }).click();
      await expect.poll(() => page.getByRole("checkbox").count()).toBeGreaterThan(0);
      await page.getByLabel(/apikeys:keys\.write/).check();
      await expect.poll(() => page.getByTestId("admin-grant-warning").isVisible()).toBe(true);
      await audit(`${label} policy form`);
      await shot(page, `44-${label}-policy-form`);
      await page.keyboard.press("Escape");
    }
    await context.close();
  }, 120_000);
});
