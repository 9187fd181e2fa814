import { describe, expect, it } from "vitest";

import { scanLabel } from "./scan";

describe("scanLabel", () => {
  it("names the scanner and the time of a clean scan", () => {
    const at = "2026-12-06T10:00:00Z";
    expect(scanLabel({ scan_status: "clean", scanner: "clamd", scanned_at: at }, "en-GB")).toBe(
      `Malware scan: clean (clamd), ${new Date(at).toLocaleString("en-GB")}`,
    );
    expect(scanLabel({ scan_status: "clean", scanner: null, scanned_at: null })).toBe("Malware scan: clean");
  });

  it("never implies a scan that did not run", () => {
    expect(scanLabel({ scan_status: "not_scanned", scanner: null, scanned_at: null })).toBe(
      "Malware scan: not scanned on this server",
    );
  });
});
