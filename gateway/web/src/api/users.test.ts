import { describe, expect, it } from "vitest";
import { historyQuery, normalizeHistoryItem, normalizeProfile } from "./users";

describe("user service shapes", () => {
  it("reads the profile of the contract", () => {
    const profile = normalizeProfile({
      id: "u1",
      email: "ada@example.com",
      display_name: "Ada",
      subscription_tier: "pro",
      created_at: "2026-01-01T00:00:00Z",
      usage: { jobs_today: 3, concurrent_jobs: 1, storage_bytes: 2048, images: 4 },
      limits: { jobs_per_day: 500, concurrent_jobs: 5, storage_bytes: 1e10, max_file_bytes: 1e8, max_retention_days: 90 },
      jobs_reset_at: "2026-01-02T00:00:00Z",
    });
    expect(profile).toMatchObject({ subscription_tier: "pro", usage: { images: 4, concurrent_jobs: 1 }, limits: { max_file_bytes: 1e8 } });
    expect(profile.jobs_reset_at).toBe("2026-01-02T00:00:00Z");
  });

  it("reads the profile as the gateway serves it, unlimited limits as 0", () => {
    const profile = normalizeProfile({
      id: "u1",
      email: "ada@example.com",
      display_name: "",
      subscription_tier: "enterprise",
      usage: { jobs_today: 1, active_jobs: 2, storage_bytes: 10, image_count: 7, jobs_reset_at: "2026-01-02T00:00:00Z" },
      limits: { jobs_per_day: null, concurrent_jobs: 50, storage_bytes: null, max_file_size_bytes: 52428800, max_retention_days: 365 },
    });
    expect(profile.usage).toEqual({ jobs_today: 1, concurrent_jobs: 2, storage_bytes: 10, images: 7 });
    expect(profile.limits).toMatchObject({ jobs_per_day: 0, storage_bytes: 0, max_file_bytes: 52428800 });
    expect(profile.jobs_reset_at).toBe("2026-01-02T00:00:00Z");
  });

  it("reads history items flat or with the job nested", () => {
    const image = { id: "i1", filename: "i1.png", original_filename: "cat.png", width: 10, height: 5, url: "/files/i1", thumbnail_url: null };
    const flat = normalizeHistoryItem({
      job_id: "j1",
      status: "completed",
      workflow_id: "w",
      workflow_name: "W",
      parameters: { a: 1 },
      created_at: "2026-01-01T00:00:00Z",
      completed_at: null,
      processing_time_ms: 5,
      error: null,
      input_image: { id: "i1", filename: "cat.png", width: 10, height: 5, url: "/files/i1", thumbnail_url: null },
      result_image: null,
    });
    const nested = normalizeHistoryItem({
      job: { job_id: "j1", status: "completed", workflow_id: "w", parameters: { a: 1 }, created_at: "2026-01-01T00:00:00Z", processing_time_ms: 5, logs: [] },
      workflow_name: "W",
      input_image: image,
      result_image: null,
      result_images: [],
    });
    expect(nested).toEqual(flat);
  });

  it("sends filters and the page token", () => {
    expect(historyQuery({ status: "failed", q: "fox", from: "" }, "abc", 10)).toBe("status=failed&q=fox&cursor=abc&page_token=abc&page_size=10");
  });
});
