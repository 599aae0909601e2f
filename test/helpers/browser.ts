import { type Browser, type BrowserContext, type BrowserContextOptions, chromium } from "playwright-core";

/**
 * A browser test walks a whole flow (tens of clicks, each a round trip to the
 * server); on two cores shared with the rest of the suite one such test took
 * over the 30 s default while taking ~5 s alone.
 */
export const BROWSER_TEST_TIMEOUT_MS = 90_000;

/**
 * How long one Playwright action (a click, a `textContent()`) may wait for its
 * element. Playwright's own 30 s equals the default test timeout, so an element
 * that never came made the test time out without saying which it was; this way
 * the failure names the locator.
 */
const ACTION_TIMEOUT_MS = 15_000;
const NAVIGATION_TIMEOUT_MS = 30_000;

const CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"];

/** Debian's Chromium, headless, with no network of its own. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });
}

/** A fresh context whose actions fail, naming their locator, well inside the test's timeout. */
export async function newTestContext(browser: Browser, options?: BrowserContextOptions): Promise<BrowserContext> {
  const context = await browser.newContext(options);
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(NAVIGATION_TIMEOUT_MS);
  return context;
}
