// The studio side: picking any image (paged, searched, filtered), "use as input", the phone
// layout, dark switches, sign-in errors, parameter help, estimates, "show code" run for real,
// example images, and the batch page (live over WebSocket, cancel, ZIP download).
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import type { Page } from "@playwright/test";
import { gradientPng } from "./png";
import {
  api,
  axe,
  body,
  expect,
  expectNoProblems,
  finished,
  register,
  session,
  shot,
  startJob,
  test,
  upload,
  uploadImage,
  uploadPng,
  type Batch,
  type Image,
  type Job,
  type Workflow,
} from "./fixtures";

const run = promisify(execFile);
const DESKTOP = { viewport: { width: 1280, height: 900 } };

/** Uploads through the API from the page (many images quickly); resolves with their ids in order. */
async function uploadMany(page: Page, names: string[]): Promise<string[]> {
  const ids: string[] = [];
  for (const [index, name] of names.entries()) ids.push((await uploadPng(page, name, 48, 32, index + 10)).id);
  return ids;
}

async function completed(page: Page, jobId: string): Promise<Job> {
  const job = await finished(page, jobId);
  expect(job.status, `job ${jobId}`).toBe("completed");
  return job;
}

const grid = (page: Page) => page.getByTestId("image-grid");
const pick = (page: Page, name: string) => grid(page).locator("label", { hasText: name });
const gridNames = (page: Page) => grid(page).locator("li").allInnerTexts();
const gridSize = (page: Page, size: number) => page.waitForFunction((n) => document.querySelectorAll("[data-testid=image-grid] li").length === n, size);

/** The theme follows the system's by default: switch it the way the device would. */
async function setTheme(page: Page, theme: "light" | "dark") {
  await page.emulateMedia({ colorScheme: theme });
  await page.waitForFunction((dark) => document.documentElement.classList.contains("dark") === dark, theme === "dark");
  // Let colour transitions (150 ms) finish, or axe measures contrast halfway between themes.
  await page.waitForTimeout(400);
}

