// Fails when the first page's JavaScript is over budget (gzipped): the entry chunk, what it
// imports statically, and the route chunks the first page loads (sign-in and the studio),
// with their static imports. Reads Vite's manifest (dist/.vite/manifest.json).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const BUDGET = Number(process.env.FIRST_PAGE_JS_BUDGET ?? 200 * 1024);
const FIRST_PAGE_ROUTES = ["src/pages/LoginPage.tsx", "src/pages/StudioPage.tsx"];

const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const manifest = JSON.parse(readFileSync(join(dist, ".vite", "manifest.json"), "utf8"));
const entries = Object.entries(manifest).filter(([, chunk]) => chunk.isEntry).map(([key]) => key);
const files = new Set();
const visit = (key) => {
  const chunk = manifest[key];
  if (!chunk || files.has(chunk.file)) return;
  files.add(chunk.file);
  for (const dep of chunk.imports ?? []) visit(dep);
};
for (const key of [...entries, ...FIRST_PAGE_ROUTES]) {
  if (!manifest[key]) {
    console.error(`size: ${key} is not in the build manifest`);
    process.exit(1);
  }
  visit(key);
}
let total = 0;
for (const file of [...files].filter((f) => f.endsWith(".js"))) {
  total += gzipSync(readFileSync(join(dist, file)), { level: 9 }).length;
}
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
if (total > BUDGET) {
  console.error(`size: first page JS is ${kb(total)} gzipped, over the ${kb(BUDGET)} budget`);
  process.exit(1);
}
console.log(`size: first page JS is ${kb(total)} gzipped (budget ${kb(BUDGET)})`);
