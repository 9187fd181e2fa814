// Prints the closing line `e2e: N passed, M failed` that `make test` sums with the workspace's
// other test counts. A run that failed outside any test (a broken config, the global timeout)
// counts one failure more, so the sum never reads clean when the run was not.
import type { FullResult, Reporter, Suite, TestCase } from "@playwright/test/reporter";

export default class Summary implements Reporter {
  private tests: TestCase[] = [];

  onBegin(_config: unknown, suite: Suite): void {
    this.tests = suite.allTests();
  }

  onEnd(result: FullResult): void {
    const count = (outcome: ReturnType<TestCase["outcome"]>) => this.tests.filter((test) => test.outcome() === outcome).length;
    const passed = count("expected");
    const skipped = count("skipped");
    let failed = count("unexpected") + count("flaky");
    if (result.status !== "passed" && failed === 0) failed = 1;
    console.log(`e2e: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}; screenshots in test-results/screenshots`);
  }

  printsToStdio(): boolean {
    return false;
  }
}
