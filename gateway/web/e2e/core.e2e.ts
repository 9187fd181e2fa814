// The first scenarios: the whole path of one user, and the app's frame (account, PWA, keyboard).
import { readFile } from "node:fs/promises";
import {
  api,
  axe,
  body,
  expect,
  expectNoProblems,
  register,
  session,
  shot,
  signIn,
  statusesUntilDone,
  test,
  upload,
  uploadImage,
} from "./fixtures";

const DESKTOP = { viewport: { width: 1280, height: 900 } };

test("register, upload, run a workflow live, compare, download, history, offline, delete", async ({ newPage, server }) => {
  const { context, page } = await newPage(DESKTOP);
  await page.goto("/");
  await page.waitForURL("**/login");
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await axe(page, "sign in");
  await shot(page, "login");

  await register(page);
  await axe(page, "studio");

  // Slow the simulator so the job is seen live.
  await server.knobs({ processing_time_ms: 2500, queue_delay_ms: 500 });
  const imageId = await uploadImage(page, "gradient.png");
  await page.getByRole("radio", { name: /ESRGAN upscaler/ }).check();
  await page.getByRole("heading", { name: /Parameters: ESRGAN upscaler/ }).waitFor();

  // Inline validation, from the schema's range.
  const scale = page.getByRole("spinbutton", { name: "Scale" });
  await scale.fill("9");
  await page.getByRole("button", { name: "Start" }).click();
  await page.getByText("Must be at most 8").waitFor();
  await scale.fill("2");
  await page.getByText("Must be at most 8").waitFor({ state: "detached" });
  await page.getByLabel("Model", { exact: true }).selectOption({ label: "RealESRGAN_x2plus" });
  await axe(page, "studio with a workflow form");
  await shot(page, "studio");

  await page.getByRole("button", { name: "Start" }).click();
  await page.waitForURL("**/jobs/*");
  const jobUrl = page.url();
  const statuses = await statusesUntilDone(page);
  expect(statuses.at(-1), `job ended ${statuses.join(" → ")}`).toBe("completed");
  expect(
    statuses.some((s) => ["queued", "submitted", "processing"].includes(s)),
    `no live status seen: ${statuses.join(" → ")}`,
  ).toBe(true);
  await server.knobs({ processing_time_ms: 200, queue_delay_ms: 0 });

  const compare = page.getByTestId("compare");
  await compare.locator("img").nth(1).waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll<HTMLImageElement>("[data-testid=compare] img")].every((img) => img.complete && img.naturalWidth > 0));
  const sizes = await compare.locator("img").evaluateAll((imgs) => (imgs as HTMLImageElement[]).map((img) => [img.naturalWidth, img.naturalHeight]));
  expect([sizes[0]?.[0], sizes[1]?.[0]], `before/after sizes ${JSON.stringify(sizes)}`).toEqual([96, 192]);
  await page.getByRole("button", { name: "Zoom in" }).click();
  await page.getByTestId("job-parameter").filter({ hasText: "RealESRGAN_x2plus" }).waitFor();
  await axe(page, "job result");
  await shot(page, "result");

  const downloading = page.waitForEvent("download");
  await page.getByTestId("download-result").click();
  const download = await downloading;
  const saved = test.info().outputPath("download.bin");
  await download.saveAs(saved);
  const bytes = await readFile(saved);
  expect(bytes.subarray(1, 4).toString(), `download is not a PNG (${download.suggestedFilename()})`).toBe("PNG");

  // History shows it; search finds it.
  await page.getByRole("link", { name: "History" }).click();
  const item = page.getByTestId("history-item").first();
  await item.waitFor();
  await page.getByLabel("Search").fill("ESRGAN");
  await page.getByRole("button", { name: "Apply filters" }).click();
  await item.getByText("completed").waitFor();
  await page.getByLabel("Status").selectOption("failed");
  await page.getByRole("button", { name: "Apply filters" }).click();
  await page.getByText("No jobs match these filters.").waitFor();
  await page.getByRole("button", { name: "Clear", exact: true }).click();
  await item.waitFor();
  const day = (offset: number) => {
    const d = new Date(Date.now() + offset * 24 * 3600 * 1000);
    return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  };
  await page.getByLabel("From", { exact: true }).fill(day(0));
  await page.getByLabel("To", { exact: true }).fill(day(0));
  await page.getByRole("button", { name: "Apply filters" }).click();
  await item.getByText("completed").waitFor();
  await page.getByLabel("From", { exact: true }).fill(day(1));
  await page.getByLabel("To", { exact: true }).fill(day(1));
  await page.getByRole("button", { name: "Apply filters" }).click();
  await page.getByText("No jobs match these filters.").waitFor();
  await page.getByRole("button", { name: "Clear", exact: true }).click();
  await item.waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll<HTMLImageElement>("[data-testid=history-item] img")].every((img) => img.complete && img.naturalWidth > 0));
  await axe(page, "history");
  await shot(page, "history");

  // Offline: once the service worker controls the page, what was seen stays viewable.
  await page.evaluate(() => navigator.serviceWorker.ready.then(() => undefined));
  const controlled = () => page.evaluate(() => navigator.serviceWorker.controller !== null);
  for (let i = 0; i < 50 && !(await controlled()); i++) await page.waitForTimeout(100);
  // An active service worker controls every page loaded after it.
  if (!(await controlled())) await page.reload();
  expect(await controlled(), "the service worker does not control the page").toBe(true);
  const bothShown = () =>
    page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll<HTMLImageElement>("[data-testid=compare] img")];
      return imgs.length === 2 && imgs.every((img) => img.complete && img.naturalWidth > 0);
    });
  await page.goto(jobUrl);
  await bothShown();
  await page.goto("/history");
  await page.getByTestId("history-item").first().waitFor();
  await context.setOffline(true);
  await page.goto(jobUrl);
  await page.getByText("You are offline").waitFor();
  await bothShown();
  await shot(page, "offline-result");
  await page.getByRole("link", { name: "History" }).click();
  await page.getByTestId("history-item").first().waitFor();
  await context.setOffline(false);
  await page.getByText("You are offline").waitFor({ state: "detached" });

  // Delete the job's images.
  await page.goto("/history");
  await page
    .getByRole("button", { name: /Delete images/ })
    .first()
    .click();
  await page.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
  await page.getByText("Images deleted.").waitFor();
  const gone = await api(page, `/api/images/${imageId}`);
  expect(gone.status, "the deleted image").toBe(404);

  // Settings: usage, theme.
  await page.getByRole("link", { name: "Settings" }).click();
  await page.getByRole("heading", { name: "Preferences" }).waitFor();
  await page.getByText(/Loading your profile/).waitFor({ state: "detached" });
  await axe(page, "settings");
  await shot(page, "settings");
  await page.getByLabel("Theme").selectOption("dark");
  await page.waitForFunction(() => document.documentElement.classList.contains("dark"));
  await axe(page, "settings, dark");
  await page.goto(jobUrl.replace(/\/jobs\/.*/, "/"));
  await page.getByRole("heading", { name: "Studio" }).waitFor();
  await axe(page, "studio, dark");
  await shot(page, "studio-dark");
  await page.goto("/history");
  await page.getByTestId("history-item").first().waitFor();
  await axe(page, "history, dark");
  await page.goto(jobUrl);
  await page.locator('[data-testid=job-status][data-status="completed"]').waitFor();
  await axe(page, "job whose images were deleted, dark");

  expectNoProblems(page);
});

