// The studio side: picking any image (paged, searched, filtered), "use as input", the phone
// layout, dark switches, sign-in errors, parameter help, estimates, "show code" run for real,
// example images, and the batch page (live over WebSocket, cancel, ZIP download).
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { gradientPng } from "./png.mjs";
import { apiCall, axe, expect, newPage, register, results, server, shot, test, upload, uploadImage } from "./harness.mjs";

const run = promisify(execFile);

const session = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("atelier-session") ?? "{}").state?.session);

/** Uploads through the API from the page (many images quickly); resolves with their ids in order. */
async function uploadMany(page, names) {
  const ids = [];
  for (const [index, name] of names.entries()) {
    const base64 = gradientPng(48, 32, index + 10).toString("base64");
    const answer = await page.evaluate(
      async ({ name, base64 }) => {
        const token = JSON.parse(localStorage.getItem("atelier-session") ?? "{}").state?.session?.accessToken;
        const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
        const form = new FormData();
        form.append("file", new File([bytes], name, { type: "image/png" }), name);
        const response = await fetch("/api/images/upload", { method: "POST", headers: { authorization: `Bearer ${token}` }, body: form });
        return { status: response.status, body: await response.json() };
      },
      { name, base64 },
    );
    expect(answer.status === 201, `upload of ${name} answered ${answer.status}`);
    ids.push(answer.body.id);
  }
  return ids;
}

