// Makes the example images the studio offers (public/examples/): small, photo-like scenes drawn
// with a canvas in headless Chromium (Playwright, already a dev dependency), so no image
// library is needed. Run once and commit the output: node scripts/make-examples.mjs
// Needs Chromium (/usr/bin/chromium or $CHROMIUM).
import { writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "@playwright/test";

const out = join(dirname(fileURLToPath(import.meta.url)), "..", "public", "examples");

// Each scene draws on a 2D context; `noise` adds film grain so upscalers and edge maps have
// texture to work on, as in a photo.
const scenes = {
  // A mountain lake at dusk (JPEG).
  landscape: `(ctx, w, h, rnd) => {
    const sky = ctx.createLinearGradient(0, 0, 0, h * 0.6);
    sky.addColorStop(0, "#1e3a8a"); sky.addColorStop(0.55, "#f97316"); sky.addColorStop(1, "#fde68a");
    ctx.fillStyle = sky; ctx.fillRect(0, 0, w, h);
    const sun = ctx.createRadialGradient(w * 0.68, h * 0.5, 4, w * 0.68, h * 0.5, h * 0.28);
    sun.addColorStop(0, "rgba(255,247,214,1)"); sun.addColorStop(0.2, "rgba(255,220,150,0.9)"); sun.addColorStop(1, "rgba(255,180,90,0)");
    ctx.fillStyle = sun; ctx.fillRect(0, 0, w, h);
    const ridge = (base, amp, color, seed) => {
      ctx.beginPath(); ctx.moveTo(0, h);
      for (let x = 0; x <= w; x += 4) {
        const y = base + Math.sin(x / (90 + seed * 20) + seed) * amp + Math.sin(x / 23 + seed * 3) * amp * 0.25 + (rnd() - 0.5) * amp * 0.12;
        ctx.lineTo(x, y);
      }
      ctx.lineTo(w, h); ctx.closePath(); ctx.fillStyle = color; ctx.fill();
    };
    ridge(h * 0.5, h * 0.09, "#6b4e71", 1);
    ridge(h * 0.58, h * 0.07, "#3f3356", 2);
    ridge(h * 0.66, h * 0.05, "#1f2937", 3);
    const lake = ctx.createLinearGradient(0, h * 0.7, 0, h);
    lake.addColorStop(0, "#fbbf77"); lake.addColorStop(0.3, "#7c4a6b"); lake.addColorStop(1, "#0f172a");
    ctx.fillStyle = lake; ctx.fillRect(0, h * 0.72, w, h * 0.28);
    ctx.globalAlpha = 0.35;
    for (let i = 0; i < 40; i++) { ctx.fillStyle = "#fff7d6"; ctx.fillRect(w * 0.68 - 60 + rnd() * 120, h * 0.74 + i * 3.4, 10 + rnd() * 50, 1.5); }
    ctx.globalAlpha = 1;
    for (let i = 0; i < 26; i++) {
      const x = rnd() * w, base = h * 0.72, th = 20 + rnd() * 50;
      ctx.fillStyle = "#0b1220"; ctx.beginPath(); ctx.moveTo(x, base - th); ctx.lineTo(x - th * 0.22, base); ctx.lineTo(x + th * 0.22, base); ctx.fill();
    }
  }`,
  // A still life: a bowl of oranges on a table by a window (JPEG).
  "still-life": `(ctx, w, h, rnd) => {
    const wall = ctx.createLinearGradient(0, 0, w, h);
    wall.addColorStop(0, "#e7e0d4"); wall.addColorStop(1, "#9c8f7e");
    ctx.fillStyle = wall; ctx.fillRect(0, 0, w, h);
    const light = ctx.createRadialGradient(w * 0.2, h * 0.15, 10, w * 0.2, h * 0.15, w * 0.8);
    light.addColorStop(0, "rgba(255,250,235,0.8)"); light.addColorStop(1, "rgba(255,250,235,0)");
    ctx.fillStyle = light; ctx.fillRect(0, 0, w, h);
    const table = ctx.createLinearGradient(0, h * 0.62, 0, h);
    table.addColorStop(0, "#7c4a2d"); table.addColorStop(1, "#3b2414");
    ctx.fillStyle = table; ctx.fillRect(0, h * 0.62, w, h * 0.38);
    for (let i = 0; i < 60; i++) { ctx.strokeStyle = "rgba(30,15,5," + (0.05 + rnd() * 0.12) + ")"; ctx.lineWidth = 1 + rnd() * 2; const y = h * 0.63 + rnd() * h * 0.37; ctx.beginPath(); ctx.moveTo(0, y); ctx.bezierCurveTo(w * 0.3, y + rnd() * 8 - 4, w * 0.6, y + rnd() * 8 - 4, w, y); ctx.stroke(); }
    ctx.fillStyle = "rgba(0,0,0,0.35)"; ctx.beginPath(); ctx.ellipse(w * 0.55, h * 0.8, w * 0.3, h * 0.05, 0, 0, Math.PI * 2); ctx.fill();
    const fruit = (x, y, r) => {
      const g = ctx.createRadialGradient(x - r * 0.35, y - r * 0.4, r * 0.1, x, y, r);
      g.addColorStop(0, "#fed7aa"); g.addColorStop(0.35, "#fb923c"); g.addColorStop(1, "#9a3412");
      ctx.fillStyle = g; ctx.beginPath(); ctx.arc(x, y, r, 0, Math.PI * 2); ctx.fill();
      ctx.fillStyle = "#365314"; ctx.beginPath(); ctx.ellipse(x + r * 0.1, y - r * 0.95, r * 0.18, r * 0.08, -0.5, 0, Math.PI * 2); ctx.fill();
    };
    const r = w * 0.085;
    [[0.45, 0.6], [0.57, 0.58], [0.68, 0.61], [0.51, 0.52], [0.63, 0.51]].forEach(([fx, fy]) => fruit(w * fx, h * fy, r));
    const bowl = ctx.createLinearGradient(w * 0.3, 0, w * 0.8, 0);
    bowl.addColorStop(0, "#1e3a8a"); bowl.addColorStop(0.4, "#60a5fa"); bowl.addColorStop(1, "#172554");
    ctx.fillStyle = bowl; ctx.beginPath(); ctx.moveTo(w * 0.3, h * 0.62); ctx.quadraticCurveTo(w * 0.55, h * 0.95, w * 0.8, h * 0.62); ctx.closePath(); ctx.fill();
    ctx.strokeStyle = "rgba(255,255,255,0.5)"; ctx.lineWidth = 3; ctx.beginPath(); ctx.ellipse(w * 0.55, h * 0.62, w * 0.25, h * 0.02, 0, 0, Math.PI * 2); ctx.stroke();
    fruit(w * 0.22, h * 0.76, r * 0.9);
  }`,
  // A glossy apple on nothing: a PNG whose background is transparent (JPEG has no alpha).
  "apple-cutout": `(ctx, w, h, rnd) => {
    ctx.clearRect(0, 0, w, h);
    const cx = w / 2, cy = h * 0.55, r = w * 0.33;
    ctx.fillStyle = "rgba(0,0,0,0.25)"; ctx.beginPath(); ctx.ellipse(cx, h * 0.9, r * 0.9, r * 0.16, 0, 0, Math.PI * 2); ctx.fill();
    ctx.beginPath();
    ctx.moveTo(cx, cy - r * 0.75);
    ctx.bezierCurveTo(cx + r * 0.6, cy - r * 1.15, cx + r * 1.25, cy - r * 0.5, cx + r * 0.95, cy + r * 0.35);
    ctx.bezierCurveTo(cx + r * 0.75, cy + r * 0.95, cx + r * 0.3, cy + r * 1.05, cx, cy + r * 0.85);
    ctx.bezierCurveTo(cx - r * 0.3, cy + r * 1.05, cx - r * 0.75, cy + r * 0.95, cx - r * 0.95, cy + r * 0.35);
    ctx.bezierCurveTo(cx - r * 1.25, cy - r * 0.5, cx - r * 0.6, cy - r * 1.15, cx, cy - r * 0.75);
    const body = ctx.createRadialGradient(cx - r * 0.35, cy - r * 0.35, r * 0.05, cx, cy, r * 1.1);
    body.addColorStop(0, "#fecaca"); body.addColorStop(0.25, "#ef4444"); body.addColorStop(0.8, "#991b1b"); body.addColorStop(1, "#450a0a");
    ctx.fillStyle = body; ctx.fill();
    ctx.save(); ctx.clip();
    for (let i = 0; i < 120; i++) { ctx.strokeStyle = "rgba(253,224,71," + rnd() * 0.18 + ")"; ctx.lineWidth = 1; const x = cx - r + rnd() * 2 * r; ctx.beginPath(); ctx.moveTo(x, cy - r); ctx.quadraticCurveTo(x + (rnd() - 0.5) * 20, cy, x, cy + r); ctx.stroke(); }
    ctx.fillStyle = "rgba(255,255,255,0.55)"; ctx.beginPath(); ctx.ellipse(cx - r * 0.45, cy - r * 0.35, r * 0.12, r * 0.22, 0.5, 0, Math.PI * 2); ctx.fill();
    ctx.restore();
    ctx.strokeStyle = "#422006"; ctx.lineWidth = r * 0.07; ctx.lineCap = "round"; ctx.beginPath(); ctx.moveTo(cx, cy - r * 0.7); ctx.quadraticCurveTo(cx + r * 0.05, cy - r * 1.0, cx + r * 0.18, cy - r * 1.15); ctx.stroke();
    const leaf = ctx.createLinearGradient(cx, cy - r * 1.2, cx + r * 0.6, cy - r * 0.9);
    leaf.addColorStop(0, "#4d7c0f"); leaf.addColorStop(1, "#a3e635");
    ctx.fillStyle = leaf; ctx.beginPath(); ctx.moveTo(cx + r * 0.12, cy - r * 0.95); ctx.quadraticCurveTo(cx + r * 0.45, cy - r * 1.35, cx + r * 0.75, cy - r * 1.05); ctx.quadraticCurveTo(cx + r * 0.4, cy - r * 0.8, cx + r * 0.12, cy - r * 0.95); ctx.fill();
  }`,
};

const list = [
  { name: "landscape", file: "mountain-lake.jpg", width: 768, height: 512, type: "image/jpeg", quality: 0.86 },
  { name: "still-life", file: "still-life.jpg", width: 640, height: 640, type: "image/jpeg", quality: 0.86 },
  { name: "apple-cutout", file: "apple-cutout.png", width: 512, height: 512, type: "image/png" },
];

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--headless", "--no-sandbox"] });
const page = await browser.newPage();
for (const item of list) {
  const base64 = await page.evaluate(
    async ({ scene, item }) => {
      let seed = 42;
      const rnd = () => ((seed = (seed * 1664525 + 1013904223) % 4294967296) / 4294967296);
      const canvas = new OffscreenCanvas(item.width, item.height);
      const ctx = canvas.getContext("2d");
      new Function(`return ${scene}`)()(ctx, item.width, item.height, rnd);
      // Film grain on the opaque pixels.
      const data = ctx.getImageData(0, 0, item.width, item.height);
      for (let i = 0; i < data.data.length; i += 4) {
        if (data.data[i + 3] === 0 || item.type === "image/png") continue;
        const n = (rnd() - 0.5) * 14;
        for (let c = 0; c < 3; c++) data.data[i + c] = Math.max(0, Math.min(255, data.data[i + c] + n));
      }
      ctx.putImageData(data, 0, 0);
      const blob = await canvas.convertToBlob({ type: item.type, quality: item.quality });
      const bytes = new Uint8Array(await blob.arrayBuffer());
      let text = "";
      for (const b of bytes) text += String.fromCharCode(b);
      return btoa(text);
    },
    { scene: scenes[item.name], item },
  );
  const bytes = Buffer.from(base64, "base64");
  await writeFile(join(out, item.file), bytes);
  console.log(`${item.file}: ${item.width}×${item.height}, ${(bytes.length / 1024).toFixed(0)} KB`);
}
await browser.close();
