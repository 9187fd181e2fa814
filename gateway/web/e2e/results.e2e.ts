// The results side: the job page (live progress and logs, errors, the outputs grid, downloads,
// the compare view), history (search, empty results, dates, no duplicates) and the library.
import { readFile } from "node:fs/promises";
import type { Download, Page } from "@playwright/test";
import {
  api,
  axe,
  body,
  expect,
  expectNoProblems,
  finished,
  imagesLoaded,
  register,
  shot,
  signIn,
  startJob,
  test,
  uploadPng,
  type Job,
} from "./fixtures";

const DESKTOP = { viewport: { width: 1280, height: 900 } };
const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };

const jobStatus = async (page: Page, jobId: string, query = "") => body(await api(page, `/api/processing/${jobId}/status${query}`)) as Job;

interface Box {
  left: number;
  top: number;
  right: number;
  bottom: number;
  width: number;
  height: number;
}

interface Measured {
  box: Box;
  frame: Box;
  natural: { width: number; height: number };
  screen: { width: number; height: number };
}

/** The rendered box of the compare view's result against the screen and its own pixels. */
async function resultBox(page: Page): Promise<Measured> {
  await imagesLoaded(page, "[data-testid=compare-after]");
  await page.waitForFunction(() => document.querySelector<HTMLElement>("[data-testid=compare-stage]")?.style.visibility !== "hidden");
  // Scrolled to once laid out: scrolled to earlier, it may grow past the screen's bottom.
  await page.getByTestId("compare").scrollIntoViewIfNeeded();
  return page.evaluate(() => {
    const img = document.querySelector<HTMLImageElement>("[data-testid=compare-after]");
    const viewer = document.querySelector("[data-testid=compare]");
    if (!img || !viewer) throw new Error("no compare view");
    const rect = (r: DOMRect) => ({ left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height });
    return {
      box: rect(img.getBoundingClientRect()),
      frame: rect(viewer.getBoundingClientRect()),
      natural: { width: img.naturalWidth, height: img.naturalHeight },
      screen: { width: window.innerWidth, height: window.innerHeight },
    };
  });
}

function expectWhole(m: Measured, label: string) {
  const inside = (b: Box, f: Pick<Box, "left" | "top" | "right" | "bottom">) => b.left >= f.left - 0.5 && b.top >= f.top - 0.5 && b.right <= f.right + 0.5 && b.bottom <= f.bottom + 0.5;
  expect(inside(m.box, m.frame), `${label}: the result ${JSON.stringify(m.box)} is cut by the viewer ${JSON.stringify(m.frame)}`).toBe(true);
  expect(
    inside(m.box, { left: 0, top: 0, right: m.screen.width, bottom: m.screen.height }),
    `${label}: the result ${JSON.stringify(m.box)} is not all on the ${m.screen.width}×${m.screen.height} screen`,
  ).toBe(true);
  expect(
    m.box.width <= m.natural.width + 0.5 && m.box.height <= m.natural.height + 0.5,
    `${label}: ${m.natural.width}×${m.natural.height} enlarged to ${m.box.width}×${m.box.height}`,
  ).toBe(true);
}

/** Zip entries' names, from the central directory. */
function zipNames(bytes: Buffer): string[] {
  const names: string[] = [];
  for (let i = 0; i + 46 <= bytes.length; i++) {
    if (bytes.readUInt32LE(i) !== 0x02014b50) continue;
    const length = bytes.readUInt16LE(i + 28);
    names.push(bytes.subarray(i + 46, i + 46 + length).toString("utf8"));
    i += 45 + length;
  }
  return names;
}

async function save(download: Download, name: string): Promise<Buffer> {
  const path = test.info().outputPath(name);
  await download.saveAs(path);
  return readFile(path);
}

async function dark(page: Page) {
  await page.evaluate(() => document.documentElement.classList.add("dark"));
}

/** Waits until the library shows exactly `count` items. */
const libraryCount = (page: Page, count: number) => page.waitForFunction((n) => document.querySelectorAll("[data-testid=library-item]").length === n, count);

