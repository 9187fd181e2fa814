// The end-to-end harness: starts the real `atelier serve` and headless Chromium once, and gives
// the test files (`*.e2e.mjs`, loaded by run.mjs) what they share.
// Needs the built app (npm run build), the atelier binary (cargo build -p atelier; found at
// $ATELIER_BIN or $CARGO_TARGET_DIR/debug/atelier) and Chromium (/usr/bin/chromium or $CHROMIUM).
// Screenshots go to test-results/screenshots/; the server's log to test-results/atelier.log.
import { mkdir, readFile, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { gradientPng } from "./png.mjs";
import { startAtelier } from "./server.mjs";

const require = createRequire(import.meta.url);
const webRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
export const results = join(webRoot, "test-results");
export const shots = join(results, "screenshots");
const axeSource = await readFile(require.resolve("axe-core/axe.min.js"), "utf8");

await rm(results, { recursive: true, force: true });
await mkdir(shots, { recursive: true });

export const server = await startAtelier({ webRoot, logFile: join(results, "atelier.log") });
export const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});

export const tests = [];
export const test = (name, fn) => tests.push({ name, fn });
export const expect = (condition, message) => {
  if (!condition) throw new Error(message);
};

/** A browser context on the gateway, failing the test on CSP violations and page errors. */
export async function newPage(options = {}) {
  const context = await browser.newContext({ baseURL: server.base, acceptDownloads: true, ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.problems = [];
  page.on("console", (message) => {
    const text = message.text();
    if (/Content Security Policy|Refused to (load|execute|apply)/i.test(text)) page.problems.push(`CSP: ${text}`);
  });
  page.on("pageerror", (error) => page.problems.push(`page error: ${error.message}`));
  return { context, page };
}

/** axe-core, WCAG 2.1 A and AA rules: zero violations. */
export async function axe(page, label) {
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
    return result.violations.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  expect(violations.length === 0, `axe on ${label}:\n  ${violations.join("\n  ")}`);
}

export async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

let userCount = 0;
export async function register(page) {
  const email = `e2e-${Date.now()}-${++userCount}@example.com`;
  await page.goto("/register");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password", { exact: true }).fill("correct horse battery staple");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("heading", { name: "Studio" }).waitFor();
  return email;
}

export async function upload(page, name, buffer, mimeType = "image/png") {
  await page.getByTestId("file-input").setInputFiles({ name, mimeType, buffer });
}

export async function uploadImage(page, name, seed = 1) {
  const done = page.waitForResponse((r) => r.url().endsWith("/api/images/upload"));
  await upload(page, name, gradientPng(96, 64, seed));
  const response = await done;
  expect(response.status() === 201, `upload answered ${response.status()}`);
  await page.locator("li", { hasText: name }).getByText("Uploaded").waitFor();
  return (await response.json()).id;
}

/** Watches the job status on the page; resolves with every status seen once it is terminal. */
export async function statusesUntilDone(page, timeoutMs = 60_000) {
  const seen = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await page.getByTestId("job-status").getAttribute("data-status").catch(() => null);
    if (status && seen[seen.length - 1] !== status) seen.push(status);
    if (["completed", "failed", "cancelled"].includes(status)) return seen;
    if (Date.now() > deadline) throw new Error(`job not finished; statuses seen: ${seen.join(", ")}`);
    await page.waitForTimeout(50);
  }
}

export async function apiCall(page, path, init = {}) {
  return page.evaluate(
    async ({ path, init }) => {
      const session = JSON.parse(localStorage.getItem("atelier-session") ?? "{}").state?.session;
      const response = await fetch(path, { ...init, headers: { ...init.headers, authorization: `Bearer ${session?.accessToken}` } });
      return { status: response.status, body: await response.text() };
    },
    { path, init },
  );
}

// ---------------------------------------------------------------------------------------------