test("cancel a running job", async ({ newPage, server }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  await uploadImage(page, "to-cancel.png", 2);
  await server.knobs({ hang: true });
  try {
    await page.getByRole("radio", { name: /Background removal \(rembg\)/ }).check();
    await page.getByRole("button", { name: "Start" }).click();
    await page.waitForURL("**/jobs/*");
    await page.locator('[data-testid=job-status][data-status="processing"]').waitFor({ timeout: 30_000 });
    await page.getByText("Live").waitFor();
    await axe(page, "running job");
    await shot(page, "job-running");
    await page.getByRole("button", { name: "Cancel job" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Cancel job" }).click();
    await page.locator('[data-testid=job-status][data-status="cancelled"]').waitFor();
    await page.getByRole("button", { name: "Run again" }).waitFor();
  } finally {
    await server.knobs({});
  }
  expectNoProblems(page);
});

test("refused uploads show why", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  // Checked before sending.
  await upload(page, "notes.txt", Buffer.from("hello"), "text/plain");
  await page.getByRole("alert").filter({ hasText: "notes.txt: not a supported image" }).waitFor();
  // Refused by the server: it looks at the content, not the name.
  const answered = page.waitForResponse((r) => r.url().endsWith("/api/images/upload"));
  await upload(page, "fake.png", Buffer.from("this is not a PNG at all, just text"));
  const response = await answered;
  expect(response.status(), "the fake upload's status").toBeGreaterThanOrEqual(400);
  expect(response.status(), "the fake upload's status").toBeLessThan(500);
  const problem = (await response.json()) as { detail?: unknown };
  expect(typeof problem.detail === "string" && problem.detail.length > 0, "no problem detail").toBe(true);
  const detail = String(problem.detail);
  const shown = detail.charAt(0).toUpperCase() + detail.slice(1);
  await page.locator("li", { hasText: "fake.png" }).getByRole("alert").filter({ hasText: shown }).waitFor();
  await axe(page, "studio with refused uploads");
  await shot(page, "upload-refused");
  expectNoProblems(page);
});

test("phone-sized screen", async ({ newPage }) => {
  const { page } = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await page.goto("/login");
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await axe(page, "phone sign in");
  await register(page);
  await uploadImage(page, "phone.png", 3);
  await page.getByRole("radio", { name: /Background removal \(rembg\)/ }).check();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow, "how much wider than the phone screen the studio is").toBeLessThanOrEqual(0);
  await axe(page, "phone studio");
  await shot(page, "phone-studio");
  await page.getByRole("button", { name: "Start" }).click();
  await page.waitForURL("**/jobs/*");
  const statuses = await statusesUntilDone(page);
  expect(statuses.at(-1), `job ended ${statuses.join(" → ")}`).toBe("completed");
  await page.getByTestId("compare").waitFor();
  await axe(page, "phone result");
  await shot(page, "phone-result");
  await page.getByRole("link", { name: "History" }).click();
  await page.getByTestId("history-item").first().waitFor();
  const historyOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(historyOverflow, "how much wider than the phone screen history is").toBeLessThanOrEqual(0);
  await axe(page, "phone history");
  await shot(page, "phone-history");
  expectNoProblems(page);
});