test("studio: every image can be picked (paged, searched, filtered) and a batch runs on exactly the selection", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  // More images than one page, then a result newer than all of them.
  const names = Array.from({ length: 27 }, (_, i) => `pic-${String(i + 1).padStart(2, "0")}.png`);
  const ids = await uploadMany(page, names);
  const job = await completed(page, await startJob(page, ids[26] ?? "", "canny-edges"));
  const resultId = job.result_image_id;
  expect(typeof resultId, "the job's result image").toBe("string");
  await page.reload();
  await page.getByRole("heading", { name: "Your images" }).waitFor();
  await grid(page).locator("li").nth(23).waitFor();
  let shown = await gridNames(page);
  expect(shown, "the first page").toHaveLength(24);
  expect(shown.some((text) => text.includes("pic-01.png")), "the oldest upload is on the first page").toBe(false);
  // The oldest upload is one "load more" away (it used to be out of reach).
  await page.getByRole("button", { name: "Load more images" }).click();
  await pick(page, "pic-01.png").waitFor();
  shown = await gridNames(page);
  expect(shown, "all pages: 27 uploads and 1 result").toHaveLength(28);
  await page.getByRole("button", { name: "Load more images" }).waitFor({ state: "detached" });
  await pick(page, "pic-01.png").click();
  await page.getByTestId("selected-count").filter({ hasText: "1 selected" }).waitFor();

  // Search by file name, server-side: it finds an old upload that is not loaded yet in a fresh list.
  await page.getByLabel("Search images by file name").fill("pic-02");
  await gridSize(page, 1);
  expect((await gridNames(page))[0], "search for pic-02").toContain("pic-02.png");
  await pick(page, "pic-02.png").click();
  await page.getByTestId("selected-count").filter({ hasText: "2 selected" }).waitFor();
  await page.getByLabel("Search images by file name").fill("no-such-name");
  await page.getByText("No images named like “no-such-name”.").waitFor();
  await page.getByLabel("Search images by file name").fill("");

  // Results only, then uploads only.
  await page.getByRole("radio", { name: "Results" }).click();
  await gridSize(page, 1);
  expect(await grid(page).locator("[data-testid=pick]").first().getAttribute("data-image-id"), "the results filter shows the result").toBe(resultId);
  await page.getByRole("radio", { name: "Uploads" }).click();
  await gridSize(page, 24);
  expect((await gridNames(page)).some((text) => text.includes("Result")), "the uploads filter shows a result").toBe(false);
  await axe(page, "studio picker");
  await shot(page, "studio-picker");

  // The selection held across pages, searches and filters: the batch runs on both, no more, no fewer.
  await page.getByTestId("selected-count").filter({ hasText: "2 selected" }).waitFor();
  await page.getByRole("radio", { name: /Edge map/ }).check();
  const started = page.waitForResponse((r) => r.url().endsWith("/api/processing/batch") && r.request().method() === "POST");
  await page.getByRole("button", { name: "Start batch of 2" }).click();
  const sent = JSON.parse((await started).request().postData() ?? "{}") as { image_ids?: string[] };
  expect([...(sent.image_ids ?? [])].sort(), "the batch's images").toEqual([ids[0], ids[1]].sort());
  await page.waitForURL("**/batches/*");
  const batchId = page.url().split("/").pop() ?? "";
  const batch = body(await api(page, `/api/processing/batch/${batchId}`)) as Batch;
  expect(batch.total, "the batch's jobs").toBe(2);
  await page.locator('[data-testid=batch-job][data-status="completed"]').nth(1).waitFor({ timeout: 60_000 });

  // "Use as input": any image, a result included, arrives preselected.
  await page.goto(`/?image=${resultId ?? ""}`);
  await page.locator(`[data-testid=stage-image][data-image-id="${resultId ?? ""}"]`).waitFor();
  await page.getByTestId("selected-count").filter({ hasText: "1 selected" }).waitFor();
  await page.waitForFunction(() => {
    const img = document.querySelector("[data-testid=stage-image]");
    return img instanceof HTMLImageElement && img.complete && img.naturalWidth > 0;
  });
  await page.getByRole("button", { name: "Start", exact: true }).waitFor();
  await shot(page, "studio-use-as-input");
  // An id that is not one of the user's images says so and selects nothing.
  await page.goto("/?image=00000000-0000-0000-0000-000000000000");
  await page.getByRole("alert").filter({ hasText: "not in your library" }).waitFor();
  await page.getByTestId("selected-count").filter({ hasText: "0 selected" }).waitFor();
  expectNoProblems(page);
});

test("studio: another user's image is not found through ?image=", async ({ newPage }) => {
  const owner = await newPage();
  await register(owner.page);
  const [theirs] = await uploadMany(owner.page, ["private.png"]);
  await owner.context.close();
  const { page } = await newPage();
  await register(page);
  await page.goto(`/?image=${theirs ?? ""}`);
  await page.getByRole("alert").filter({ hasText: "not in your library" }).waitFor();
  expect(await page.getByTestId("stage-image").count(), "another user's image is shown").toBe(0);
});