test("results: compare view fits portrait, tiny and 4× images, then zooms and pans", async ({ newPage }) => {
  for (const [device, options] of [
    ["desktop", DESKTOP],
    ["phone", PHONE],
  ] as const) {
    const { context, page } = await newPage(options);
    await register(page);
    const portrait = await uploadPng(page, "portrait.png", 300, 1200, 2);
    const tiny = await uploadPng(page, "tiny.png", 24, 16, 3);
    const wide = await uploadPng(page, "wide.png", 400, 300, 4);
    const jobs = {
      portrait: await startJob(page, portrait.id, "canny-edges"),
      tiny: await startJob(page, tiny.id, "canny-edges"),
      "4×": await startJob(page, wide.id, "esrgan-upscale", { scale: 4, model: "RealESRGAN_x4plus" }),
    };
    for (const [label, jobId] of Object.entries(jobs)) {
      const job = await finished(page, jobId);
      expect(job.status, `${label} job: ${JSON.stringify(job.error)}`).toBe("completed");
      await page.goto(`/jobs/${jobId}`);
      const m = await resultBox(page);
      expectWhole(m, `${device} ${label}`);
      if (label === "tiny") expect([Math.round(m.box.width), Math.round(m.box.height)], "tiny shown at").toEqual([24, 16]);
      if (label === "4×") expect(m.natural, "the 4× result's size").toEqual({ width: 1600, height: 1200 });
      await shot(page, `results-fit-${label === "4×" ? "4x" : label}-${device}`);
    }
    // Zoom and pan the 4× result: buttons, keyboard, "fit" back.
    const before = await resultBox(page);
    await page.getByRole("button", { name: "Zoom in" }).click();
    await page.getByRole("button", { name: "Zoom in" }).click();
    const zoomed = await resultBox(page);
    expect(zoomed.box.width, `zoom in from ${before.box.width}`).toBeGreaterThan(before.box.width * 2);
    await page.getByTestId("compare").focus();
    await page.keyboard.press("ArrowRight");
    const panned = await resultBox(page);
    expect(panned.box.left, "the left edge after the arrow key pans").toBeLessThan(zoomed.box.left);
    // Dragging pans too.
    const frame = panned.frame;
    await page.mouse.move(frame.left + 100, frame.top + 100);
    await page.mouse.down();
    await page.mouse.move(frame.left + 160, frame.top + 140, { steps: 4 });
    await page.mouse.up();
    const dragged = await resultBox(page);
    expect(dragged.box.left, "the left edge after a drag pans").toBeGreaterThan(panned.box.left);
    await page.keyboard.press("0");
    await page.getByTestId("zoom-level").filter({ hasText: /^Fit/ }).waitFor();
    expectWhole(await resultBox(page), `${device} 4× after fit`);
    if (device === "desktop") {
      // The wheel zooms around the pointer.
      await page.mouse.move(frame.left + 200, frame.top + 150);
      await page.mouse.wheel(0, -400);
      await page.getByTestId("zoom-level").filter({ hasText: /^\d+%$/ }).waitFor();
      await page.getByRole("button", { name: "Fit" }).click();
      await page.getByTestId("zoom-level").filter({ hasText: /^Fit/ }).waitFor();
    }
    await axe(page, `${device} job result`);
    await dark(page);
    await axe(page, `${device} job result, dark`);
    await shot(page, `results-fit-4x-${device}-dark`);
    expectNoProblems(page);
    await context.close();
  }
});

test("results: a transparent result shows a checkerboard, not the original under it", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  const image = await uploadPng(page, "subject.png", 320, 240, 5);
  const jobId = await startJob(page, image.id, "rembg-background-removal");
  await finished(page, jobId);
  await page.goto(`/jobs/${jobId}`);
  await resultBox(page);
  // Over the result's side of the divider, what is under the result is the checkerboard layer,
  // which is opaque: the original cannot show through transparent pixels.
  const under = await page.evaluate(() => {
    const layer = document.querySelector("[data-testid=compare-after-layer]");
    if (!layer) throw new Error("no result layer");
    const rect = layer.getBoundingClientRect();
    const x = rect.left + rect.width * 0.8;
    const y = rect.top + rect.height / 2;
    const stack = document
      .elementsFromPoint(x, y)
      .map((el) => el.getAttribute("data-testid"))
      .filter((id): id is string => Boolean(id));
    return { stack, background: getComputedStyle(layer).backgroundImage };
  });
  expect(under.background, "the background behind the result").toMatch(/conic-gradient/);
  const after = under.stack.indexOf("compare-after");
  const layer = under.stack.indexOf("compare-after-layer");
  const original = under.stack.indexOf("compare-before");
  expect(after >= 0 && layer > after && original > layer, `stack at the result's side: ${under.stack.join(" > ")}`).toBe(true);
  await shot(page, "results-transparent");
  expectNoProblems(page);
});

