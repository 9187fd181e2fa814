// What the end-to-end tests share: the real `atelier serve` (one per worker, started on first
// use), pages that record CSP violations and page errors, and the steps many tests take.
// Named screenshots go to test-results/screenshots/, the server's log to
// test-results/atelier-<worker>.log, and a failed test's trace to its folder in test-results/.
import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { test as base, expect, type BrowserContext, type BrowserContextOptions, type Page } from "@playwright/test";
import type { AxeResults, RunOptions } from "axe-core";
import type { components } from "../src/api/schema.gen";
import { gradientPng } from "./png";
import { startAtelier, type Atelier } from "./server";

export { expect };
export type Job = components["schemas"]["JobBody"];
export type Image = components["schemas"]["ImageBody"];
export type Batch = components["schemas"]["BatchBody"];
export type Workflow = components["schemas"]["WorkflowBody"];

const webRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
export const results = join(webRoot, "test-results");
export const shots = join(results, "screenshots");
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

export interface Opened {
  context: BrowserContext;
  page: Page;
}

interface TestFixtures {
  /** A new browser context and page on the gateway; every one is closed when the test ends. */
  newPage: (options?: BrowserContextOptions) => Promise<Opened>;
}

interface WorkerFixtures {
  server: Atelier;
}

const problems = new WeakMap<Page, string[]>();

export const test = base.extend<TestFixtures, WorkerFixtures>({
  server: [
    // eslint-disable-next-line no-empty-pattern -- Playwright reads the fixtures a fixture needs from this pattern.
    async ({}, use, workerInfo) => {
      await mkdir(workerInfo.project.outputDir, { recursive: true });
      const server = await startAtelier({ webRoot, logFile: join(workerInfo.project.outputDir, `atelier-${workerInfo.workerIndex}.log`) });
      try {
        await use(server);
      } finally {
        await server.stop();
      }
    },
    { scope: "worker", timeout: 150_000 },
  ],

  baseURL: async ({ server }, use) => {
    await use(server.base);
  },

  newPage: async ({ browser }, use) => {
    const contexts: BrowserContext[] = [];
    await use(async (options = {}) => {
      const context = await browser.newContext(options);
      contexts.push(context);
      const page = await context.newPage();
      page.setDefaultTimeout(20_000);
      const seen: string[] = [];
      problems.set(page, seen);
      page.on("console", (message) => {
        const text = message.text();
        if (/Content Security Policy|Refused to (load|execute|apply)/i.test(text)) seen.push(`CSP: ${text}`);
      });
      page.on("pageerror", (error) => seen.push(`page error: ${error.message}`));
      return { context, page };
    });
    for (const context of contexts) await context.close();
  },
});

/** No CSP violation and no uncaught error on the page so far. */
export function expectNoProblems(page: Page): void {
  expect(problems.get(page) ?? [], "CSP violations or page errors").toEqual([]);
}

