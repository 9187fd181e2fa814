// End-to-end tests of the web app in real headless Chromium against the real `atelier serve`.
// Needs the built app (npm run build), the atelier binary (cargo build -p atelier; found at
// $ATELIER_BIN or $CARGO_TARGET_DIR/debug/atelier) and Chromium (/usr/bin/chromium or $CHROMIUM).
// Every `e2e/*.e2e.mjs` file registers its scenarios with the harness's `test`; they run in file
// order. E2E_ONLY=text runs the scenarios whose name contains it. Screenshots go to
// test-results/screenshots/; the server's log to test-results/atelier.log.
import { readdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { browser, server, shots, tests } from "./harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const only = process.env.E2E_ONLY ?? "";
for (const file of (await readdir(here)).filter((name) => name.endsWith(".e2e.mjs")).sort()) {
  await import(join(here, file));
}

let failed = 0;
let ran = 0;
try {
  for (const { name, fn } of tests) {
    if (only && !name.includes(only)) continue;
    ran++;
    const started = Date.now();
    try {
      await fn();
      console.log(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    } catch (error) {
      failed++;
      console.log(`FAIL ${name}\n     ${String(error?.stack ?? error).split("\n").slice(0, 6).join("\n     ")}`);
      for (const ctx of browser.contexts()) {
        for (const [i, p] of ctx.pages().entries()) await p.screenshot({ path: join(shots, `failure-${tests.indexOf(tests.find((t) => t.name === name))}-${i}.png`) }).catch(() => {});
        await ctx.close().catch(() => {});
      }
    }
  }
} finally {
  await browser.close();
  await server.stop();
}
console.log(`e2e: ${ran - failed} passed, ${failed} failed; screenshots in ${shots}`);
process.exit(failed ? 1 : 0);
