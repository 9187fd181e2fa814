import { describe, expect, it } from "vitest";

import { verdict } from "./audit.mjs";

const report = {
  auditReportVersion: 2,
  vulnerabilities: {
    "left-pad": {
      name: "left-pad",
      severity: "high",
      via: [
        {
          source: 1001,
          name: "left-pad",
          title: "Prototype pollution",
          url: "https://github.com/advisories/GHSA-aaaa-bbbb-cccc",
          severity: "high",
        },
      ],
    },
    "uses-left-pad": { name: "uses-left-pad", severity: "high", via: ["left-pad"] },
    "is-odd": {
      name: "is-odd",
      severity: "low",
      via: [{ source: 1002, name: "is-odd", title: "ReDoS", url: "https://github.com/advisories/GHSA-dddd-eeee-ffff", severity: "low" }],
    },
  },
};

describe("npm audit verdict", () => {
  it("refuses every advisory the allowlist does not name", () => {
    const result = verdict(report, { advisories: [] });
    expect(result.refused.map((a) => a.id)).toEqual(["GHSA-aaaa-bbbb-cccc", "GHSA-dddd-eeee-ffff"]);
  });

  it("allows an advisory only with a reason and before its date", () => {
    const allowlist = {
      advisories: [
        { id: "GHSA-aaaa-bbbb-cccc", package: "left-pad", reason: "only pads our own strings", until: "2027-01-01" },
        { id: "GHSA-dddd-eeee-ffff", package: "is-odd" },
      ],
    };
    const result = verdict(report, allowlist, new Date("2026-12-01"));
    expect(result.allowed.map((a) => a.id)).toEqual(["GHSA-aaaa-bbbb-cccc"]);
    expect(result.refused.map((a) => a.id)).toEqual(["GHSA-dddd-eeee-ffff"]);
    const later = verdict(report, allowlist, new Date("2027-02-01"));
    expect(later.refused).toHaveLength(2);
  });

  it("reports a registry without an audit endpoint as skipped, not clean", () => {
    const result = verdict({ message: "405 Method Not Allowed - POST .../advisories/bulk", statusCode: 405 }, { advisories: [] });
    expect(result.skipped).toContain("405");
    expect(verdict({ auditReportVersion: 2, vulnerabilities: {} }, { advisories: [] })).toEqual({ refused: [], allowed: [] });
  });
});
