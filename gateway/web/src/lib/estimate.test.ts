import { describe, expect, it } from "vitest";
import { formatMoney, formatResolution, unitLabel } from "./estimate";

describe("estimate formatting", () => {
  it("keeps the decimals small fal prices need", () => {
    expect(formatMoney(0.0025, "USD")).toBe("$0.0025");
    expect(formatMoney(0.1, "USD")).toBe("$0.10");
    expect(formatMoney(12, "EUR")).toBe("€12.00");
  });
  it("survives an unknown currency code", () => {
    expect(formatMoney(1.5, "not-a-currency")).toBe("1.5000 not-a-currency");
  });
  it("reads fal's units as English", () => {
    expect(unitLabel("megapixels")).toBe("megapixel");
    expect(unitLabel("image")).toBe("image");
    expect(unitLabel("gpu_seconds")).toBe("gpu second");
  });
  it("shows megapixels beside the size", () => {
    expect(formatResolution(6000, 4000)).toBe("6000×4000 (24 MP)");
    expect(formatResolution(1000, 800)).toBe("1000×800 (0.8 MP)");
    expect(formatResolution(96, 64)).toBe("96×64");
  });
});