test("results: queued shows the place in the queue, logs are never repeated, cancel dialog says what it does", async ({ newPage, server }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  const image = await uploadPng(page, "queued.png", 96, 64, 6);
  await server.knobs({ queue_delay_ms: 3000, processing_time_ms: 2500 });
  try {
    const jobId = await startJob(page, image.id, "esrgan-upscale", { scale: 2, model: "RealESRGAN_x2plus" });
    await page.goto(`/jobs/${jobId}`);
    // Waiting: no fraction is shown, the bar sweeps, the text says it waits.
    const waiting = page.locator('[data-testid=job-progress][data-phase="waiting"]');
    await waiting.waitFor();
    const bar = await page.evaluate(() => {
      const root = document.querySelector("[data-testid=job-progress] [role=progressbar]");
      const indicator = document.querySelector("[data-testid=job-progress-indicator]");
      if (!root || !indicator) throw new Error("no progress bar");
      return { now: root.getAttribute("aria-valuenow"), text: root.getAttribute("aria-valuetext"), animation: getComputedStyle(indicator).animationName };
    });
    expect(bar.now, "the fraction a waiting job shows done").toBeNull();
    expect(bar.text ?? "", "progress text while waiting").toMatch(/Waiting/);
    expect(bar.animation, "the waiting bar's animation").toBe("job-progress-sweep");
    await axe(page, "job waiting in the queue");
    await shot(page, "results-queued");

    // The cancel dialog: "Keep running" leaves the job alone.
    await page.getByRole("button", { name: "Cancel job" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByRole("button", { name: "Keep running" }).waitFor();
    await dialog.getByRole("button", { name: "Cancel job" }).waitFor();
    expect(await dialog.getByRole("button", { name: "Cancel", exact: true }).count(), "buttons that read just Cancel").toBe(0);
    await axe(page, "cancel dialog");
    await dialog.getByRole("button", { name: "Keep running" }).click();
    await dialog.waitFor({ state: "detached" });

    // Logs while running, then at the end: no line twice, and the count does not change when
    // the job completes or the page is read again.
    let lastLive: string[] | null = null;
    let sawRunning = false;
    const deadline = Date.now() + 60_000;
    for (;;) {
      const state = await page.evaluate(() => ({
        status: document.querySelector("[data-testid=job-status]")?.getAttribute("data-status"),
        logs: document.querySelector("pre[aria-label='Job logs']")?.textContent ?? null,
        phase: document.querySelector("[data-testid=job-progress]")?.getAttribute("data-phase") ?? null,
        now: document.querySelector("[data-testid=job-progress] [role=progressbar]")?.getAttribute("aria-valuenow") ?? null,
      }));
      if (state.status === "completed") break;
      if (state.status === "processing") {
        // Running: fal reports no fraction here, so the bar is indeterminate, never a made-up one.
        expect({ phase: state.phase, now: state.now }, "the progress bar while processing").toEqual({ phase: "running", now: null });
        sawRunning = true;
      }
      if (state.logs !== null) lastLive = state.logs.split("\n");
      expect(Date.now() < deadline, "the job did not complete").toBe(true);
      await page.waitForTimeout(50);
    }
    expect(sawRunning, "the job was never seen processing").toBe(true);
    const summary = page.locator("summary", { hasText: /^Logs \(\d+\)$/ });
    await summary.waitFor();
    await page.locator("summary", { hasText: /^Logs/ }).click();
    const finalLines = ((await page.locator("pre[aria-label='Job logs']").textContent()) ?? "").split("\n");
    const countAtEnd = Number(/\d+/.exec((await summary.textContent()) ?? "")?.[0]);
    expect(new Set(finalLines).size, `repeated log lines:\n${finalLines.join("\n")}`).toBe(finalLines.length);
    expect(countAtEnd, "the count the summary says").toBe(finalLines.length);
    expect(lastLive?.length ?? 0, "lines seen while the job ran").toBeGreaterThan(0);
    expect((lastLive ?? []).filter((line) => !finalLines.includes(line)), "lines seen live that are gone at the end").toEqual([]);
    const status = await jobStatus(page, jobId, "?include=logs");
    expect(status.logs.length, "the lines the status lists").toBe(countAtEnd);
    await page.reload();
    await page.locator('[data-testid=job-status][data-status="completed"]').waitFor();
    await page.locator("summary", { hasText: `Logs (${countAtEnd})` }).waitFor();
  } finally {
    await server.knobs({ queue_delay_ms: 0, processing_time_ms: 200 });
  }
  expectNoProblems(page);
});

test("results: job details are labelled; history search, empty results and dates", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  const image = await uploadPng(page, "sunflower-field.png", 96, 64, 7);
  const jobId = await startJob(page, image.id, "esrgan-upscale", { scale: 2, model: "RealESRGAN_x2plus", face: false });
  await finished(page, jobId);
  await page.goto(`/jobs/${jobId}`);
  const row = (label: string) => page.getByTestId("job-parameter").filter({ has: page.locator("dt", { hasText: new RegExp(`^${label}$`) }) });
  await row("Model").locator("dd", { hasText: /^RealESRGAN_x2plus$/ }).waitFor();
  await row("Enhance faces").locator("dd", { hasText: /^no$/ }).waitFor();
  await row("Scale").locator("dd", { hasText: /^2$/ }).waitFor();
  expect(await page.getByText(/"RealESRGAN_x2plus"|^face$/).count(), "raw parameter keys or JSON quotes shown").toBe(0);

  await page.getByRole("link", { name: "History" }).click();
  await page.getByTestId("history-item").first().waitFor();
  const search = page.getByLabel("Search");
  expect((await search.getAttribute("placeholder")) ?? "", "the search box says it searches file names").toMatch(/file name/i);
  await search.fill("sunflower");
  await page.getByRole("button", { name: "Apply filters" }).click();
  await page.getByTestId("history-item").filter({ hasText: "sunflower-field.png" }).waitFor();
  await search.fill("no-such-file-anywhere");
  await page.getByRole("button", { name: "Apply filters" }).click();
  await page.getByText("No jobs match these filters.").waitFor();
  expect(await page.getByText("No jobs yet").count(), "an empty search says No jobs yet").toBe(0);
  await axe(page, "history with no match");
  await page.getByRole("button", { name: "Clear filters" }).click();
  await page.getByTestId("history-item").first().waitFor();
  expect(await search.inputValue(), "the search text after clearing").toBe("");

  // A From date after the To date is refused where it is typed, and nothing is asked.
  let asked = 0;
  page.on("request", (request) => {
    if (/\/api\/(users\/history|processing\/jobs)/.test(request.url())) asked++;
  });
  await page.getByLabel("From", { exact: true }).fill("2026-05-10");
  await page.getByLabel("To", { exact: true }).fill("2026-05-01");
  await page.getByRole("button", { name: "Apply filters" }).click();
  await page.getByRole("alert").filter({ hasText: "The From date is after the To date" }).waitFor();
  expect(await page.getByLabel("To", { exact: true }).getAttribute("aria-invalid"), "the dates are marked invalid").toBe("true");
  await page.waitForTimeout(300);
  expect(asked, "history requests sent for refused dates").toBe(0);
  await axe(page, "history with refused dates");
  await dark(page);
  await axe(page, "history with refused dates, dark");
  await shot(page, "results-history-dates");
  expectNoProblems(page);
});

test("results: history after signing in lists each job once, from one request per page", async ({ newPage }) => {
  // The service worker would answer before page.route could see the requests.
  const { page } = await newPage({ ...DESKTOP, serviceWorkers: "block" });
  const email = await register(page);
  const image = await uploadPng(page, "twice.png", 64, 48, 8);
  const ids = [await startJob(page, image.id, "canny-edges"), await startJob(page, image.id, "lineart")];
  for (const id of ids) await finished(page, id);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  // Slow history answers, so that requests made together are in flight together.
  const firstPages: string[] = [];
  const history = /\/api\/(users\/history|processing\/jobs)/;
  await page.route(history, async (route) => {
    if (!/page_token=/.test(route.request().url())) firstPages.push(route.request().url());
    await new Promise((r) => setTimeout(r, 600));
    await route.continue();
  });
  await page.goto("/history");
  await page.waitForURL("**/login");
  await signIn(page, email);
  await page.getByRole("heading", { name: "History" }).waitFor();
  await page.getByTestId("history-item").first().waitFor();
  await page.waitForTimeout(1500);
  const listed = await page
    .getByTestId("history-item")
    .locator("a[href^='/jobs/']")
    .evaluateAll((links) => links.map((a) => a.getAttribute("href")));
  expect(listed, "the jobs history lists").toHaveLength(2);
  expect(new Set(listed).size, `history lists ${listed.join(", ")}`).toBe(2);
  expect(firstPages, "requests for the first page").toHaveLength(1);
  await page.unroute(history);
  expectNoProblems(page);
});

test("results: the library pages through every image; lightbox, select, ZIP download, delete, use as input", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  // More than one page (48) of uploads, then one result.
  for (let i = 0; i < 50; i++) await uploadPng(page, `bulk-${String(i).padStart(2, "0")}.png`, 32, 24, i);
  const named = await uploadPng(page, "lighthouse.png", 160, 120, 60);
  const jobId = await startJob(page, named.id, "canny-edges");
  const job = await finished(page, jobId);
  expect(job.status, "the job").toBe("completed");
  await page.getByRole("link", { name: "Library" }).click();
  await page.getByRole("heading", { name: "Library" }).waitFor();
  const items = page.getByTestId("library-item");
  await items.first().waitFor();
  // Scrolling reaches every image: 51 uploads and the result.
  for (let i = 0; i < 20 && (await items.count()) < 52; i++) {
    await page.getByTestId("library-item").last().scrollIntoViewIfNeeded();
    await page.waitForTimeout(300);
  }
  expect(await items.count(), "the images the library shows").toBe(52);
  await page.evaluate(() => window.scrollTo(0, 0));

  await imagesLoaded(page, "[data-testid=library-item]:nth-child(-n+4) img");
  await axe(page, "library");
  await shot(page, "results-library");

  // The lightbox: size and dimensions, arrows, Escape, download under the image's own name.
  await items.first().getByRole("button").click();
  const lightbox = page.getByTestId("lightbox");
  await lightbox.waitFor();
  const firstTitle = (await lightbox.getByRole("heading").textContent()) ?? "";
  await page.getByTestId("lightbox-info").filter({ hasText: /\d+×\d+ px · [\d.]+ (B|KB)/ }).waitFor();
  // `atelier serve` without a scanner says so rather than implying a scan.
  await page.getByTestId("lightbox-scan").filter({ hasText: "Malware scan: not scanned on this server" }).waitFor();
  await imagesLoaded(page, "[data-testid=lightbox] [data-testid=compare-after]");
  await axe(page, "library lightbox");
  await shot(page, "results-lightbox", { fullPage: false });
  await page.keyboard.press("ArrowRight");
  await page.waitForFunction((title) => document.querySelector("[data-testid=lightbox] h2")?.textContent !== title, firstTitle);
  const secondTitle = await lightbox.getByRole("heading").textContent();
  const downloading = page.waitForEvent("download");
  await page.getByTestId("lightbox-download").click();
  const download = await downloading;
  expect(download.suggestedFilename(), "the lightbox download's name").toBe(secondTitle);
  await page.keyboard.press("ArrowLeft");
  await lightbox.getByRole("heading", { name: firstTitle }).waitFor();
  await page.keyboard.press("Escape");
  await lightbox.waitFor({ state: "detached" });

  // Select all, download them as one ZIP.
  await page.getByLabel("Select all shown").check();
  await page.getByTestId("selected-count").filter({ hasText: "52 selected" }).waitFor();
  const zipping = page.waitForEvent("download");
  await page.getByRole("button", { name: "Download selected" }).click();
  const zip = await zipping;
  expect(zip.suggestedFilename(), "the selection's download").toMatch(/\.zip$/);
  const names = zipNames(await save(zip, "library.zip"));
  expect(names, "the ZIP's files").toHaveLength(52);
  expect(names, "the ZIP's files").toEqual(expect.arrayContaining(["lighthouse.png", "bulk-00.png"]));

  // Delete one after confirming; it is gone on the server too.
  await page.getByLabel("Select all shown").uncheck();
  await page.getByLabel("Select lighthouse.png").check();
  await page.getByRole("button", { name: "Delete selected" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
  await page.getByText("1 image deleted.").waitFor();
  expect((await api(page, `/api/images/${named.id}`)).status, "the deleted image").toBe(404);
  await libraryCount(page, 51);

  // Use as input: to the studio with the image chosen.
  await items.first().getByRole("button").click();
  await lightbox.getByRole("link", { name: "Use as input" }).click();
  await page.waitForURL(/\/\?image=/);
  const chosen = new URL(page.url()).searchParams.get("image");
  expect(chosen, "the image use as input went to").toBeTruthy();
  expect(chosen, "the image use as input went to").not.toBe(named.id);
  await page.getByRole("heading", { name: "Studio" }).waitFor();

  // Phone, light and dark.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto("/library");
  await items.first().waitFor();
  await imagesLoaded(page, "[data-testid=library-item]:nth-child(-n+4) img");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow, "how much wider than the phone screen the library is").toBeLessThanOrEqual(0);
  await axe(page, "phone library");
  await shot(page, "results-library-phone");
  await dark(page);
  await axe(page, "phone library, dark");
  await items.first().getByRole("button").click();
  await lightbox.waitFor();
  await imagesLoaded(page, "[data-testid=lightbox] [data-testid=compare-after]");
  await axe(page, "phone lightbox, dark");
  await shot(page, "results-lightbox-phone-dark", { fullPage: false });
  expectNoProblems(page);
});

/** The file's own Content-Disposition (ASCII-only, as the gateway serves it) wins over the link's name. */
const ascii = (name: string) => name.replace(/[^A-Za-z0-9._-]/g, "_");

test("results: every output of a job is shown, each viewable, downloadable under its own name and usable as input", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  const image = await uploadPng(page, "Garden Party.png", 160, 120, 10);
  // BiRefNet with its mask: an image and a mask; FLUX with three images; an edge map alone.
  const masked = await startJob(page, image.id, "birefnet-background-removal", { output_mask: true });
  const flux = await startJob(page, image.id, "flux-image-to-image", { prompt: "a watercolour garden", num_images: 3, output_format: "png" });
  const single = await startJob(page, image.id, "canny-edges");
  for (const id of [masked, flux, single]) expect((await finished(page, id)).status, `job ${id}`).toBe("completed");

  await page.goto(`/jobs/${masked}`);
  const outputs = page.getByTestId("output");
  await outputs.nth(1).waitFor();
  expect(await outputs.count(), "BiRefNet's outputs shown").toBe(2);
  // The second output can be viewed in the compare view.
  const secondUrl = await outputs.nth(1).getByTestId("output-download").getAttribute("href");
  await outputs
    .nth(1)
    .getByRole("button", { name: /^View / })
    .click();
  await page.waitForFunction((url) => document.querySelector("[data-testid=compare-after]")?.getAttribute("src") === url, secondUrl);
  // Every download is named as the API names the output.
  const served = (await jobStatus(page, masked)).outputs.map((o) => o.filename);
  const names: string[] = [];
  for (let i = 0; i < 2; i++) {
    const downloading = page.waitForEvent("download");
    await outputs.nth(i).getByTestId("output-download").click();
    names.push((await downloading).suggestedFilename());
  }
  expect(
    names.every((name, i) => name === served[i] || name === ascii(served[i] ?? "")) && new Set(names).size === 2,
    `downloads named ${names.join(", ")}; the API names ${served.join(", ")}`,
  ).toBe(true);
  await imagesLoaded(page, "[data-testid=output] img");
  await axe(page, "job with two outputs");
  await shot(page, "results-outputs-mask");

  await page.goto(`/jobs/${flux}`);
  await outputs.nth(2).waitFor();
  expect(await outputs.count(), "FLUX's outputs shown").toBe(3);
  // Each output can go on to the next workflow.
  const use = await outputs
    .nth(1)
    .getByRole("link", { name: /Use as input/ })
    .getAttribute("href");
  const fluxStatus = await jobStatus(page, flux);
  const ids = fluxStatus.outputs.map((o) => o.image_id);
  // The estimated cost, in its currency.
  const cost = fluxStatus.estimated_cost;
  expect(typeof cost?.amount, `FLUX's estimated cost: ${JSON.stringify(cost)}`).toBe("number");
  const amount = cost?.amount ?? NaN;
  const shown = (await page.getByTestId("job-cost").textContent()) ?? "";
  const figure = Number(shown.replace(/[^\d.]/g, ""));
  expect(Math.abs(figure - amount) <= amount * 0.01 && /\$|USD|€|£/.test(shown), `cost shown as ${shown}, estimated ${JSON.stringify(cost)}`).toBe(true);
  expect(use, "where use as input links").toBe(`/?image=${ids[1] ?? ""}`);
  await imagesLoaded(page, "[data-testid=output] img");
  await axe(page, "job with three outputs");
  await shot(page, "results-outputs-flux");
  await dark(page);
  await axe(page, "job with three outputs, dark");
  await page.setViewportSize({ width: 390, height: 844 });
  await axe(page, "phone job with three outputs, dark");
  await shot(page, "results-outputs-flux-phone-dark");
  await page.setViewportSize({ width: 1280, height: 900 });

  // One output: no grid, its download named as the API names it.
  await page.goto(`/jobs/${single}`);
  const one = (await jobStatus(page, single)).outputs;
  const downloading = page.waitForEvent("download");
  await page.getByTestId("download-result").click();
  const download = await downloading;
  expect(one, "the edge map's outputs").toHaveLength(1);
  const only = one[0]?.filename ?? "";
  expect([only, ascii(only)], `single result named ${download.suggestedFilename()}, the API says ${only}`).toContain(download.suggestedFilename());
  expect(await outputs.count(), "a single output shows a grid").toBe(0);
  await page.getByRole("link", { name: "Use as input" }).click();
  await page.waitForURL(`**/?image=${one[0]?.image_id ?? ""}`);
  expectNoProblems(page);
});

