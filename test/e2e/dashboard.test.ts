import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
// Browser-side expressions are passed to page.evaluate as strings: this tsconfig has no DOM types.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VerifyCode } from "../../src/gen/apikeys/v1/api_keys_pb.js";
import { BROWSER_TEST_TIMEOUT_MS, launchChromium, newTestContext } from "../helpers/browser.js";
import { clientsFor, startTestServer, type TestServer } from "../helpers/server.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SCREENSHOTS = fileURLToPath(new URL("./screenshots/", import.meta.url));

/** One page plus what it did that a test must be able to refuse. */
interface Tab {
  page: Page;
  context: BrowserContext;
  /** Requests to anywhere but the server: the dashboard must need none. */
  external: string[];
  /** Uncaught exceptions and CSP violations. */
  problems: string[];
}

describe("admin dashboard in a real browser", { timeout: BROWSER_TEST_TIMEOUT_MS }, () => {
  let server: TestServer;
  let browser: Browser;
  let clients: ReturnType<typeof clientsFor>;

  beforeAll(async () => {
    // Builds only when dist/web is missing or older than web/ (the same step `npm start` runs).
    execFileSync("node", ["scripts/build-web-if-stale.mjs"], { cwd: ROOT, stdio: "inherit", timeout: 120_000 });
    mkdirSync(SCREENSHOTS, { recursive: true });
    server = await startTestServer();
    clients = clientsFor(server.baseUrl, "connect", server.adminToken);
    // Declared, then re-declared without "refunds.write" so the catalogue holds a deprecated permission.
    await clients.data.registerPermissions({
      service: "billing",
      permissions: [
        { name: "invoices.read", description: "Read invoices and their line items." },
        { name: "invoices.write", description: "Create and void invoices." },
        { name: "refunds.write", description: "Issue refunds." },
      ],
    });
    await clients.data.registerPermissions({
      service: "billing",
      permissions: [
        { name: "invoices.read", description: "Read invoices and their line items." },
        { name: "invoices.write", description: "Create and void invoices." },
      ],
    });
    browser = await launchChromium();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  async function openTab(viewport: { width: number; height: number }): Promise<Tab> {
    const context = await newTestContext(browser, { viewport });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.baseUrl });
    const page = await context.newPage();
    const tab: Tab = { page, context, external: [], problems: [] };
    page.on("request", (r) => {
      if (!r.url().startsWith(`${server.baseUrl}/`) && !r.url().startsWith("data:")) tab.external.push(r.url());
    });
    page.on("pageerror", (err) => tab.problems.push(err.message));
    page.on("console", (m) => {
      if (m.text().includes("Content Security Policy")) tab.problems.push(m.text());
    });
    return tab;
  }

  async function signIn(page: Page) {
    await page.goto(`${server.baseUrl}/`);
    await page.getByLabel("Admin token").fill(server.adminToken);
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => page.getByRole("heading", { name: "API keys", level: 1 }).isVisible()).toBe(true);
  }

  const shot = (page: Page, name: string) => page.screenshot({ path: `${SCREENSHOTS}${name}.png`, fullPage: true });

  const verify = (token: string, clientIp = "10.1.2.3") =>
    clients.data.verifyToken({ token, clientIp, allOf: ["billing:invoices.read", "billing:invoices.write"] });

  it("runs the whole key and policy lifecycle at 1280 px", async () => {
    const { page, context, external, problems } = await openTab({ width: 1280, height: 800 });

    await page.goto(`${server.baseUrl}/`);
    await expect.poll(() => page.getByLabel("Admin token").isVisible()).toBe(true);
    await page.getByLabel("Admin token").fill("ak_not-a-real-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => page.getByRole("alert").textContent()).toContain("not valid");
    await shot(page, "01-sign-in-error");

    await page.getByLabel("Admin token").fill(server.adminToken);
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => page.getByRole("row", { name: /bootstrap/i }).count()).toBe(1);
    expect(page.url()).not.toContain(server.adminToken);
    expect(await page.evaluate<string[]>("Object.values(sessionStorage)")).toEqual([server.adminToken]);
    expect(await page.evaluate<number>("localStorage.length")).toBe(0);
    await shot(page, "02-keys-initial");

    // Policy with two permissions, picked through the catalogue's search.
    await page.getByRole("link", { name: "Policies" }).click();
    await page.getByRole("button", { name: "New policy" }).click();
    const policyDialog = page.getByRole("dialog", { name: "New policy" });
    await policyDialog.getByLabel("Name", { exact: true }).fill("billing-clerk");
    await policyDialog.getByLabel("Description").fill("Reads and writes invoices");
    await policyDialog.getByLabel("Search permissions").fill("invoices");
    await expect.poll(() => policyDialog.getByRole("checkbox").count()).toBe(2);
    await policyDialog.getByLabel(/billing:invoices\.read/).check();
    await policyDialog.getByLabel(/billing:invoices\.write/).check();
    await policyDialog.getByLabel("Search permissions").fill("");
    expect(await policyDialog.getByText("deprecated").count()).toBe(1);
    await shot(page, "03-policy-editor");
    await policyDialog.getByRole("button", { name: "Create policy" }).click();
    const policyRow = page.getByRole("row", { name: /billing-clerk/ });
    await expect.poll(() => policyRow.count()).toBe(1);
    expect(await policyRow.getByRole("listitem").allTextContents()).toEqual([
      "billing:invoices.read",
      "billing:invoices.write",
    ]);
    await shot(page, "04-policies");

    // Key on that policy; its token is read from the page, once.
    await page.getByRole("link", { name: "API keys" }).click();
    await page.getByRole("button", { name: "New API key" }).click();
    const keyDialog = page.getByRole("dialog", { name: "New API key" });
    await keyDialog.getByLabel("Name").fill("invoice-worker");
    await keyDialog.getByLabel("Policy").selectOption({ label: "billing-clerk (2 permissions)" });
    await keyDialog.getByText("Description, expiry, allowed networks, environment").click();
    await keyDialog.getByLabel("Description").fill("Nightly invoice run");
    await keyDialog.getByLabel("Expires").fill("2099-01-01T12:00");
    await keyDialog.getByLabel("Allowed networks (CIDRs)").fill("10.0.0.0/8");
    await keyDialog.getByLabel("Environment (JSON object)").fill('{"region": "eu-west-1"}');
    await shot(page, "05-key-form");
    await keyDialog.getByRole("button", { name: "Create key" }).click();
    const reveal = page.getByRole("dialog", { name: "API key created" });
    const tokenBlock = reveal.getByTestId("new-token");
    await expect.poll(() => tokenBlock.textContent()).toMatch(/^ak_/);
    const token = (await tokenBlock.textContent())!;
    await reveal.getByRole("button", { name: "Copy", exact: true }).click();
    await expect.poll(() => reveal.getByText("Copied to the clipboard.").isVisible()).toBe(true);
    expect(await page.evaluate<string>("navigator.clipboard.readText()")).toBe(token);
    expect(await reveal.getByText("Copy this token now.").isVisible()).toBe(true);
    await shot(page, "06-key-token");
    await reveal.getByRole("button", { name: "I have copied the token" }).click();
    await expect.poll(() => page.content()).not.toContain(token);
    expect(await page.evaluate<string>("JSON.stringify({ ...sessionStorage, ...localStorage })")).not.toContain(token);
    await context.clearPermissions();

    const ok = await verify(token);
    expect(ok.valid).toBe(true);
    expect(ok.code).toBe(VerifyCode.VALID);
    expect(ok.apiKey?.name).toBe("invoice-worker");
    expect([...ok.permissions].sort()).toEqual(["billing:invoices.read", "billing:invoices.write"]);
    expect(ok.environment).toEqual({ region: "eu-west-1" });
    expect(ok.apiKey?.description).toBe("Nightly invoice run");
    expect(ok.apiKey?.expiresOn?.seconds).toBeGreaterThan(BigInt(Math.floor(Date.UTC(2098, 11, 30) / 1000)));
    expect((await verify(token, "192.168.0.1")).code).toBe(VerifyCode.IP_NOT_ALLOWED);

    // Disable from the table: verify must refuse, and say why.
    const keyRow = page.getByRole("row", { name: /invoice-worker/ });
    await keyRow.getByRole("button", { name: "Disable invoice-worker" }).click();
    await expect.poll(() => keyRow.getByText("Disabled", { exact: true }).isVisible()).toBe(true);
    await expect.poll(async () => (await verify(token)).code).toBe(VerifyCode.DISABLED);
    expect((await verify(token)).valid).toBe(false);
    await shot(page, "07-keys-disabled");

    await page.getByRole("link", { name: "Permissions" }).click();
    const refunds = page.getByRole("row", { name: /refunds\.write/ });
    await expect.poll(() => refunds.getByText("Deprecated").isVisible()).toBe(true);
    await shot(page, "08-permissions");

    // Deleting the policy says how many keys go with it, then takes them.
    await page.getByRole("link", { name: "Policies" }).click();
    await page.getByRole("button", { name: "Delete billing-clerk" }).click();
    const confirm = page.getByRole("dialog", { name: "Delete policy billing-clerk?" });
    await expect.poll(() => confirm.getByTestId("policy-delete-impact").textContent()).toContain("This also deletes 1 API key");
    expect(await confirm.getByRole("listitem").textContent()).toContain("invoice-worker");
    await shot(page, "09-policy-delete");
    await confirm.getByRole("button", { name: "Delete policy and 1 key" }).click();
    await expect.poll(() => page.getByRole("status").first().textContent()).toContain("deleted, and 1 API key with it");
    expect(await page.getByRole("row", { name: /billing-clerk/ }).count()).toBe(0);

    await page.getByRole("link", { name: "API keys" }).click();
    await expect.poll(() => page.getByRole("row", { name: /bootstrap/i }).count()).toBe(1);
    // The keys list was cached before the delete; it is refetched on return.
    await expect.poll(() => page.getByRole("row", { name: /invoice-worker/ }).count()).toBe(0);
    const remaining = await clients.admin.adminGetApiKeys({});
    expect(remaining.apiKeys.map((k) => k.name)).not.toContain("invoice-worker");
    await expect.poll(async () => (await verify(token)).code).toBe(VerifyCode.NOT_FOUND);
    await shot(page, "10-keys-after-policy-delete");

    await page.getByRole("button", { name: "Sign out" }).click();
    await expect.poll(() => page.getByLabel("Admin token").isVisible()).toBe(true);
    expect(await page.evaluate<number>("sessionStorage.length")).toBe(0);

    expect(external).toEqual([]);
    expect(problems).toEqual([]);
    await context.close();
  });

  it("rotates and renames a key, showing server errors inline", async () => {
    const policy = await clients.admin.adminCreateApiKeyPolicy({
      name: "invoice-reader",
      permissions: ["billing:invoices.read"],
    });
    const created = await clients.admin.adminCreateApiKey({ name: "report-job", policyId: policy.policy!.id });
    const { page, context, problems } = await openTab({ width: 1280, height: 800 });
    await signIn(page);

    const row = page.getByRole("row", { name: /report-job/ });
    await row.getByRole("button", { name: "Rotate report-job" }).click();
    const rotate = page.getByRole("dialog", { name: "Rotate report-job" });
    await rotate.getByLabel("The current token stops working").selectOption({ label: "Immediately" });
    await rotate.getByRole("button", { name: "Rotate token" }).click();
    const reveal = page.getByRole("dialog", { name: "Token rotated" });
    await expect.poll(() => reveal.getByTestId("new-token").textContent()).toMatch(/^ak_/);
    const rotated = (await reveal.getByTestId("new-token").textContent())!;
    expect(rotated).not.toBe(created.token);
    await reveal.getByRole("button", { name: "I have copied the token" }).click();
    await reveal.getByRole("button", { name: "Close without copying" }).click();
    expect((await clients.data.verifyToken({ token: rotated })).valid).toBe(true);
    await expect.poll(async () => (await clients.data.verifyToken({ token: created.token })).code).toBe(VerifyCode.NOT_FOUND);

    // A name that is taken: the server's own message appears in the form.
    await row.getByRole("button", { name: "Edit report-job" }).click();
    const edit = page.getByRole("dialog", { name: "Edit report-job" });
    await edit.getByText("Description, expiry, allowed networks, environment").click();
    await edit.getByLabel("Environment (JSON object)").fill("region=eu");
    await edit.getByRole("button", { name: "Save" }).click();
    await expect.poll(() => edit.getByText(/not valid JSON/).isVisible()).toBe(true);
    expect(await edit.getByLabel("Environment (JSON object)").getAttribute("aria-invalid")).toBe("true");
    await edit.getByLabel("Environment (JSON object)").fill("");
    const taken = (await clients.admin.adminGetApiKeys({})).apiKeys.find((k) => k.name !== "report-job")!.name;
    await edit.getByLabel("Name").fill(taken);
    await edit.getByRole("button", { name: "Save" }).click();
    await expect.poll(() => edit.getByRole("alert").textContent()).toMatch(/already_exists/);
    await shot(page, "11-edit-error");
    await edit.getByLabel("Name").fill("nightly-report");
    await edit.getByRole("button", { name: "Save" }).click();
    await expect.poll(() => page.getByRole("row", { name: /nightly-report/ }).count()).toBe(1);
    expect((await clients.admin.adminGetApiKey({ id: created.apiKey!.id })).apiKey?.name).toBe("nightly-report");

    // Deleting a key asks first; Cancel keeps it.
    const renamed = page.getByRole("row", { name: /nightly-report/ });
    await renamed.getByRole("button", { name: "Delete nightly-report" }).click();
    await page.getByRole("dialog", { name: "Delete nightly-report?" }).getByRole("button", { name: "Cancel" }).click();
    expect(await renamed.count()).toBe(1);
    await renamed.getByRole("button", { name: "Delete nightly-report" }).click();
    await page.getByRole("dialog", { name: "Delete nightly-report?" }).getByRole("button", { name: "Delete key" }).click();
    await expect.poll(() => renamed.count()).toBe(0);
    expect((await clients.data.verifyToken({ token: rotated })).code).toBe(VerifyCode.NOT_FOUND);

    await clients.admin.adminDeleteApiKeyPolicy({ id: policy.policy!.id });
    expect(problems).toEqual([]);
    await context.close();
  });

  it("manages consumers, their grants and keys, and shows the audit log", async () => {
    const policy = await clients.admin.adminCreateApiKeyPolicy({ name: "payments", permissions: ["billing:invoices.read"] });
    const policyId = policy.policy!.id;
    const { page, context, problems } = await openTab({ width: 1280, height: 800 });
    await signIn(page);

    await page.getByRole("link", { name: "Consumers" }).click();
    await expect.poll(() => page.getByText("No consumers yet.").isVisible()).toBe(true);
    await page.getByRole("button", { name: "New consumer" }).click();
    const create = page.getByRole("dialog", { name: "New consumer" });
    await create.getByLabel("Username").fill("payments team");
    await create.getByRole("button", { name: "Create consumer" }).click();
    await expect.poll(() => create.getByRole("alert").textContent()).toMatch(/whitespace.*invalid_argument/);
    await create.getByLabel("Username").fill("payments-team");
    await create.getByRole("button", { name: "Create consumer" }).click();
    const row = page.getByRole("row", { name: /payments-team/ });
    await expect.poll(() => row.count()).toBe(1);

    await row.getByRole("button", { name: "Policies of payments-team" }).click();
    const grants = page.getByRole("dialog", { name: "Policies of payments-team" });
    await grants.getByLabel("payments").check();
    await grants.getByRole("button", { name: "Save" }).click();
    await expect.poll(() => row.getByRole("listitem").allTextContents()).toEqual(["payments"]);
    const consumer = (await clients.admin.adminGetConsumer({ consumer: "payments-team" })).consumer!;
    expect(consumer.grantedPolicies.map((p) => p.id)).toEqual([policyId]);

    // Choosing the consumer narrows the policy dropdown to what it was granted.
    await page.getByRole("link", { name: "API keys" }).click();
    await page.getByRole("button", { name: "New API key" }).click();
    const keyDialog = page.getByRole("dialog", { name: "New API key" });
    await keyDialog.getByLabel("Name").fill("payments-gateway");
    await keyDialog.getByLabel("Consumer").selectOption({ label: "payments-team" });
    expect(await keyDialog.getByLabel("Policy").locator("option").allTextContents()).toEqual([
      "Choose a policy",
      "payments (1 permission)",
    ]);
    await keyDialog.getByLabel("Policy").selectOption({ label: "payments (1 permission)" });
    await keyDialog.getByRole("button", { name: "Create key" }).click();
    const reveal = page.getByRole("dialog", { name: "API key created" });
    await expect.poll(() => reveal.getByTestId("new-token").textContent()).toMatch(/^ak_/);
    const token = (await reveal.getByTestId("new-token").textContent())!;
    await reveal.getByRole("button", { name: "Copy as env var" }).click();
    await expect.poll(() => page.evaluate<string>("navigator.clipboard.readText()")).toBe(`PAYMENTS_GATEWAY_API_KEY=${token}`);
    await reveal.getByRole("button", { name: "I have copied the token" }).click();
    await expect.poll(() => page.getByRole("row", { name: /payments-gateway/ }).textContent()).toContain("Consumer: payments-team");
    expect((await clients.data.verifyToken({ token })).valid).toBe(true);

    // A grant that a key still uses cannot be withdrawn; the server says which key.
    await page.getByRole("link", { name: "Consumers" }).click();
    await row.getByRole("button", { name: "Policies of payments-team" }).click();
    await grants.getByLabel("payments").uncheck();
    await grants.getByRole("button", { name: "Save" }).click();
    await expect.poll(() => grants.getByRole("alert").textContent()).toMatch(/payments-gateway.*failed_precondition/);
    await shot(page, "12-consumer-grants-error");
    await grants.getByRole("button", { name: "Cancel" }).click();

    await row.getByRole("button", { name: "Delete payments-team" }).click();
    const confirm = page.getByRole("dialog", { name: "Delete consumer payments-team?" });
    await expect.poll(() => confirm.textContent()).toContain("This also deletes its 1 API key (payments-gateway)");
    await confirm.getByRole("button", { name: "Delete consumer and 1 key" }).click();
    await expect.poll(() => page.getByRole("status").first().textContent()).toContain("deleted, and 1 API key with it");
    await expect.poll(async () => (await clients.data.verifyToken({ token })).code).toBe(VerifyCode.NOT_FOUND);

    await page.getByRole("link", { name: "Audit log" }).click();
    const deleted = page.getByRole("row", { name: /AdminDeleteConsumer/ });
    // One row per call, with its outcome.
    await expect.poll(() => deleted.count()).toBe(1);
    expect(await deleted.textContent()).toContain("Success");
    expect(await page.getByRole("row", { name: /AdminGetApiKeys\b/ }).count()).toBe(0);
    await page.getByLabel("Show").selectOption({ label: "Everything" });
    await expect.poll(() => page.getByRole("row", { name: /AdminGetApiKeys\b/ }).count()).toBeGreaterThan(0);
    await page.getByLabel("Target").fill(consumer.id);
    await page.getByRole("button", { name: "Filter" }).click();
    const filtered = async () => (await page.getByRole("row").allTextContents()).slice(1);
    await expect.poll(async () => (await filtered()).length).toBeGreaterThan(0);
    await shot(page, "13-audit-log");
    expect((await filtered()).filter((t) => !t.includes(consumer.id))).toEqual([]);
    // The page never asks about what it has just deleted.
    expect((await filtered()).filter((t) => t.includes("AdminGetApiKeys") && t.includes("Failure"))).toEqual([]);

    await clients.admin.adminDeleteApiKeyPolicy({ id: policyId });
    expect(problems).toEqual([]);
    await context.close();
  });

  it("works by keyboard alone", async () => {
    const { page, context } = await openTab({ width: 1280, height: 800 });
    await page.goto(`${server.baseUrl}/`);
    // The token field has focus on arrival: type, Enter.
    await expect.poll(() => page.evaluate<string | undefined>("document.activeElement?.id")).toBeTruthy();
    await page.keyboard.type(server.adminToken);
    await page.keyboard.press("Enter");
    await expect.poll(() => page.getByRole("heading", { name: "API keys", level: 1 }).isVisible()).toBe(true);

    const focusedText = () => page.evaluate<string | undefined>("document.activeElement?.textContent?.trim()");
    for (let i = 0; i < 10 && (await focusedText()) !== "New API key"; i++) await page.keyboard.press("Tab");
    expect(await focusedText()).toBe("New API key");
    await page.keyboard.press("Enter");
    const dialog = page.getByRole("dialog", { name: "New API key" });
    await expect.poll(() => dialog.isVisible()).toBe(true);
    // Focus lands in the first field, which is labelled.
    expect(await page.evaluate<string | undefined>("document.activeElement.labels?.[0]?.textContent")).toBe("Name");
    await page.keyboard.press("Escape");
    await expect.poll(() => dialog.count()).toBe(0);
    expect(await focusedText()).toBe("New API key");
    await context.close();
  });

  it("fits a phone screen", async () => {
    const { page, context, external, problems } = await openTab({ width: 390, height: 844 });
    await page.goto(`${server.baseUrl}/`);
    await expect.poll(() => page.getByLabel("Admin token").isVisible()).toBe(true);
    await shot(page, "20-phone-sign-in");
    await signIn(page);
    const overflow = () => page.evaluate<number>("document.documentElement.scrollWidth - window.innerWidth");
    expect(await overflow()).toBeLessThanOrEqual(0);
    await shot(page, "21-phone-keys");
    await page.getByRole("link", { name: "Policies" }).click();
    await expect.poll(() => page.getByRole("row", { name: /apikeys-admin/ }).count()).toBe(1);
    expect(await overflow()).toBeLessThanOrEqual(0);
    await shot(page, "22-phone-policies");
    await page.getByRole("button", { name: "New policy" }).click();
    await expect.poll(() => page.getByRole("checkbox").count()).toBeGreaterThan(0);
    await shot(page, "23-phone-policy-editor");
    await page.keyboard.press("Escape");
    await page.getByRole("link", { name: "Permissions" }).click();
    await expect.poll(() => page.getByRole("heading", { name: /billing/ }).isVisible()).toBe(true);
    expect(await overflow()).toBeLessThanOrEqual(0);
    await shot(page, "24-phone-permissions");
    expect(external).toEqual([]);
    expect(problems).toEqual([]);
    await context.close();
  });

  it("serves the dashboard on the admin listener only when ADMIN_PORT is set", async () => {
    const split = await startTestServer({ ADMIN_PORT: "0" });
    try {
      const html = { accept: "text/html" };
      const admin = await fetch(`${split.adminBaseUrl}/policies`, { headers: html });
      expect(admin.status).toBe(200);
      expect(admin.headers.get("content-type")).toBe("text/html; charset=utf-8");
      const body = await admin.text();
      const script = /src="(\/assets\/[^"]+\.js)"/.exec(body)?.[1];
      expect(script).toBeDefined();
      const asset = await fetch(`${split.adminBaseUrl}${script}`);
      expect(asset.headers.get("cache-control")).toContain("immutable");
      expect((await fetch(`${split.baseUrl}/`, { headers: html })).status).toBe(404);
      expect((await fetch(`${split.baseUrl}${script}`)).status).toBe(404);
    } finally {
      await split.stop();
    }
  });
});