test("a batch of two images", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  await uploadImage(page, "first.png", 4);
  await uploadImage(page, "second.png", 5);
  await page.getByTestId("selected-count").filter({ hasText: "2 selected" }).waitFor();
  await page.getByRole("radio", { name: /Edge map/ }).check();
  await page.getByRole("button", { name: "Start batch of 2" }).click();
  await page.waitForURL("**/batches/*");
  await page.getByText(/^2 completed, 0 failed/).waitFor({ timeout: 60_000 });
  await axe(page, "batch");
  await shot(page, "batch");
  await page.getByRole("link", { name: "Job 2" }).click();
  await page.locator('[data-testid=job-status][data-status="completed"]').waitFor();
  expectNoProblems(page);
});

test("account: profile, settings kept by the server, sign out everywhere, deletion", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  const email = await register(page);
  await page.getByRole("link", { name: "Settings" }).click();
  await page.getByRole("heading", { name: "Preferences" }).waitFor();
  await page.getByText("Jobs today").waitFor();
  // A limit the plan has fills a bar; one it does not have (storage, here) reads Unlimited.
  await page.getByRole("progressbar", { name: /^Jobs today: 0 of 3$/ }).waitFor();
  await page.getByText(/^0 B used · Unlimited$/).waitFor();
  expect(await page.getByRole("progressbar", { name: /^Storage/ }).count(), "a bar for unlimited storage").toBe(0);
  await page.getByLabel("Display name").fill("Ada Lovelace");
  await page.getByRole("button", { name: "Save name" }).click();
  await page.getByText("Display name saved.").waitFor();
  await page.getByLabel("Theme").selectOption("dark");
  await page.getByText("Settings saved.").waitFor();
  // A value the server refuses is named next to its field.
  await page.getByLabel("Keep images for (days)").fill("999");
  await page.keyboard.press("Tab");
  await page.locator("#retention-error").waitFor();
  await page.getByLabel("Keep images for (days)").fill("7");
  await page.keyboard.press("Tab");
  await page.getByText("Settings saved.").waitFor();
  const { settings } = body(await api(page, "/api/users/settings")) as { settings: { theme: string; retention_days: number | null } };
  expect(settings.theme, "the theme the server keeps").toBe("dark");
  expect(settings.retention_days, "the retention the server keeps").toBe(7);
  expect((body(await api(page, "/api/users/profile")) as { display_name: string }).display_name, "the display name saved").toBe("Ada Lovelace");
  await axe(page, "settings with a profile, dark");

  // A second device signed in to the same account...
  const other = await newPage();
  await other.page.goto("/login");
  await signIn(other.page, email);
  await other.page.getByRole("heading", { name: "Studio" }).waitFor();
  // ...loses its session when this one signs out everywhere.
  await page.getByRole("button", { name: "Sign out everywhere" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Sign out everywhere" }).click();
  await page.getByText("You were signed out on every device.").waitFor();
  const refreshToken = (await session(other.page))?.refreshToken;
  const refreshed = await other.page.evaluate(async (token) => {
    const response = await fetch("/api/auth/refresh", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ refresh_token: token }) });
    return response.status;
  }, refreshToken);
  expect(refreshed, "the other device's refresh").toBe(401);
  await other.context.close();

  // Deleting the account ends it for good.
  await signIn(page, email);
  // Back where the session ended.
  await page.getByRole("heading", { name: "Preferences" }).waitFor();
  await page.getByRole("button", { name: "Delete account" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Delete my account" }).click();
  await page.getByText("Your account was deleted.").waitFor();
  await signIn(page, email);
  await page.getByRole("alert").filter({ hasText: /invalid email or password/i }).waitFor();
  expectNoProblems(page);
});