test("results: the library filters by kind and searches file names on the server", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  for (let i = 0; i < 3; i++) await uploadPng(page, `bulk-${i}.png`, 32, 24, i);
  const named = await uploadPng(page, "lighthouse.png", 160, 120, 60);
  const job = await finished(page, await startJob(page, named.id, "canny-edges"));
  expect(job.status, "the job").toBe("completed");
  await page.goto("/library");
  const items = page.getByTestId("library-item");
  await libraryCount(page, 5);
  await page.getByRole("radio", { name: "Results" }).click();
  await page.waitForFunction(() => {
    const all = [...document.querySelectorAll("[data-testid=library-item]")];
    return all.length === 1 && all[0]?.getAttribute("data-kind") === "result";
  });
  await page.getByRole("radio", { name: "Originals" }).click();
  await page.waitForFunction(() => {
    const all = [...document.querySelectorAll("[data-testid=library-item]")];
    return all.length === 4 && all.every((item) => item.getAttribute("data-kind") === "original");
  });
  await page.getByRole("radio", { name: "All" }).click();
  await page.getByLabel("Search by file name").fill("LIGHTHOUSE");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForFunction(() => {
    const all = [...document.querySelectorAll("[data-testid=library-item]")];
    return all.length >= 1 && all.every((item) => /lighthouse/i.test(item.textContent));
  });
  await items.filter({ hasText: "lighthouse.png" }).waitFor();
  await page.getByLabel("Search by file name").fill("nothing-like-this");
  await page.getByRole("button", { name: "Search" }).click();
  await page.getByText("No images match.").waitFor();
  await page.getByRole("button", { name: "Clear filters" }).click();
  await libraryCount(page, 5);
  expectNoProblems(page);
});