for (const theme of ["light", "dark"] as const) {
  test(`phone (${theme}): one-row nav, Start always on screen`, async ({ newPage }) => {
    const { page } = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    await register(page);
    if (theme === "dark") await setTheme(page, "dark");
    await uploadImage(page, "phone-pick.png", 7);
    await page.getByRole("radio", { name: /ESRGAN upscaler/ }).check();
    const nav = page.getByRole("navigation", { name: "Main" });
    const links = await nav.getByRole("link").all();
    expect(links.length, "the nav's links").toBeGreaterThanOrEqual(3);
    const boxes = await Promise.all(links.map((link) => link.boundingBox()));
    const rows = new Set(boxes.map((box) => Math.round(box?.y ?? -1)));
    expect(rows.size, "the rows the nav wraps onto").toBe(1);
    expect(
      boxes.every((box) => box && box.y >= 0 && box.y + box.height <= 844 && box.x >= 0 && box.x + box.width <= 390),
      `a nav link is off screen: ${JSON.stringify(boxes)}`,
    ).toBe(true);
    const header = await page.locator("header").boundingBox();
    expect(header?.height ?? Infinity, "the header's height").toBeLessThanOrEqual(64);
    const start = page.getByRole("button", { name: "Start", exact: true });
    for (const where of ["top", "bottom"] as const) {
      await page.evaluate((where) => window.scrollTo(0, where === "top" ? 0 : document.body.scrollHeight), where);
      await page.waitForTimeout(100);
      const box = await start.boundingBox();
      expect(box !== null && box.y >= 0 && box.y + box.height <= 844, `Start is off screen at the ${where} (${JSON.stringify(box)})`).toBe(true);
      if (!box) continue;
      const hit = await page.evaluate(({ x, y }) => document.elementFromPoint(x, y)?.closest("button")?.textContent, { x: box.x + box.width / 2, y: box.y + box.height / 2 });
      expect(hit, `what covers Start at the ${where}`).toBe("Start");
    }
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow, "how much wider than the phone the studio is").toBeLessThanOrEqual(0);
    await page.evaluate(() => window.scrollTo(0, 0));
    await axe(page, `phone studio, ${theme}`);
    await shot(page, `studio-phone-${theme}`, { fullPage: false });
    await shot(page, `studio-phone-${theme}-full`);
    await page.getByRole("link", { name: "History" }).click();
    await page.getByRole("heading", { name: "History" }).waitFor();
    await axe(page, `phone history, ${theme}`);
    expectNoProblems(page);
  });
}

test('dark theme: an "on" switch keeps its colour; sign-in errors stay on the sign-in page', async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  // A failed sign-in, then "Create an account": the error does not follow.
  await page.goto("/login");
  await page.getByLabel("Email").fill("nobody@example.com");
  await page.getByLabel("Password", { exact: true }).fill("not the password at all");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: /invalid email or password/i }).waitFor();
  await page.getByRole("link", { name: "Create an account" }).click();
  await page.getByRole("heading", { name: "Create your account" }).waitFor();
  expect(await page.getByRole("alert").count(), "the sign-in error followed to the register page").toBe(0);
  await page.getByRole("link", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  expect(await page.getByRole("alert").count(), "the old error came back on the sign-in page").toBe(0);

  await register(page);
  const colours = async () => {
    await page.getByRole("radio", { name: /Background removal \(rembg\)/ }).check();
    const toggle = page.getByRole("switch").first();
    // The colour once its transition has ended: the same in two reads 150 ms apart.
    const settled = async (checked: boolean) => {
      await page.waitForFunction((want) => document.querySelector("[role=switch]")?.getAttribute("aria-checked") === want, String(checked));
      let last: string | null = null;
      for (;;) {
        const now = await toggle.evaluate((el) => getComputedStyle(el).backgroundColor);
        if (now === last) return now;
        last = now;
        await page.waitForTimeout(150);
      }
    };
    if ((await toggle.getAttribute("aria-checked")) === "true") await toggle.click();
    const off = await settled(false);
    await toggle.click();
    const on = await settled(true);
    return { off, on };
  };
  const light = await colours();
  expect(light.on, "light: on and off look the same").not.toBe(light.off);
  await setTheme(page, "dark");
  const dark = await colours();
  expect(dark.on, "dark: on and off look the same").not.toBe(dark.off);
  // "On" is the brand colour in both themes (indigo: more blue than red or green).
  for (const [name, colour] of Object.entries({ light: light.on, dark: dark.on })) {
    const [r = 0, g = 0, b = 0] = (colour.match(/\d+/g) ?? []).map(Number);
    expect(b > r + 60 && b > g + 60, `${name}: the on colour ${colour} is not the brand colour`).toBe(true);
  }
  await axe(page, "studio with a switch on, dark");
  await shot(page, "studio-dark-switch");
  expectNoProblems(page);
});

