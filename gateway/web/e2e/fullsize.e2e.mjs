// Full-size photos through the app as a user works with them: a 6000×4000 photo-like JPEG and a
// 4000×3000 PNG with transparency, drawn in the page and uploaded through the uploader; ESRGAN ×2
// to a 12000×8000 PNG of well over 8 MiB (results over 8 MiB used to fail), background removal on
// the PNG, and AuraSR ×4 refused before it starts because its result would be too large.
import { apiCall, expect, newPage, register, shot, statusesUntilDone, test, upload } from "./harness.mjs";

const MIB = 1024 * 1024;

/**
 * Draws an image on an OffscreenCanvas in the page and returns its encoded bytes.
 * `photo`: smooth colour gradients plus per-pixel grain (compresses like a real photo), opaque;
 * otherwise: gradients with an alpha channel (a transparent background round a soft subject).
 */
async function drawInPage(page, { width, height, type, photo }) {
  const base64 = await page.evaluate(
    async ({ width, height, type, photo }) => {
      const canvas = new OffscreenCanvas(width, height);
      const ctx = canvas.getContext("2d");
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
    },
    { width, height, type, photo },
  );
  return Buffer.from(base64, "base64");
}

/** Uploads through the app's uploader; resolves with the new image's id once it shows done. */
async function uploadFile(page, name, buffer, mimeType) {
  const answered = page.waitForResponse((r) => r.url().endsWith("/api/images/upload"), { timeout: 60_000 });
  await upload(page, name, buffer, mimeType);
  const response = await answered;
  expect(response.status() === 201, `upload of ${name} answered ${response.status()}: ${await response.text()}`);
  await page.locator("li", { hasText: name }).getByText("Uploaded").waitFor({ timeout: 60_000 });
  return (await response.json()).id;
}

/** Opens the studio with this one image picked, as "use as input" does. */
async function studioWith(page, imageId) {
  await page.goto(`/?image=${imageId}`);
  await page.locator(`[data-testid=stage-image][data-image-id="${imageId}"]`).waitFor();
  await page.getByTestId("selected-count").filter({ hasText: "1 selected" }).waitFor();
}

/** Runs the picked workflow from the studio; resolves with the finished job from the API. */
async function runToCompletion(page, timeoutMs) {
  await page.getByRole("button", { name: "Start", exact: true }).click();
  await page.waitForURL("**/jobs/*");
  const jobId = page.url().split("/").pop();
  const statuses = await statusesUntilDone(page, timeoutMs);
  expect(statuses.at(-1) === "completed", `job ${jobId} ended ${statuses.join(" → ")}`);
  const answer = await apiCall(page, `/api/processing/${jobId}/status`);
  expect(answer.status === 200, `job status answered ${answer.status}`);
  return JSON.parse(answer.body);
}

/** The stored file's PNG header, read from its signed URL (first bytes only): width, height, colour type. */
async function pngHeader(page, url) {
  return page.evaluate(async (url) => {
    const response = await fetch(url);
    const reader = response.body.getReader();
    const head = [];
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
async function resultShown(page) {
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

test("fullsize: 24 MP photo upscaled to a 12000×8000 PNG over 8 MiB, a transparent 12 MP PNG cut out, AuraSR ×4 refused", async () => {
  const { context, page } = await newPage({ viewport: { width: 1280, height: 900 } });
  await register(page);

  // Full-size files, made by the browser's own encoders.
  const jpeg = await drawInPage(page, { width: 6000, height: 4000, type: "image/jpeg", photo: true });
  expect(jpeg[0] === 0xff && jpeg[1] === 0xd8, "the photo is not a JPEG");
  expect(jpeg.length > 5 * MIB && jpeg.length < 12 * MIB, `the photo is ${(jpeg.length / MIB).toFixed(1)} MiB, not photo-like`);
  const png = await drawInPage(page, { width: 4000, height: 3000, type: "image/png", photo: false });
  expect(png.subarray(1, 4).toString() === "PNG" && png[25] === 6, "the cut-out is not an RGBA PNG");
  const photoId = await uploadFile(page, "harbour-6000x4000.jpg", jpeg, "image/jpeg");
  const cutoutId = await uploadFile(page, "vase-4000x3000.png", png, "image/png");
  for (const [id, width, height] of [
    [photoId, 6000, 4000],
    [cutoutId, 4000, 3000],
  ]) {
    const image = JSON.parse((await apiCall(page, `/api/images/${id}`)).body);
    expect(image.width === width && image.height === height, `upload ${id} is ${image.width}×${image.height}, not ${width}×${height}`);
  }

  // AuraSR is ×4 only: 24000×16000 is over the largest result, so it is refused before it starts.
  await studioWith(page, photoId);
  await page.getByRole("radio", { name: /AuraSR upscaler/ }).check();
  const refusal = page.getByTestId("estimate-refusal");
  await refusal.waitFor({ timeout: 30_000 });
  const reason = await refusal.innerText();
  expect(/24000×16000/.test(reason) && /over the largest result/.test(reason), `the refusal says “${reason}”`);
  expect(await page.getByRole("button", { name: "Start", exact: true }).isDisabled(), "Start is enabled for a refused AuraSR job");
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
  const [big] = upscaled.outputs;
  expect(upscaled.outputs.length === 1, `ESRGAN made ${upscaled.outputs.length} outputs`);
  expect(big.width === 12000 && big.height === 8000, `ESRGAN result is ${big.width}×${big.height}`);
  expect(big.file_size > 8 * MIB, `ESRGAN result is only ${big.file_size} bytes`);
  expect(big.mime_type === "image/png", `ESRGAN result is ${big.mime_type}`);
  expect(big.filename === "harbour-6000x4000_esrgan-upscale.png", `ESRGAN result is named ${big.filename}`);
  const bigHead = await pngHeader(page, big.url);
  expect(bigHead.status === 200 && bigHead.magic === "PNG", `ESRGAN result file: ${JSON.stringify(bigHead)}`);
  expect(bigHead.width === 12000 && bigHead.height === 8000, `the stored ESRGAN PNG is ${bigHead.width}×${bigHead.height}`);
  await resultShown(page);
  await shot(page, "fullsize-esrgan-done");

  // Background removal keeps the size and the transparency.
  await studioWith(page, cutoutId);
  await page.getByRole("radio", { name: /Background removal \(rembg\)/ }).check();
  await page.getByTestId("estimate-resolution").filter({ hasText: "4000×3000" }).waitFor({ timeout: 30_000 });
  const cut = await runToCompletion(page, 120_000);
  const image = cut.outputs.find((output) => output.role === "image");
  expect(image, `background removal has no image output: ${JSON.stringify(cut.outputs)}`);
  expect(image.width === 4000 && image.height === 3000, `cut-out result is ${image.width}×${image.height}`);
  expect(image.mime_type === "image/png", `cut-out result is ${image.mime_type}`);
  expect(image.filename === "vase-4000x3000_rembg-background-removal.png", `cut-out result is named ${image.filename}`);
  const cutHead = await pngHeader(page, image.url);
  expect(cutHead.status === 200 && cutHead.magic === "PNG", `cut-out result file: ${JSON.stringify(cutHead)}`);
  expect(cutHead.width === 4000 && cutHead.height === 3000 && cutHead.colourType === 6, `the stored cut-out is not a 4000×3000 RGBA PNG: ${JSON.stringify(cutHead)}`);
  await resultShown(page);
  await shot(page, "fullsize-rembg-done");

  expect(page.problems.length === 0, page.problems.join("\n"));
  await context.close();
});