test("results: Download all saves a job's outputs as one ZIP named after the original", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  const image = await uploadPng(page, "Garden Party.png", 160, 120, 11);
  const flux = await startJob(page, image.id, "flux-image-to-image", { prompt: "a watercolour garden", num_images: 3, output_format: "png" });
  expect((await finished(page, flux)).status, "the FLUX job").toBe("completed");
  await page.goto(`/jobs/${flux}`);
  await page.getByTestId("output").nth(2).waitFor();
  // The save dialog cannot be driven headless: it hands out a file of the origin's private file
  // system instead, which the ZIP streams into as it would into the file the user picked.
  await page.evaluate(() => {
    const w = window as unknown as { savedAs?: string; showSaveFilePicker: (options: { suggestedName: string }) => Promise<FileSystemFileHandle> };
    w.showSaveFilePicker = async (options) => {
      w.savedAs = options.suggestedName;
      const root = await navigator.storage.getDirectory();
      return root.getFileHandle("saved.zip", { create: true });
    };
  });
  await page.getByTestId("download-all").click();
  await page.getByTestId("download-all").filter({ hasText: "Download all (ZIP)" }).waitFor();
  const saved = await page.evaluate(async () => {
    const root = await navigator.storage.getDirectory();
    const file = await (await root.getFileHandle("saved.zip")).getFile();
    return { name: (window as unknown as { savedAs?: string }).savedAs ?? "", bytes: [...new Uint8Array(await file.arrayBuffer())] };
  });
  expect(saved.name, "the name download all suggests").toBe("Garden Party_flux-image-to-image.zip");
  const entries = zipNames(Buffer.from(saved.bytes));
  const served = (await jobStatus(page, flux)).outputs.map((o) => o.filename);
  expect(entries, "the ZIP's files").toHaveLength(3);
  expect(entries, "the ZIP's files: the outputs").toEqual(expect.arrayContaining(served));
  expectNoProblems(page);
});