interface ParameterSchema {
  title?: unknown;
  description?: unknown;
  minimum?: number;
  maximum?: number;
  anyOf?: { minimum?: number; maximum?: number }[];
}

test("parameter help: every parameter shows its title and description, ranges their limits", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  const catalogue = (body(await api(page, "/api/workflows")) as { workflows: Workflow[] }).workflows;
  let checked = 0;
  for (const workflow of catalogue) {
    await page.getByRole("radio", { name: new RegExp(workflow.name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")) }).check();
    await page.getByRole("heading", { name: `Parameters: ${workflow.name}` }).waitFor();
    const properties = (workflow.parameters_schema as { properties?: Record<string, ParameterSchema> }).properties ?? {};
    for (const [name, schema] of Object.entries(properties)) {
      expect(typeof schema.title === "string" && schema.title.length > 0, `${workflow.id}.${name} has no title`).toBe(true);
      expect(typeof schema.description === "string" && schema.description.length > 0, `${workflow.id}.${name} has no description`).toBe(true);
      const field = page.locator(`[data-field="${name}"]`);
      const label = (await field.locator("label").first().innerText()).replace(/\s*\*$/, "");
      expect(label, `${workflow.id}.${name}'s label`).toBe(schema.title);
      const described = await field
        .locator("[aria-describedby]")
        .first()
        .evaluate((el) =>
          (el.getAttribute("aria-describedby") ?? "")
            .split(" ")
            .map((id) => document.getElementById(id)?.textContent ?? "")
            .join(" "),
        );
      expect(described, `${workflow.id}.${name}: described by its description`).toContain(String(schema.description));
      const min = schema.minimum ?? schema.anyOf?.find((s) => s.minimum !== undefined)?.minimum;
      const max = schema.maximum ?? schema.anyOf?.find((s) => s.maximum !== undefined)?.maximum;
      if (min !== undefined && max !== undefined) expect(described, `${workflow.id}.${name}: the range shown`).toContain(`${min} – ${max}`);
      checked++;
    }
  }
  expect(checked, "parameters checked").toBeGreaterThan(10);
  await page.getByRole("radio", { name: /ESRGAN upscaler/ }).check();
  await axe(page, "studio parameters with help");
  await shot(page, "studio-parameter-help");
});

test("before starting: output size and cost per job and for the batch, following the parameters; too large is refused with the reason", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  await uploadImage(page, "small.png", 40);
  await page.getByRole("radio", { name: /ESRGAN upscaler/ }).check();
  const scale = page.getByRole("spinbutton", { name: "Scale" });
  await scale.fill("2");
  await page.getByTestId("estimate-resolution").filter({ hasText: "192×128" }).waitFor();
  // Debounced: a burst of edits asks once for the last value.
  let asked = 0;
  page.on("request", (r) => {
    if (r.url().includes("/estimate")) asked++;
  });
  await scale.fill("3");
  await scale.fill("4");
  await page.getByTestId("estimate-resolution").filter({ hasText: "384×256" }).waitFor();
  expect(asked, "estimates asked for one burst of edits").toBe(1);
  const priced = await api(page, "/api/workflows/esrgan-upscale/estimate", {
    method: "POST",
    json: { image_ids: [await page.getByTestId("stage-image").getAttribute("data-image-id")], parameters: { scale: 4 } },
  });
  const total = (body(priced) as { total_cost?: unknown }).total_cost;
  if (total != null) await page.getByTestId("estimate-cost").filter({ hasText: /\$\d/ }).waitFor();
  // A workflow priced per image shows its cost.
  await page.getByRole("radio", { name: /Background removal \(rembg\)/ }).check();
  await page.getByTestId("estimate-cost").filter({ hasText: /^\$\d/ }).waitFor();
  await page.getByRole("radio", { name: /ESRGAN upscaler/ }).check();
  await scale.fill("4");
  await axe(page, "studio with an estimate");
  await shot(page, "studio-estimate");

  // A batch: per job and in total.
  await uploadImage(page, "second.png", 41);
  await page.getByTestId("selected-count").filter({ hasText: "2 selected" }).waitFor();
  await page.getByTestId("estimate").getByText("2 jobs").waitFor();
  await page.getByTestId("estimate").locator("summary").click();
  await page.getByTestId("estimate-job").nth(1).waitFor();
  if (total != null) await page.getByTestId("estimate").getByText("for the batch").waitFor();

  // Too large for the platform: the reason, and no Start.
  await page.getByRole("button", { name: "Clear selection" }).click();
  const big = page.waitForResponse((r) => r.url().endsWith("/api/images/upload"));
  await upload(page, "big.png", gradientPng(2000, 1500, 42));
  expect((await big).status(), "the big upload").toBe(201);
  await scale.fill("8");
  const reason = page.getByTestId("estimate-refusal");
  await reason.waitFor();
  expect((await reason.innerText()).length, "the refusal's reason").toBeGreaterThan(10);
  expect(await page.getByRole("button", { name: "Start", exact: true }).isDisabled(), "Start is enabled for a refused estimate").toBe(true);
  await scale.fill("2");
  await reason.waitFor({ state: "detached" });
  expect(await page.getByRole("button", { name: "Start", exact: true }).isDisabled(), "Start stays disabled").toBe(false);
  expectNoProblems(page);
});

test("show code: the cURL snippet, run for real with the user's token, starts the same job", async ({ newPage, server }) => {
  const { context, page } = await newPage(DESKTOP);
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.base });
  await register(page);
  const imageId = await uploadImage(page, "for-code.png", 8);
  await page.getByRole("radio", { name: /Edge map/ }).check();
  await page.getByRole("spinbutton", { name: "Low threshold" }).fill("40");
  await page.getByRole("button", { name: "Show code" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByRole("heading", { name: "Run this from code" }).waitFor();
  const curl = await dialog.getByTestId("snippet-curl").innerText();
  const token = (await session(page))?.accessToken ?? "";
  expect(token, "the session's access token").not.toBe("");
  expect(curl, "the snippet embeds the access token").not.toContain(token);
  for (const part of ["$ATELIER_TOKEN", imageId, '"low_threshold": 40']) expect(curl, "the cURL snippet").toContain(part);
  await dialog.getByRole("button", { name: "Copy cURL" }).click();
  await dialog.getByRole("button", { name: "Copied" }).waitFor();
  expect(await page.evaluate(() => navigator.clipboard.readText()), "the copied text").toBe(curl);
  await axe(page, "show code dialog");
  await shot(page, "show-code");
  await setTheme(page, "dark");
  await axe(page, "show code dialog, dark");
  await shot(page, "show-code-dark");
  await setTheme(page, "light");
  for (const [tab, needle] of [
    ["Python", "requests.post("],
    ["TypeScript", "await fetch("],
  ] as const) {
    await dialog.getByRole("tab", { name: tab }).click();
    const text = await dialog.getByTestId(`snippet-${tab.toLowerCase()}`).innerText();
    expect(text, `the ${tab} snippet`).toContain(needle);
    expect(text, `the ${tab} snippet`).toContain(imageId);
    expect(text, `the ${tab} snippet embeds the access token`).not.toContain(token);
  }
  await dialog.getByRole("button", { name: "Close" }).click();

  // Run it as a user would, in a shell, with the token in the environment.
  const { stdout } = await run("bash", ["-c", curl], { env: { ...process.env, ATELIER_TOKEN: token }, timeout: 30_000 });
  const answer = JSON.parse(stdout) as { job_id?: unknown };
  expect(typeof answer.job_id, `curl answered ${stdout}`).toBe("string");
  const job = await completed(page, String(answer.job_id));
  expect(job, "the job the snippet started").toMatchObject({ image_id: imageId, workflow_id: "canny-edges", parameters: { low_threshold: 40 } });
  expectNoProblems(page);
});

test("examples: one click adds an example image through the upload API", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  for (const [label, mime, width] of [
    ["Apple cut-out", "image/png", 512],
    ["Mountain lake", "image/jpeg", 768],
  ] as const) {
    const uploaded = page.waitForResponse((r) => r.url().endsWith("/api/images/upload"));
    await page.getByRole("button", { name: `Use the example ${label}` }).click();
    const response = await uploaded;
    expect(response.status(), "the example's upload").toBe(201);
    const image = (await response.json()) as Image;
    expect([image.mime_type, image.width], `example ${label} as stored`).toEqual([mime, width]);
    await page.locator(`[data-testid=stage-image][data-image-id="${image.id}"]`).waitFor();
  }
  await page.getByTestId("selected-count").filter({ hasText: "2 selected" }).waitFor();
  await page.getByRole("radio", { name: /Background removal \(rembg\)/ }).check();
  await axe(page, "studio with examples");
  await shot(page, "studio-examples");
  expectNoProblems(page);
});

