import { describe, expect, it } from "vitest";
import { formatBytes } from "@/api/upload";
import { usageView } from "./usage";

describe("usage against the plan's limits", () => {
  it("shows use of a limit and how full it is", () => {
    expect(usageView(3, 3)).toEqual({ text: "3 of 3", fraction: 1 });
    expect(usageView(1, 4)).toEqual({ text: "1 of 4", fraction: 0.25 });
    expect(usageView(2048, 1024 * 1024, formatBytes).text).toBe(`${formatBytes(2048)} of ${formatBytes(1024 * 1024)}`);
  });

  it("shows a limit of null as unlimited, with no bar to fill", () => {
    expect(usageView(7, null)).toEqual({ text: "7 used · Unlimited", fraction: null });
    expect(usageView(0, undefined).text).toBe("0 used · Unlimited");
  });

  it("shows a limit of 0 as full, not as unlimited", () => {
    expect(usageView(0, 0)).toEqual({ text: "0 of 0", fraction: 1 });
  });
});