test("results: a failed job says what happened in words, keeps the code in details, offers Retry only when it can help", async ({ newPage, server }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  const image = await uploadPng(page, "fails.png", 64, 48, 9);
  for (const [errorType, retryable] of [
    ["internal_error", true],
    ["bad_request", false],
  ] as const) {
    await server.knobs({ error_rate: 1, error_type: errorType });
    let jobId: string;
    try {
      jobId = await startJob(page, image.id, "canny-edges");
      await finished(page, jobId);
    } finally {
      await server.knobs({});
    }
    const status = await jobStatus(page, jobId);
    expect(status.status, `${errorType}: the job`).toBe("failed");
    expect(status.error?.retryable, `${errorType}: whether the server says retryable`).toBe(retryable);
    const error = status.error ?? { message: "", code: "" };
    await page.goto(`/jobs/${jobId}`);
    const failure = page.getByTestId("job-error");
    await failure.getByRole("alert").filter({ hasText: error.message }).waitFor();
    // The code is kept, folded away.
    const details = failure.locator("details");
    expect(await details.evaluate((d) => (d as HTMLDetailsElement).open), "the details are open from the start").toBe(false);
    await details.locator("summary").click();
    await details.getByText(error.code, { exact: true }).waitFor();
    const retry = await page.getByRole("button", { name: "Retry" }).count();
    expect(retry, `${errorType}: Retry buttons`).toBe(retryable ? 1 : 0);
    await axe(page, `failed job (${errorType})`);
    await shot(page, `results-failed-${errorType}`);
    if (retryable) {
      await page.getByRole("button", { name: "Retry" }).click();
      await page.locator('[data-testid=job-status][data-status="completed"]').waitFor({ timeout: 60_000 });
      await page.getByTestId("compare").waitFor();
    }
  }
  expectNoProblems(page);
});

