import { describe, expect, it } from "vitest";
import { dateProblem, dayRange, errorText, matchesFilters } from "./history";
import type { HistoryItem } from "./users";

const item: HistoryItem = {
  job_id: "j1",
  status: "completed",
  workflow_id: "flux-image-to-image",
  workflow_name: "FLUX image-to-image",
  parameters: { prompt: "a watercolour fox" },
  created_at: "2026-03-10T12:00:00Z",
  completed_at: "2026-03-10T12:00:05Z",
  processing_time_ms: 5000,
  error: null,
  input_image: { id: "i1", filename: "garden.jpg", width: 1, height: 1, url: "/files/i1", thumbnail_url: null },
  result_image: null,
};

describe("history filters applied in the browser (when the server has no history endpoint)", () => {
  it("searches the workflow, file name and parameters", () => {
    expect(matchesFilters(item, { q: "flux" })).toBe(true);
    expect(matchesFilters(item, { q: "GARDEN" })).toBe(true);
    expect(matchesFilters(item, { q: "watercolour" })).toBe(true);
    expect(matchesFilters(item, { q: "upscale" })).toBe(false);
  });

  it("turns days into instants, keeping the whole of the last day", () => {
    const range = dayRange("2026-03-10", "2026-03-10");
    expect(Date.parse(range.to ?? "") - Date.parse(range.from ?? "")).toBe(24 * 3600 * 1000);
    expect(range.from).toBe(new Date(2026, 2, 10).toISOString());
    expect(dayRange(undefined, undefined)).toEqual({});
  });

  it("keeps jobs between from (inclusive) and to (exclusive)", () => {
    expect(matchesFilters(item, { from: "2026-03-10T00:00:00Z", to: "2026-03-11T00:00:00Z" })).toBe(true);
    expect(matchesFilters(item, { from: "2026-03-11T00:00:00Z" })).toBe(false);
    expect(matchesFilters(item, { to: "2026-03-10T12:00:00Z" })).toBe(false);
  });

  it("words errors", () => {
    expect(errorText(null)).toBeNull();
    expect(errorText("boom")).toBe("boom");
    expect(errorText({ code: "fal_error", message: "the model failed" })).toBe("the model failed");
  });

  it("refuses a From date after the To date", () => {
    expect(dateProblem("2026-03-11", "2026-03-10")).toMatch(/From date is after the To date/);
    expect(dateProblem("2026-03-10", "2026-03-10")).toBeNull();
    expect(dateProblem("2026-03-10", undefined)).toBeNull();
  });
});
