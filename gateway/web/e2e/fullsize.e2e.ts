// Full-size photos through the app as a user works with them: a 6000×4000 photo-like JPEG and a
// 4000×3000 PNG with transparency, drawn in the page and uploaded through the uploader; ESRGAN ×2
// to a 12000×8000 PNG of well over 8 MiB (results over 8 MiB used to fail), background removal on
// the PNG, and AuraSR ×4 refused before it starts because its result would be too large.
import type { Page } from "@playwright/test";
import { api, body, expect, expectNoProblems, register, shot, statusesUntilDone, test, upload, type Image, type Job } from "./fixtures";

const MIB = 1024 * 1024;

interface Drawing {
  width: number;
  height: number;
  type: "image/jpeg" | "image/png";
  photo: boolean;
}

/**
 * Draws an image on an OffscreenCanvas in the page and returns its encoded bytes.
 * `photo`: smooth colour gradients plus per-pixel grain (compresses like a real photo), opaque;
 * otherwise: gradients with an alpha channel (a transparent background round a soft subject).
 */
async function drawInPage(page: Page, drawing: Drawing): Promise<Buffer> {
  const base64 = await page.evaluate(async ({ width, height, type, photo }) => {
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext("2d");
    if (!ctx) throw new Error("no 2D context");
    const image = ctx.createImageData(width, height);
    const data = image.data;
    let seed = 0x2545f491;
    const cx = width * 0.55;
    const cy = height * 0.45;
    const radius = Math.min(width, height) * 0.38;
    for (let y = 0; y < height; y++) {
      const fy = y / height;
      for (let x = 0; x < width; x++) {
        const fx = x / width;
        const i = (y * width + x) * 4;
        let r = 255 * fx * (1 - 0.4 * fy) + 40 * Math.sin(fy * 9);
        let g = 200 * fy + 50 * Math.sin(fx * 7 + fy * 3);
        let b = 255 * (1 - fx) * (0.5 + 0.5 * fy);
        if (photo) {
          // xorshift32 grain, ±12 levels on each channel.
          seed ^= seed << 13;
          seed ^= seed >>> 17;
          seed ^= seed << 5;
          const grain = ((seed >>> 0) % 25) - 12;
          r += grain;
          g += grain;
          b += grain;
          data[i + 3] = 255;
        } else {
          // A soft-edged round subject; the background fully transparent.
          const d = Math.hypot(x - cx, y - cy) / radius;
          data[i + 3] = d < 0.9 ? 255 : d < 1 ? Math.round(255 * (1 - (d - 0.9) * 10)) : 0;
        }
        data[i] = r;
        data[i + 1] = g;
        data[i + 2] = b;
      }
    }
    ctx.putImageData(image, 0, 0);
    const blob = await canvas.convertToBlob(type === "image/jpeg" ? { type, quality: 0.9 } : { type });
    const bytes = new Uint8Array(await blob.arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(binary);
  }, drawing);
  return Buffer.from(base64, "base64");
}

/** Uploads through the app's uploader; resolves with the new image's id once it shows done. */
async function uploadFile(page: Page, name: string, buffer: Buffer, mimeType: string): Promise<string> {
  const answered = page.waitForResponse((r) => r.url().endsWith("/api/images/upload"), { timeout: 60_000 });
  await upload(page, name, buffer, mimeType);
  const response = await answered;
  expect(response.status(), `upload of ${name}: ${await response.text()}`).toBe(201);
  await page.locator("li", { hasText: name }).getByText("Uploaded").waitFor({ timeout: 60_000 });
  return ((await response.json()) as Image).id;
}

/** Opens the studio with this one image picked, as "use as input" does. */
async function studioWith(page: Page, imageId: string) {
  await page.goto(`/?image=${imageId}`);
  await page.locator(`[data-testid=stage-image][data-image-id="${imageId}"]`).waitFor();
  await page.getByTestId("selected-count").filter({ hasText: "1 selected" }).waitFor();
}

/** Runs the picked workflow from the studio; resolves with the finished job from the API. */
async function runToCompletion(page: Page, timeoutMs: number): Promise<Job> {
  await page.getByRole("button", { name: "Start", exact: true }).click();
  await page.waitForURL("**/jobs/*");
  const jobId = page.url().split("/").pop() ?? "";
  const statuses = await statusesUntilDone(page, timeoutMs);
  expect(statuses.at(-1), `job ${jobId} ended ${statuses.join(" → ")}`).toBe("completed");
  return body(await api(page, `/api/processing/${jobId}/status`)) as Job;
}

/** The stored file's PNG header, read from its signed URL (first bytes only): width, height, colour type. */
async function pngHeader(page: Page, url: string) {
  return page.evaluate(async (url) => {
    const response = await fetch(url);
    if (!response.body) throw new Error(`no body from ${url}`);
    const reader = response.body.getReader();
    const head: number[] = [];
    while (head.length < 26) {
      const { value, done } = await reader.read();
      if (done) break;
      head.push(...value.subarray(0, 26 - head.length));
    }
    await reader.cancel();
    const view = new DataView(Uint8Array.from(head).buffer);
    const magic = String.fromCharCode(...head.slice(1, 4));
    return { status: response.status, magic, width: view.getUint32(16), height: view.getUint32(20), colourType: head[25] };
  }, url);
}

/** The compare view shows the result: its image loaded with real pixels. */
async function resultShown(page: Page) {
  await page.getByTestId("compare-after").waitFor({ timeout: 60_000 });
  await page.waitForFunction(
    () => {
      const img = document.querySelector("[data-testid=compare-after]");
      return img instanceof HTMLImageElement && img.complete && img.naturalWidth > 0;
    },
    null,
    { timeout: 60_000 },
  );
}

test("fullsize: 24 MP photo upscaled to a 12000×8000 PNG over 8 MiB, a transparent 12 MP PNG cut out, AuraSR ×4 refused", async ({ newPage }) => {
  // Uploads of 60 s, an upscale of 240 s and a cut-out of 120 s at most, with room to spare.
  test.setTimeout(600_000);
  const { page } = await newPage({ viewport: { width: 1280, height: 900 } });
  await register(page);

  // Full-size files, made by the browser's own encoders.
  const jpeg = await drawInPage(page, { width: 6000, height: 4000, type: "image/jpeg", photo: true });
  expect([jpeg[0], jpeg[1]], "the photo's JPEG signature").toEqual([0xff, 0xd8]);
  expect(jpeg.length, "the photo's size: photo-like").toBeGreaterThan(5 * MIB);
  expect(jpeg.length, "the photo's size: photo-like").toBeLessThan(12 * MIB);
  const png = await drawInPage(page, { width: 4000, height: 3000, type: "image/png", photo: false });
  expect(png.subarray(1, 4).toString(), "the cut-out's PNG signature").toBe("PNG");
  expect(png[25], "the cut-out's colour type: RGBA").toBe(6);
  const photoId = await uploadFile(page, "harbour-6000x4000.jpg", jpeg, "image/jpeg");
  const cutoutId = await uploadFile(page, "vase-4000x3000.png", png, "image/png");
  for (const [id, width, height] of [
    [photoId, 6000, 4000],
    [cutoutId, 4000, 3000],
  ] as const) {
    const image = body(await api(page, `/api/images/${id}`)) as Image;
    expect([image.width, image.height], `upload ${id}'s size`).toEqual([width, height]);
  }

  // AuraSR is ×4 only: 24000×16000 is over the largest result, so it is refused before it starts.
  await studioWith(page, photoId);
  await page.getByRole("radio", { name: /AuraSR upscaler/ }).check();
  const refusal = page.getByTestId("estimate-refusal");
  await refusal.waitFor({ timeout: 30_000 });
  const reason = await refusal.innerText();
  expect(reason, "the refusal").toMatch(/24000×16000/);
  expect(reason, "the refusal").toMatch(/over the largest result/);
  expect(await page.getByRole("button", { name: "Start", exact: true }).isDisabled(), "Start is enabled for a refused AuraSR job").toBe(true);
  await shot(page, "fullsize-aurasr-refused");

  // ESRGAN ×2 to PNG: 12000×8000, far over 8 MiB.
  await page.getByRole("radio", { name: /ESRGAN upscaler/ }).check();
  await page.getByRole("heading", { name: /Parameters: ESRGAN upscaler/ }).waitFor();
  await page.getByRole("spinbutton", { name: "Scale" }).fill("2");
  await page.getByLabel("Model", { exact: true }).selectOption({ label: "RealESRGAN_x2plus" });
  await page.getByLabel("Output format", { exact: true }).selectOption("png");
  await page.getByTestId("estimate-resolution").filter({ hasText: "12000×8000" }).waitFor({ timeout: 30_000 });
  await refusal.waitFor({ state: "detached" });
  const upscaled = await runToCompletion(page, 240_000);
  expect(upscaled.outputs, "ESRGAN's outputs").toHaveLength(1);
  const big = upscaled.outputs[0];
  expect(big, "ESRGAN's result").toMatchObject({ width: 12000, height: 8000, mime_type: "image/png", filename: "harbour-6000x4000_esrgan-upscale.png" });
  expect(big?.file_size ?? 0, "ESRGAN's result's bytes").toBeGreaterThan(8 * MIB);
  const bigHead = await pngHeader(page, big?.url ?? "");
  expect(bigHead, "the stored ESRGAN PNG").toMatchObject({ status: 200, magic: "PNG", width: 12000, height: 8000 });
  await resultShown(page);
  await shot(page, "fullsize-esrgan-done");

  // Background removal keeps the size and the transparency.
  await studioWith(page, cutoutId);
  await page.getByRole("radio", { name: /Background removal \(rembg\)/ }).check();
  await page.getByTestId("estimate-resolution").filter({ hasText: "4000×3000" }).waitFor({ timeout: 30_000 });
  const cut = await runToCompletion(page, 120_000);
  const image = cut.outputs.find((output) => output.role === "image");
  expect(image, `background removal's image output: ${JSON.stringify(cut.outputs)}`).toBeDefined();
  expect(image, "the cut-out result").toMatchObject({ width: 4000, height: 3000, mime_type: "image/png", filename: "vase-4000x3000_rembg-background-removal.png" });
  const cutHead = await pngHeader(page, image?.url ?? "");
  expect(cutHead, "the stored cut-out: a 4000×3000 RGBA PNG").toMatchObject({ status: 200, magic: "PNG", width: 4000, height: 3000, colourType: 6 });
  await resultShown(page);
  await shot(page, "fullsize-rembg-done");

  expectNoProblems(page);
});