async function startJob(page, imageId, workflowId = "canny-edges", parameters = {}) {
  const answer = await page.evaluate(
    async (body) => {
      const token = JSON.parse(localStorage.getItem("atelier-session") ?? "{}").state?.session?.accessToken;
      const response = await fetch("/api/processing/start", {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: response.status, body: await response.json() };
    },
    { image_id: imageId, workflow_id: workflowId, parameters },
  );
  expect(answer.status === 202, `start answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return answer.body.job_id;
}

async function waitForJob(page, jobId, status = "completed", timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = JSON.parse((await apiCall(page, `/api/processing/${jobId}/status`)).body);
    if (job.status === status) return job;
    if (["completed", "failed", "cancelled"].includes(job.status)) throw new Error(`job ${jobId} ended ${job.status}, not ${status}`);
    if (Date.now() > deadline) throw new Error(`job ${jobId} still ${job.status}`);
    await page.waitForTimeout(200);
  }
}

const grid = (page) => page.getByTestId("image-grid");
const pick = (page, name) => grid(page).locator("label", { hasText: name });
const gridNames = (page) => grid(page).locator("li").allInnerTexts();

/** The theme follows the system's by default: switch it the way the device would. */
async function setTheme(page, theme) {
  await page.emulateMedia({ colorScheme: theme });
  await page.waitForFunction((dark) => document.documentElement.classList.contains("dark") === dark, theme === "dark");
  // Let colour transitions (150 ms) finish, or axe measures contrast halfway between themes.
  await page.waitForTimeout(400);
}

test("studio: every image can be picked (paged, searched, filtered) and a batch runs on exactly the selection", async () => {
  const { context, page } = await newPage({ viewport: { width: 1280, height: 900 } });
  await register(page);
  // More images than one page, then a result newer than all of them.
  const names = Array.from({ length: 27 }, (_, i) => `pic-${String(i + 1).padStart(2, "0")}.png`);
  const ids = await uploadMany(page, names);
  const job = await waitForJob(page, await startJob(page, ids[26]));
  const resultId = job.result_image_id;
  expect(typeof resultId === "string", "the job has no result image");
  await page.reload();
  await page.getByRole("heading", { name: "Your images" }).waitFor();
  await grid(page).locator("li").nth(23).waitFor();
  let shown = await gridNames(page);
  expect(shown.length === 24, `first page shows ${shown.length} images`);
  expect(!shown.some((text) => text.includes("pic-01.png")), "the oldest upload is on the first page");
  // The oldest upload is one "load more" away (it used to be out of reach).
  await page.getByRole("button", { name: "Load more images" }).click();
  await pick(page, "pic-01.png").waitFor();
  shown = await gridNames(page);
  expect(shown.length === 28, `all pages show ${shown.length} images, expected 27 uploads and 1 result`);
  await page.getByRole("button", { name: "Load more images" }).waitFor({ state: "detached" });
  await pick(page, "pic-01.png").click();
  await page.getByTestId("selected-count").filter({ hasText: "1 selected" }).waitFor();

  // Search by file name, server-side: it finds an old upload that is not loaded yet in a fresh list.
  await page.getByLabel("Search images by file name").fill("pic-02");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=image-grid] li").length === 1);
  expect((await gridNames(page))[0].includes("pic-02.png"), "search did not find pic-02.png");
  await pick(page, "pic-02.png").click();
  await page.getByTestId("selected-count").filter({ hasText: "2 selected" }).waitFor();
  await page.getByLabel("Search images by file name").fill("no-such-name");
  await page.getByText("No images named like “no-such-name”.").waitFor();
  await page.getByLabel("Search images by file name").fill("");

  // Results only, then uploads only.
  await page.getByRole("radio", { name: "Results" }).click();
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=image-grid] li").length === 1);
  expect((await grid(page).locator("[data-testid=pick]").first().getAttribute("data-image-id")) === resultId, "the results filter does not show the result");
  await page.getByRole("radio", { name: "Uploads" }).click();
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=image-grid] li").length === 24);
  expect(!(await gridNames(page)).some((text) => text.includes("Result")), "the uploads filter shows a result");
  await axe(page, "studio picker");
  await shot(page, "studio-picker");

  // The selection held across pages, searches and filters: the batch runs on both, no more, no fewer.
  await page.getByTestId("selected-count").filter({ hasText: "2 selected" }).waitFor();
  await page.getByRole("radio", { name: /Edge map/ }).check();
  const started = page.waitForResponse((r) => r.url().endsWith("/api/processing/batch") && r.request().method() === "POST");
  await page.getByRole("button", { name: "Start batch of 2" }).click();
  const body = JSON.parse((await started).request().postData() ?? "{}");
  expect(JSON.stringify([...body.image_ids].sort()) === JSON.stringify([ids[0], ids[1]].sort()), `batch sent ${JSON.stringify(body.image_ids)}`);
  await page.waitForURL("**/batches/*");
  const batchId = page.url().split("/").pop();
  const batch = JSON.parse((await apiCall(page, `/api/processing/batch/${batchId}`)).body);
  expect(batch.total === 2, `the batch has ${batch.total} jobs`);
  await page.locator('[data-testid=batch-job][data-status="completed"]').nth(1).waitFor({ timeout: 60_000 });

  // "Use as input": any image, a result included, arrives preselected.
  await page.goto(`/?image=${resultId}`);
  await page.locator(`[data-testid=stage-image][data-image-id="${resultId}"]`).waitFor();
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
  expect(page.problems.length === 0, page.problems.join("\n"));
  await context.close();
});

test("studio: another user's image is not found through ?image=", async () => {
  const owner = await newPage();
  await register(owner.page);
  const [theirs] = await uploadMany(owner.page, ["private.png"]);
  await owner.context.close();
  const { context, page } = await newPage();
  await register(page);
  await page.goto(`/?image=${theirs}`);
  await page.getByRole("alert").filter({ hasText: "not in your library" }).waitFor();
  expect(!(await page.getByTestId("stage-image").count()), "another user's image is shown");
  await context.close();
});

for (const theme of ["light", "dark"]) {
  test(`phone (${theme}): one-row nav, Start always on screen`, async () => {
    const { context, page } = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    await register(page);
    if (theme === "dark") await setTheme(page, "dark");
    await uploadImage(page, "phone-pick.png", 7);
    await page.getByRole("radio", { name: /ESRGAN upscaler/ }).check();
    const nav = page.getByRole("navigation", { name: "Main" });
    const links = await nav.getByRole("link").all();
    expect(links.length >= 3, `nav has ${links.length} links`);
    const boxes = await Promise.all(links.map((link) => link.boundingBox()));
    const rows = new Set(boxes.map((box) => Math.round(box.y)));
    expect(rows.size === 1, `the nav wraps onto ${rows.size} rows`);
    expect(boxes.every((box) => box.y >= 0 && box.y + box.height <= 844 && box.x >= 0 && box.x + box.width <= 390), "a nav link is off screen");
    const header = await page.locator("header").boundingBox();
    expect(header.height <= 64, `the header is ${header.height}px tall`);
    const start = page.getByRole("button", { name: "Start", exact: true });
    for (const where of ["top", "bottom"]) {
      await page.evaluate((where) => window.scrollTo(0, where === "top" ? 0 : document.body.scrollHeight), where);
      await page.waitForTimeout(100);
      const box = await start.boundingBox();
      expect(box && box.y >= 0 && box.y + box.height <= 844, `Start is off screen at the ${where} (${JSON.stringify(box)})`);
      const hit = await page.evaluate(({ x, y }) => document.elementFromPoint(x, y)?.closest("button")?.textContent, { x: box.x + box.width / 2, y: box.y + box.height / 2 });
      expect(hit === "Start", `Start is covered at the ${where} (${hit})`);
    }
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow <= 0, `the studio is ${overflow}px wider than the phone`);
    await page.evaluate(() => window.scrollTo(0, 0));
    await axe(page, `phone studio, ${theme}`);
    await page.screenshot({ path: join(results, "screenshots", `studio-phone-${theme}.png`) });
    await shot(page, `studio-phone-${theme}-full`);
    await page.getByRole("link", { name: "History" }).click();
    await page.getByRole("heading", { name: "History" }).waitFor();
    await axe(page, `phone history, ${theme}`);
    expect(page.problems.length === 0, page.problems.join("\n"));
    await context.close();
  });
}

test("dark theme: an \"on\" switch keeps its colour; sign-in errors stay on the sign-in page", async () => {
  const { context, page } = await newPage({ viewport: { width: 1280, height: 900 } });
  // A failed sign-in, then "Create an account": the error does not follow.
  await page.goto("/login");
  await page.getByLabel("Email").fill("nobody@example.com");
  await page.getByLabel("Password", { exact: true }).fill("not the password at all");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: /invalid email or password/i }).waitFor();
  await page.getByRole("link", { name: "Create an account" }).click();
  await page.getByRole("heading", { name: "Create your account" }).waitFor();
  expect((await page.getByRole("alert").count()) === 0, "the sign-in error followed to the register page");
  await page.getByRole("link", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  expect((await page.getByRole("alert").count()) === 0, "the old error came back on the sign-in page");

  await register(page);
  const colours = async () => {
    await page.getByRole("radio", { name: /Background removal \(rembg\)/ }).check();
    const toggle = page.getByRole("switch").first();
    // The colour once its transition has ended: the same in two reads 150 ms apart.
    const settled = async (checked) => {
      await page.waitForFunction((want) => document.querySelector("[role=switch]")?.getAttribute("aria-checked") === want, String(checked));
      let last = null;
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
  expect(light.on !== light.off, `light: on and off look the same (${light.on})`);
  await setTheme(page, "dark");
  const dark = await colours();
  expect(dark.on !== dark.off, `dark: on and off look the same (${dark.on})`);
  // "On" is the brand colour in both themes (indigo: more blue than red or green).
  for (const [name, colour] of Object.entries({ light: light.on, dark: dark.on })) {
    const [r, g, b] = colour.match(/\d+/g).map(Number);
    expect(b > r + 60 && b > g + 60, `${name}: the on colour ${colour} is not the brand colour`);
  }
  await axe(page, "studio with a switch on, dark");
  await shot(page, "studio-dark-switch");
  expect(page.problems.length === 0, page.problems.join("\n"));
  await context.close();
});

test("parameter help: every parameter shows its title and description, ranges their limits", async () => {
  const { context, page } = await newPage({ viewport: { width: 1280, height: 900 } });
  await register(page);
  const catalogue = JSON.parse((await apiCall(page, "/api/workflows")).body).workflows;
  let checked = 0;
  for (const workflow of catalogue) {
    await page.getByRole("radio", { name: new RegExp(workflow.name.replace(/[()]/g, "\\$&")) }).check();
    await page.getByRole("heading", { name: `Parameters: ${workflow.name}` }).waitFor();
    for (const [name, schema] of Object.entries(workflow.parameters_schema.properties ?? {})) {
      expect(typeof schema.title === "string" && schema.title, `${workflow.id}.${name} has no title`);
      expect(typeof schema.description === "string" && schema.description, `${workflow.id}.${name} has no description`);
      const field = page.locator(`[data-field="${name}"]`);
      const label = (await field.locator("label").first().innerText()).replace(/\s*\*$/, "");
      expect(label === schema.title, `${workflow.id}.${name} is labelled "${label}", not "${schema.title}"`);
      const described = await field.locator("[aria-describedby]").first().evaluate((el) =>
        (el.getAttribute("aria-describedby") ?? "")
          .split(" ")
          .map((id) => document.getElementById(id)?.textContent ?? "")
          .join(" "),
      );
      expect(described.includes(schema.description), `${workflow.id}.${name}: described as "${described}", not by its description`);
      const min = schema.minimum ?? schema.anyOf?.find((s) => s.minimum !== undefined)?.minimum;
      const max = schema.maximum ?? schema.anyOf?.find((s) => s.maximum !== undefined)?.maximum;
      if (min !== undefined && max !== undefined) expect(described.includes(`${min} – ${max}`), `${workflow.id}.${name}: the range ${min} – ${max} is not shown`);
      checked++;
    }
  }
  expect(checked > 10, `only ${checked} parameters checked`);
  await page.getByRole("radio", { name: /ESRGAN upscaler/ }).check();
  await axe(page, "studio parameters with help");
  await shot(page, "studio-parameter-help");
  await context.close();
});

test("before starting: output size and cost per job and for the batch, following the parameters; too large is refused with the reason", async () => {
  const { context, page } = await newPage({ viewport: { width: 1280, height: 900 } });
  await register(page);
  await uploadImage(page, "small.png", 40);
  await page.getByRole("radio", { name: /ESRGAN upscaler/ }).check();
  const scale = page.getByRole("spinbutton", { name: "Scale" });
  await scale.fill("2");
  await page.getByTestId("estimate-resolution").filter({ hasText: "192×128" }).waitFor();
  // Debounced: a burst of edits asks once for the last value.
  let asked = 0;
  page.on("request", (r) => r.url().includes("/estimate") && asked++);
  await scale.fill("3");
  await scale.fill("4");
  await page.getByTestId("estimate-resolution").filter({ hasText: "384×256" }).waitFor();
  expect(asked === 1, `the estimate was asked ${asked} times for one burst of edits`);
  const priced = await apiCall(page, "/api/workflows/esrgan-upscale/estimate", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ image_ids: [await page.getByTestId("stage-image").getAttribute("data-image-id")], parameters: { scale: 4 } }),
  });
  const total = JSON.parse(priced.body).total_cost;
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
  expect((await big).status() === 201, "the big upload failed");
  await scale.fill("8");
  const reason = page.getByTestId("estimate-refusal");
  await reason.waitFor();
  expect((await reason.innerText()).length > 10, "no reason given");
  expect(await page.getByRole("button", { name: "Start", exact: true }).isDisabled(), "Start is enabled for a refused estimate");
  await scale.fill("2");
  await reason.waitFor({ state: "detached" });
  expect(!(await page.getByRole("button", { name: "Start", exact: true }).isDisabled()), "Start stays disabled");
  expect(page.problems.length === 0, page.problems.join("\n"));
  await context.close();
});

test("show code: the cURL snippet, run for real with the user's token, starts the same job", async () => {
  const { context, page } = await newPage({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.base });
  await register(page);
  const imageId = await uploadImage(page, "for-code.png", 8);
  await page.getByRole("radio", { name: /Edge map/ }).check();
  await page.getByRole("spinbutton", { name: "Low threshold" }).fill("40");
  await page.getByRole("button", { name: "Show code" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByRole("heading", { name: "Run this from code" }).waitFor();
  const curl = await dialog.getByTestId("snippet-curl").innerText();
  const token = (await session(page)).accessToken;
  expect(!curl.includes(token), "the snippet embeds the access token");
  expect(curl.includes("$ATELIER_TOKEN") && curl.includes(imageId) && curl.includes('"low_threshold": 40'), `unexpected snippet:\n${curl}`);
  await dialog.getByRole("button", { name: "Copy cURL" }).click();
  await dialog.getByRole("button", { name: "Copied" }).waitFor();
  expect((await page.evaluate(() => navigator.clipboard.readText())) === curl, "the copied text is not the snippet");
  await axe(page, "show code dialog");
  await shot(page, "show-code");
  await setTheme(page, "dark");
  await axe(page, "show code dialog, dark");
  await shot(page, "show-code-dark");
  await setTheme(page, "light");
  for (const [tab, needle] of [["Python", "requests.post("], ["TypeScript", "await fetch("]]) {
    await dialog.getByRole("tab", { name: tab }).click();
    const text = await dialog.getByTestId(`snippet-${tab.toLowerCase()}`).innerText();
    expect(text.includes(needle) && text.includes(imageId) && !text.includes(token), `${tab} snippet:\n${text}`);
  }
  await dialog.getByRole("button", { name: "Close" }).click();

  // Run it as a user would, in a shell, with the token in the environment.
  const { stdout } = await run("bash", ["-c", curl], { env: { ...process.env, ATELIER_TOKEN: token }, timeout: 30_000 });
  const answer = JSON.parse(stdout);
  expect(typeof answer.job_id === "string", `curl answered ${stdout}`);
  const job = await waitForJob(page, answer.job_id);
  expect(job.image_id === imageId && job.workflow_id === "canny-edges" && job.parameters.low_threshold === 40, `the job is ${JSON.stringify(job)}`);
  expect(page.problems.length === 0, page.problems.join("\n"));
  await context.close();
});

test("examples: one click adds an example image through the upload API", async () => {
  const { context, page } = await newPage({ viewport: { width: 1280, height: 900 } });
  await register(page);
  for (const [label, mime, width] of [["Apple cut-out", "image/png", 512], ["Mountain lake", "image/jpeg", 768]]) {
    const uploaded = page.waitForResponse((r) => r.url().endsWith("/api/images/upload"));
    await page.getByRole("button", { name: `Use the example ${label}` }).click();
    const response = await uploaded;
    expect(response.status() === 201, `example upload answered ${response.status()}`);
    const image = await response.json();
    expect(image.mime_type === mime && image.width === width, `example ${label} stored as ${image.mime_type} ${image.width}px`);
    await page.locator(`[data-testid=stage-image][data-image-id="${image.id}"]`).waitFor();
  }
  await page.getByTestId("selected-count").filter({ hasText: "2 selected" }).waitFor();
  await page.getByRole("radio", { name: /Background removal \(rembg\)/ }).check();
  await axe(page, "studio with examples");
  await shot(page, "studio-examples");
  expect(page.problems.length === 0, page.problems.join("\n"));
  await context.close();
});

test("batch: thumbnails, live status over one WebSocket, cancel one job, download all as a ZIP", async () => {
  const { context, page } = await newPage({ viewport: { width: 1280, height: 900 } });
  await register(page);
  for (const [i, name] of ["one.png", "two.png", "three.png"].entries()) await uploadImage(page, name, 20 + i);
  await page.getByTestId("selected-count").filter({ hasText: "3 selected" }).waitFor();
  await page.getByRole("radio", { name: /Edge map/ }).check();
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  let polls = 0;
  page.on("request", (r) => r.url().includes("/api/processing/batch/") && r.method() === "GET" && polls++);
  await server.knobs({ processing_time_ms: 4000, queue_delay_ms: 300 });
  try {
    await page.getByRole("button", { name: "Start batch of 3" }).click();
    await page.waitForURL("**/batches/*");
    const cards = page.getByTestId("batch-job");
    await cards.nth(2).waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=batch-job] img")].filter((img) => img.complete && img.naturalWidth > 0).length === 3);
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
  expect(sockets.length >= 1 && sockets.every((url) => url.includes("/api/ws")), `websockets: ${sockets.join(", ")}`);
  expect(polls <= 6, `the batch was polled ${polls} times`);
  // Finished jobs show their result's thumbnail.
  await page.locator('[data-testid=batch-job][data-status="completed"]').first().getByText("Result").waitFor();
  const batchId = page.url().split("/").pop();
  const cost = JSON.parse((await apiCall(page, `/api/processing/batch/${batchId}`)).body).estimated_cost;
  if (cost) await page.getByTestId("batch-cost").filter({ hasText: /\$\d/ }).waitFor();
  // "Download all": streamed into the file the user picks where the browser can (the picker is
  // stubbed here: a headless browser has no dialog to answer), else saved from a Blob.
  await page.evaluate(() => {
    window.__saved = { bytes: [], closed: false, name: null };
    window.showSaveFilePicker = async (options) => {
      window.__saved.name = options.suggestedName;
      return {
        createWritable: async () =>
          new WritableStream({
            write(chunk) {
              for (const byte of chunk) window.__saved.bytes.push(byte);
            },
            close() {
              window.__saved.closed = true;
            },
          }),
      };
    };
  });
  await page.getByRole("button", { name: "Download all" }).click();
  await page.waitForFunction(() => window.__saved.closed);
  const streamed = Buffer.from(await page.evaluate(() => window.__saved.bytes));
  const countEntries = (zip) => {
    // Central directory headers: one per file.
    let entries = 0;
    for (let at = zip.indexOf("PK\u0001\u0002", 0, "latin1"); at !== -1; at = zip.indexOf("PK\u0001\u0002", at + 4, "latin1")) entries++;
    return entries;
  };
  expect(streamed.subarray(0, 4).toString("hex") === "504b0304", "the streamed download is not a ZIP");
  expect(countEntries(streamed) === 2, `the streamed ZIP has ${countEntries(streamed)} files, expected the 2 results`);
  await page.evaluate(() => {
    window.showSaveFilePicker = undefined;
  });
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download all" }).click()]);
  const saved = join(results, "batch.zip");
  await download.saveAs(saved);
  const zip = await readFile(saved);
  expect(zip.subarray(0, 4).toString("hex") === "504b0304" && countEntries(zip) === 2, `the saved ZIP has ${countEntries(zip)} files`);
  expect(download.suggestedFilename().endsWith(".zip"), `saved as ${download.suggestedFilename()}`);
  await axe(page, "batch finished");
  await shot(page, "batch-finished");
  await setTheme(page, "dark");
  await page.getByTestId("batch-job").nth(2).waitFor();
  await axe(page, "batch finished, dark");
  await shot(page, "batch-finished-dark");
  expect(page.problems.length === 0, page.problems.join("\n"));
  await context.close();
});

test("batch: cancel the whole batch", async () => {
  const { context, page } = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
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
  expect(page.problems.length === 0, page.problems.join("\n"));
  await context.close();
});
