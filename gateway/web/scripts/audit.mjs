// `npm audit --omit=dev` with a justified allowlist (audit-allowlist.json), run by
// `make lint`. Fails on any advisory against a production dependency that the
// allowlist does not name with a reason. A registry that does not answer audit
// requests (a mirror, no network) is reported loudly as a skip, never as a pass.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The advisory ids (GHSA-...) a `npm audit --json` report (version 2) lists, by package. */
export function advisories(report) {
  const found = [];
  for (const [name, entry] of Object.entries(report.vulnerabilities ?? {})) {
    for (const via of entry.via ?? []) {
      // A string names another vulnerable package whose own entry lists the advisory.
      if (typeof via === "string") continue;
      const id = /GHSA-[\w-]+/.exec(via.url ?? "")?.[0] ?? String(via.source);
      found.push({ id, package: name, severity: via.severity, title: via.title });
    }
  }
  return found;
}

/** What the audit says: `error` (the registry did not answer), or the advisories left once the allowlist is applied. */
export function verdict(report, allowlist, today = new Date()) {
  if (report.error || (report.message && !report.vulnerabilities)) {
    return { skipped: report.error?.summary || report.message || "no answer" };
  }
  const allowed = new Map(
    (allowlist.advisories ?? [])
      .filter((entry) => entry.reason && (!entry.until || new Date(entry.until) >= today))
      .map((entry) => [entry.id, entry]),
  );
  const found = advisories(report);
  return {
    refused: found.filter((advisory) => !allowed.has(advisory.id)),
    allowed: found.filter((advisory) => allowed.has(advisory.id)),
  };
}

function main() {
  const here = fileURLToPath(new URL("..", import.meta.url));
  const allowlist = JSON.parse(readFileSync(new URL("../audit-allowlist.json", import.meta.url), "utf8"));
  const run = spawnSync("npm", ["audit", "--omit=dev", "--json"], { cwd: here, encoding: "utf8" });
  let report;
  try {
    report = JSON.parse(run.stdout);
  } catch {
    report = { message: (run.stderr || run.stdout || "no output").trim().split("\n")[0] };
  }
  const result = verdict(report, allowlist);
  if (result.skipped) {
    console.log("npm audit: SKIPPED: the registry did not answer the audit request:");
    console.log(`npm audit:   ${result.skipped}`);
    console.log("npm audit:   run `make lint` where registry.npmjs.org answers to check the web app's dependencies");
    return 0;
  }
  for (const advisory of result.allowed) {
    console.log(`npm audit: allowed ${advisory.id} (${advisory.package}): see audit-allowlist.json`);
  }
  for (const advisory of result.refused) {
    console.error(`npm audit: ${advisory.severity} ${advisory.id} in ${advisory.package}: ${advisory.title}`);
  }
  if (result.refused.length > 0) {
    console.error("npm audit: upgrade, or allowlist with a reason in gateway/web/audit-allowlist.json");
    return 1;
  }
  console.log(`npm audit: clean (${result.allowed.length} allowlisted)`);
  return 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.exit(main());
}