test("stays signed in: the access token is refreshed before it expires", async ({ newPage }) => {
  const { page } = await newPage();
  await register(page);
  const first = await session(page);
  expect(first, "no session after registering").not.toBeNull();
  // Tokens live 75 s here; the app refreshes 60 s before expiry, i.e. after about 15 s.
  await page.waitForFunction(
    (token) => (JSON.parse(localStorage.getItem("atelier-session") ?? "{}") as { state?: { session?: { refreshToken?: string } } }).state?.session?.refreshToken !== token,
    first?.refreshToken,
    { timeout: 40_000, polling: 500 },
  );
  const second = await session(page);
  expect(second?.accessToken, "the access token after a refresh").not.toBe(first?.accessToken);
  expect(second?.expiresAt ?? 0, "the new token's expiry").toBeGreaterThan(first?.expiresAt ?? 0);
  // The rotated token is the one in use: the API still answers, and a reload keeps the session.
  await page.reload();
  await page.getByRole("link", { name: "History" }).click();
  await page.getByText("No jobs yet").waitFor();
  const me = await api(page, "/api/auth/me");
  expect(me.status, "/api/auth/me").toBe(200);
  expectNoProblems(page);
});

test("a quota refusal says which limit and when it resets", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  const imageId = await uploadImage(page, "quota.png", 6);
  for (let i = 0; i < 3; i++) {
    const started = await api(page, "/api/processing/start", {
      method: "POST",
      json: { image_id: imageId, workflow_id: "rembg-background-removal", parameters: {} },
    });
    expect(started.status, `job ${i + 1}: ${started.text}`).toBe(202);
  }
  await page.getByRole("radio", { name: /Background removal \(rembg\)/ }).check();
  const refused = page.waitForResponse((r) => r.url().endsWith("/api/processing/start"));
  await page.getByRole("button", { name: "Start" }).click();
  const response = await refused;
  expect([403, 429], `the fourth job answered ${response.status()}`).toContain(response.status());
  await page.getByRole("alert").filter({ hasText: /You have reached your daily job limit\. It resets/ }).waitFor();
  await axe(page, "studio with a quota refusal");
  await shot(page, "quota-refused");
  await page.getByRole("link", { name: "Settings" }).click();
  await page.getByText("3 of 3").waitFor();
  expectNoProblems(page);
});

