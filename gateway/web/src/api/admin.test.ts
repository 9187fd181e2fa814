import { describe, expect, it } from "vitest";
import { auditExportQuery, figure } from "./admin";

describe("admin helpers", () => {
  it("shows a dash for unknown figures", () => {
    expect(figure(null, String)).toBe("—");
    expect(figure(undefined, String)).toBe("—");
    expect(figure(Number.NaN, String)).toBe("—");
    expect(figure(0.5, (n) => `${n * 100}%`)).toBe("50%");
  });

  it("puts only the filters that are set in the export query", () => {
    expect(auditExportQuery({})).toBe("");
    expect(auditExportQuery({ action: "workflow.", actor_user_id: "" })).toBe("?action=workflow.");
  });
});