/** ZIP central directory headers: one per file. */
function countEntries(zip: Buffer): number {
  let entries = 0;
  for (let at = zip.indexOf("PK\u0001\u0002", 0, "latin1"); at !== -1; at = zip.indexOf("PK\u0001\u0002", at + 4, "latin1")) entries++;
  return entries;
}

interface Saved {
  bytes: number[];
  closed: boolean;
  name: string | null;
}

test("batch: thumbnails, live status over one WebSocket, cancel one job, download all as a ZIP", async ({ newPage, server }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  for (const [i, name] of ["one.png", "two.png", "three.png"].entries()) await uploadImage(page, name, 20 + i);
  await page.getByTestId("selected-count").filter({ hasText: "3 selected" }).waitFor();
  await page.getByRole("radio", { name: /Edge map/ }).check();
  const sockets: string[] = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  let polls = 0;
  page.on("request", (r) => {
    if (r.url().includes("/api/processing/batch/") && r.method() === "GET") polls++;
  });
  await server.knobs({ processing_time_ms: 4000, queue_delay_ms: 300 });
  try {
    await page.getByRole("button", { name: "Start batch of 3" }).click();
    await page.waitForURL("**/batches/*");
    const cards = page.getByTestId("batch-job");
    await cards.nth(2).waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll<HTMLImageElement>("[data-testid=batch-job] img")].filter((img) => img.complete && img.naturalWidth > 0).length === 3);
    await page.getByText("Live", { exact: true }).waitFor();
    await axe(page, "batch running");
    await shot(page, "batch-running");
    // Cancel the one job still waiting for a slot (two run at a time); the others go on.
    const waiting = page.locator('[data-testid=batch-job][data-status="queued"], [data-testid=batch-job][data-status="pending"]').first();
    await waiting.waitFor();
    const name = (await waiting.getByRole("link").innerText()).trim();
    await waiting.getByRole("button", { name: /Cancel/ }).click();
    await page.locator('[data-testid=batch-job][data-status="cancelled"]').filter({ hasText: name }).waitFor();
    await page.locator('[data-testid=batch-job][data-status="completed"]').nth(1).waitFor({ timeout: 60_000 });
  } finally {
    await server.knobs({});
  }
  await page.getByTestId("batch-tally").filter({ hasText: "2 completed, 0 failed, 1 cancelled" }).waitFor();
  expect(sockets.length, "websockets opened").toBeGreaterThanOrEqual(1);
  expect(sockets.every((url) => url.includes("/api/ws")), `websockets: ${sockets.join(", ")}`).toBe(true);
  expect(polls, "times the batch was polled").toBeLessThanOrEqual(6);
  // Finished jobs show their result's thumbnail.
  await page.locator('[data-testid=batch-job][data-status="completed"]').first().getByText("Result").waitFor();
  const batchId = page.url().split("/").pop() ?? "";
  const cost = (body(await api(page, `/api/processing/batch/${batchId}`)) as Batch).estimated_cost;
  if (cost) await page.getByTestId("batch-cost").filter({ hasText: /\$\d/ }).waitFor();
  // "Download all": streamed into the file the user picks where the browser can (the picker is
  // stubbed here: a headless browser has no dialog to answer), else saved from a Blob.
  await page.evaluate(() => {
    const w = window as unknown as { __saved: Saved; showSaveFilePicker: (options: { suggestedName: string }) => Promise<unknown> };
    w.__saved = { bytes: [], closed: false, name: null };
    w.showSaveFilePicker = (options) => {
      w.__saved.name = options.suggestedName;
      return Promise.resolve({
        createWritable: () =>
          Promise.resolve(
            new WritableStream<Uint8Array>({
              write(chunk) {
                for (const byte of chunk) w.__saved.bytes.push(byte);
              },
              close() {
                w.__saved.closed = true;
              },
            }),
          ),
      });
    };
  });
  await page.getByRole("button", { name: "Download all" }).click();
  await page.waitForFunction(() => (window as unknown as { __saved: Saved }).__saved.closed);
  const streamed = Buffer.from(await page.evaluate(() => (window as unknown as { __saved: Saved }).__saved.bytes));
  expect(streamed.subarray(0, 4).toString("hex"), "the streamed download is a ZIP").toBe("504b0304");
  expect(countEntries(streamed), "files in the streamed ZIP: the 2 results").toBe(2);
  await page.evaluate(() => {
    (window as unknown as { showSaveFilePicker?: unknown }).showSaveFilePicker = undefined;
  });
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download all" }).click()]);
  const saved = test.info().outputPath("batch.zip");
  await download.saveAs(saved);
  const zip = await readFile(saved);
  expect(zip.subarray(0, 4).toString("hex"), "the saved download is a ZIP").toBe("504b0304");
  expect(countEntries(zip), "files in the saved ZIP").toBe(2);
  expect(download.suggestedFilename(), "the saved download's name").toMatch(/\.zip$/);
  await axe(page, "batch finished");
  await shot(page, "batch-finished");
  await setTheme(page, "dark");
  await page.getByTestId("batch-job").nth(2).waitFor();
  await axe(page, "batch finished, dark");
  await shot(page, "batch-finished-dark");
  expectNoProblems(page);
});

test("batch: cancel the whole batch", async ({ newPage, server }) => {
  const { page } = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await register(page);
  await uploadImage(page, "a.png", 30);
  await uploadImage(page, "b.png", 31);
  await page.getByRole("radio", { name: /Background removal \(rembg\)/ }).check();
  await server.knobs({ hang: true });
  try {
    await page.getByRole("button", { name: "Start batch of 2" }).click();
    await page.waitForURL("**/batches/*");
    await page.getByTestId("batch-job").nth(1).waitFor();
    await axe(page, "phone batch running");
    await setTheme(page, "dark");
    await axe(page, "phone batch running, dark");
    await setTheme(page, "light");
    await page.getByRole("button", { name: "Cancel batch" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByRole("button", { name: "Keep running" }).waitFor();
    await dialog.getByRole("button", { name: "Cancel batch" }).click();
    await page.locator('[data-testid=batch-job][data-status="cancelled"]').nth(1).waitFor();
    await page.getByTestId("batch-tally").filter({ hasText: "0 completed, 0 failed, 2 cancelled" }).waitFor();
    await shot(page, "batch-cancelled-phone");
  } finally {
    await server.knobs({});
  }
  expectNoProblems(page);
});