test("keyboard only, with a visible focus", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  const focused = () =>
    page.evaluate(() => {
      const el = document.activeElement;
      const style = el ? getComputedStyle(el) : null;
      return {
        text: (el?.getAttribute("aria-label") ?? el?.textContent ?? "").trim(),
        tag: el?.tagName ?? "",
        outline: style ? style.outlineStyle !== "none" && style.outlineWidth !== "0px" : false,
      };
    });
  /** Tabs forward until the focused element's text matches; every stop must show focus. */
  async function tabTo(pattern: RegExp) {
    for (let i = 0; i < 40; i++) {
      await page.keyboard.press("Tab");
      const now = await focused();
      expect(now.outline || ["INPUT", "SELECT", "TEXTAREA"].includes(now.tag), `no visible focus on ${now.tag} "${now.text}"`).toBe(true);
      if (pattern.test(now.text)) return;
    }
    throw new Error(`never reached ${String(pattern)}`);
  }
  await page.goto("/register");
  await page.getByRole("heading", { name: "Create your account" }).waitFor();
  await page.keyboard.press("Tab"); // the skip link
  expect((await focused()).text, "the first stop").toBe("Skip to content");
  await page.getByLabel("Email").focus();
  await page.keyboard.type(`keys-${Date.now()}@example.com`);
  await page.keyboard.press("Tab");
  await page.keyboard.type("correct horse battery staple");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Studio" }).waitFor();
  await tabTo(/^Choose files$/);
  await page.goto("/");
  await page.getByRole("heading", { name: "Studio" }).waitFor();
  await tabTo(/^History$/);
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "History" }).waitFor();
  await tabTo(/^Settings$/);
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Preferences" }).waitFor();
  await tabTo(/^Sign out everywhere$/);
  await page.keyboard.press("Enter");
  await page.getByRole("dialog").waitFor();
  await page.keyboard.press("Escape");
  await page.getByRole("dialog").waitFor({ state: "detached" });
  // Radix gives focus back just after the dialog unmounts.
  await page
    .waitForFunction(() => document.activeElement?.textContent.trim() === "Sign out everywhere", null, { timeout: 5_000 })
    .catch(() => {
      throw new Error("focus did not return to the dialog's trigger");
    });
  expectNoProblems(page);
});

test("installable: manifest, service worker, strict CSP; API docs still served", async ({ newPage, server }) => {
  const { page } = await newPage();
  const home = await fetch(server.base + "/");
  const csp = home.headers.get("content-security-policy") ?? "";
  expect(csp, "the CSP").toMatch(/script-src 'self';/);
  expect(csp, "the CSP").not.toMatch(/script-src[^;]*unsafe/);
  const manifest = await fetch(server.base + "/manifest.webmanifest");
  expect(manifest.status, "the manifest").toBe(200);
  expect(manifest.headers.get("content-type") ?? "", "the manifest's type").toMatch(/manifest\+json|application\/json/);
  const installable = (await manifest.json()) as { display?: string; icons?: { sizes?: string }[] };
  expect(installable.display, "the manifest's display").toBe("standalone");
  expect(installable.icons?.some((icon) => icon.sizes === "512x512"), "a 512×512 icon in the manifest").toBe(true);
  const sw = await fetch(server.base + "/sw.js");
  expect(sw.status, "sw.js").toBe(200);
  expect(sw.headers.get("content-type") ?? "", "sw.js's type").toMatch(/javascript/);
  // Unknown app paths get the app; unknown API paths get a problem, not the app.
  const deep = await fetch(server.base + "/jobs/does-not-exist");
  expect(deep.ok, "a deep link's status").toBe(true);
  expect(await deep.text(), "a deep link gets the app").toContain('id="root"');
  const unknown = await fetch(server.base + "/api/nope");
  expect(unknown.status, "an unknown API path").toBe(404);
  expect(unknown.headers.get("content-type") ?? "", "an unknown API path's type").toMatch(/problem\+json/);
  await page.goto("/api/docs/");
  await page.getByText("Atelier API").first().waitFor();
});
