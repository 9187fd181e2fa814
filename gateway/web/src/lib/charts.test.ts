import { describe, expect, it } from "vitest";
import { dateRange, formatMs, formatRate, formatStorage, niceMax, stackDays, workflowOrder } from "./charts";

describe("niceMax", () => {
  it("rounds up to 1, 2 or 5 times a power of ten", () => {
    expect(niceMax(0)).toBe(1);
    expect(niceMax(7)).toBe(10);
    expect(niceMax(12)).toBe(20);
    expect(niceMax(20)).toBe(20);
    expect(niceMax(0.031)).toBe(0.05);
    expect(niceMax(4200)).toBe(5000);
  });
});

describe("dateRange", () => {
  it("lists every day, both ends included, across a month", () => {
    expect(dateRange("2026-11-29", "2026-12-02")).toEqual(["2026-11-29", "2026-11-30", "2026-12-01", "2026-12-02"]);
    expect(dateRange("2026-12-02", "2026-12-01")).toEqual([]);
    expect(dateRange("nonsense", "2026-12-01")).toEqual([]);
  });
});

describe("stackDays", () => {
  const rows = [
    { date: "2026-12-01", workflow_id: "upscale", jobs: 3 },
    { date: "2026-12-01", workflow_id: "cutout", jobs: 1 },
    { date: "2026-12-03", workflow_id: "cutout", jobs: 5 },
  ];
  it("orders workflows by jobs and stacks them per day, gaps included", () => {
    const order = workflowOrder(rows);
    expect(order).toEqual(["cutout", "upscale"]);
    const stacks = stackDays(rows, dateRange("2026-12-01", "2026-12-03"), order);
    expect(stacks.map((stack) => stack.total)).toEqual([4, 0, 5]);
    expect(stacks[0]?.segments).toEqual([
      { workflow: "cutout", start: 0, jobs: 1 },
      { workflow: "upscale", start: 1, jobs: 3 },
    ]);
    expect(stacks[1]?.segments).toEqual([]);
  });
});

describe("formats", () => {
  it("reads durations, rates and sizes", () => {
    expect(formatMs(null)).toBe("–");
    expect(formatMs(850)).toBe("850 ms");
    expect(formatMs(1250)).toBe("1.3 s");
    expect(formatMs(42_000)).toBe("42 s");
    expect(formatMs(185_000)).toBe("3 min 5 s");
    expect(formatRate(0.8462)).toBe("84.6%");
    expect(formatRate(1)).toBe("100%");
    expect(formatStorage(0)).toBe("0 B");
    expect(formatStorage(1_500_000_000)).toBe("1.5 GB");
  });
});
