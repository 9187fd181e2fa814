import { describe, expect, it } from "vitest";
import { dateProblem, dayRange } from "./history";

describe("history's date filters", () => {
  it("turns days into instants, keeping the whole of the last day", () => {
    const range = dayRange("2026-03-10", "2026-03-10");
    expect(Date.parse(range.to ?? "") - Date.parse(range.from ?? "")).toBe(24 * 3600 * 1000);
    expect(range.from).toBe(new Date(2026, 2, 10).toISOString());
    expect(dayRange(undefined, undefined)).toEqual({});
  });

  it("refuses a From date after the To date", () => {
    expect(dateProblem("2026-03-11", "2026-03-10")).toMatch(/From date is after the To date/);
    expect(dateProblem("2026-03-10", "2026-03-10")).toBeNull();
    expect(dateProblem("2026-03-10", undefined)).toBeNull();
  });
});
