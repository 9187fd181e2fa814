import { describe, expect, it } from "vitest";
import { errorText, matchesFilters } from "./history";
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

  it("keeps whole days between from and to", () => {
    expect(matchesFilters(item, { from: "2026-03-10", to: "2026-03-10" })).toBe(true);
    expect(matchesFilters(item, { from: "2026-03-11" })).toBe(false);
    expect(matchesFilters(item, { to: "2026-03-09" })).toBe(false);
  });

  it("words errors", () => {
    expect(errorText(null)).toBeNull();
    expect(errorText("boom")).toBe("boom");
    expect(errorText({ code: "fal_error", message: "the model failed" })).toBe("the model failed");
  });
});