/** axe-core, WCAG 2.1 A and AA rules: zero violations. */
export async function axe(page: Page, label: string): Promise<void> {
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const { axe } = window as unknown as { axe: { run: (context: Document, options: RunOptions) => Promise<AxeResults> } };
    const result = await axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
    return result.violations.map((v) => `${v.id} (${v.impact ?? "?"}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  expect(violations, `axe on ${label}`).toEqual([]);
}

/** A named screenshot, kept for people to look at: the whole page, or what the screen shows. */
export async function shot(page: Page, name: string, { fullPage = true }: { fullPage?: boolean } = {}): Promise<void> {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage });
}

let userCount = 0;
export const PASSWORD = "correct horse battery staple";

/** Registers a new user through the app; resolves with their email once the studio shows. */
export async function register(page: Page): Promise<string> {
  const email = `e2e-${Date.now()}-${++userCount}@example.com`;
  await page.goto("/register");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("heading", { name: "Studio" }).waitFor();
  return email;
}

export async function signIn(page: Page, email: string): Promise<void> {
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
}

export interface Session {
  accessToken: string;
  refreshToken: string;
  expiresAt: number;
}

/** The app's session as it keeps it in localStorage. */
export async function session(page: Page): Promise<Session | null> {
  const stored = await page.evaluate(() => localStorage.getItem("atelier-session"));
  return (JSON.parse(stored ?? "{}") as { state?: { session?: Session | null } }).state?.session ?? null;
}

/** Sets files on the studio's uploader. */
export async function upload(page: Page, name: string, buffer: Buffer, mimeType = "image/png"): Promise<void> {
  await page.getByTestId("file-input").setInputFiles({ name, mimeType, buffer });
}

/** Uploads a small PNG through the studio's uploader; resolves with its id once shown uploaded. */
export async function uploadImage(page: Page, name: string, seed = 1): Promise<string> {
  const done = page.waitForResponse((r) => r.url().endsWith("/api/images/upload"));
  await upload(page, name, gradientPng(96, 64, seed));
  const response = await done;
  expect(response.status(), "upload").toBe(201);
  await page.locator("li", { hasText: name }).getByText("Uploaded").waitFor();
  return ((await response.json()) as Image).id;
}

export interface Answer {
  status: number;
  text: string;
}

/** Calls the API from the page with the user's access token; a `json` body is sent as JSON. */
export async function api(page: Page, path: string, { method = "GET", json }: { method?: string; json?: unknown } = {}): Promise<Answer> {
  const token = (await session(page))?.accessToken ?? "";
  return page.evaluate(
    async ({ path, method, body, token }) => {
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      if (body !== undefined) headers["content-type"] = "application/json";
      const response = await fetch(path, { method, headers, body });
      return { status: response.status, text: await response.text() };
    },
    { path, method, body: json === undefined ? undefined : JSON.stringify(json), token },
  );
}

/** The answer's JSON body, once its status is the one expected. */
export function body(answer: Answer, status = 200): unknown {
  expect(answer.status, answer.text).toBe(status);
  return JSON.parse(answer.text);
}

/** Uploads a gradient PNG through the API (not the studio's uploader). */
export async function uploadPng(page: Page, name: string, width: number, height: number, seed = 1): Promise<Image> {
  const token = (await session(page))?.accessToken ?? "";
  const answer = await page.evaluate(
    async ({ name, base64, token }) => {
      const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
      const form = new FormData();
      form.append("file", new File([bytes], name, { type: "image/png" }), name);
      const response = await fetch("/api/images/upload", { method: "POST", headers: { authorization: `Bearer ${token}` }, body: form });
      return { status: response.status, text: await response.text() };
    },
    { name, base64: gradientPng(width, height, seed).toString("base64"), token },
  );
  return body(answer, 201) as Image;
}

export async function startJob(page: Page, imageId: string, workflowId: string, parameters: Record<string, unknown> = {}): Promise<string> {
  const answer = await api(page, "/api/processing/start", { method: "POST", json: { image_id: imageId, workflow_id: workflowId, parameters } });
  return (body(answer, 202) as { job_id: string }).job_id;
}

const FINAL = ["completed", "failed", "cancelled"];

/** Polls the job's status until it is final; resolves with the job. */
export async function finished(page: Page, jobId: string, timeoutMs = 60_000): Promise<Job> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = body(await api(page, `/api/processing/${jobId}/status`)) as Job;
    if (FINAL.includes(job.status)) return job;
    if (Date.now() > deadline) throw new Error(`job ${jobId} still ${job.status}`);
    await page.waitForTimeout(200);
  }
}

/** Watches the job status on the page; resolves with every status seen once it is final. */
export async function statusesUntilDone(page: Page, timeoutMs = 60_000): Promise<string[]> {
  const seen: string[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await page
      .getByTestId("job-status")
      .getAttribute("data-status")
      .catch(() => null);
    if (status && seen.at(-1) !== status) seen.push(status);
    if (status && FINAL.includes(status)) return seen;
    if (Date.now() > deadline) throw new Error(`job not finished; statuses seen: ${seen.join(", ")}`);
    await page.waitForTimeout(50);
  }
}

/** Whether every image the selector matches has loaded with real pixels (at least one). */
export async function imagesLoaded(page: Page, selector: string): Promise<void> {
  await page.waitForFunction((sel) => {
    const imgs = [...document.querySelectorAll<HTMLImageElement>(sel)];
    return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0);
  }, selector);
}