test("results: outputs are named <original>_<workflow>[_<n>].<ext>, the mask labelled, and found by the original's name", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  const image = await uploadPng(page, "Garden Party.png", 160, 120, 12);
  const masked = await startJob(page, image.id, "birefnet-background-removal", { output_mask: true });
  expect((await finished(page, masked)).status, "the BiRefNet job").toBe("completed");
  await page.goto(`/jobs/${masked}`);
  const mask = page.locator("[data-testid=output][data-role=mask]");
  await mask.getByText("Mask", { exact: true }).waitFor();
  await mask.getByRole("button", { name: /View Mask/ }).click();
  const names: string[] = [];
  for (let i = 0; i < 2; i++) {
    const downloading = page.waitForEvent("download");
    await page.getByTestId("output").nth(i).getByTestId("output-download").click();
    names.push((await downloading).suggestedFilename());
  }
  // The gateway serves the file with an ASCII-only name: the space may come as "_".
  for (const name of names) expect(name, "a BiRefNet download's name").toMatch(/^Garden[ _]Party_birefnet-background-removal(_\d+)?\.png$/);
  expect(new Set(names).size, `BiRefNet downloads named ${names.join(", ")}`).toBe(2);
  await page.goto("/library");
  await page.getByLabel("Search by file name").fill("garden party");
  await page.getByRole("button", { name: "Search" }).click();
  await libraryCount(page, 3);
  await axe(page, "library searched");
  expectNoProblems(page);
});
