// End-to-end tests: the built app in Debian's headless Chromium (never a downloaded browser)
// against the real `atelier serve`, which e2e/fixtures.ts starts once per worker. One worker:
// the tests share the server's fal simulator and turn its knobs. A failed test keeps its trace
// (npx playwright show-trace test-results/<test>/trace.zip) and a screenshot of each page.
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "e2e",
  testMatch: "*.e2e.ts",
  outputDir: "test-results",
  workers: 1,
  fullyParallel: false,
  // A test that passes only on a second try is a failure to fix, not to hide.
  retries: 0,
  forbidOnly: true,
  timeout: 300_000,
  reporter: [["list"], ["./e2e/summary.ts"]],
  use: {
    browserName: "chromium",
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    },
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
  },
});
