import { beforeEach, describe, expect, it, vi } from "vitest";

// openapi-fetch captures fetch when its client is made: stub it before the modules load.
const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<(request: Request) => Promise<Response>>();
  globalThis.fetch = mock as unknown as typeof fetch;
  return mock;
});

const { getHistory, getProfile, historyQuery } = await import("./users");
type Schemas = import("./client").Schemas;

const json = (body: unknown) => new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });

const image: Schemas["ImageBody"] = {
  id: "i1",
  filename: "i1.png",
  original_filename: "cat.png",
  mime_type: "image/png",
  file_size: 10,
  width: 10,
  height: 5,
  sha256: "00",
  kind: "original",
  scan_status: "not_scanned",
  url: "/files/i1",
  thumbnail_url: null,
};

beforeEach(() => {
  fetchMock.mockReset();
});

describe("the user service's endpoints", () => {
  it("keeps a limit the plan does not have as null, not 0", async () => {
    const served: Schemas["ProfileBody"] = {
      id: "u1",
      email: "ada@example.com",
      display_name: "",
      subscription_tier: "enterprise",
      created_at: "2026-01-01T00:00:00Z",
      usage: { jobs_today: 1, active_jobs: 2, storage_bytes: 10, image_count: 7, jobs_reset_at: "2026-01-02T00:00:00Z" },
      limits: { jobs_per_day: null, concurrent_jobs: 50, parallel_jobs: 10, storage_bytes: null, max_file_size_bytes: 52428800, max_retention_days: 365, high_priority: true },
    };
    fetchMock.mockResolvedValueOnce(json(served));
    const profile = await getProfile();
    expect(profile).toEqual(served);
    expect(profile.limits.jobs_per_day).toBeNull();
    expect(fetchMock.mock.calls[0]?.[0].url).toMatch(/\/api\/users\/profile$/);
  });

  it("asks for a page of history with the filters set and the page token", async () => {
    const item: Schemas["HistoryItem"] = {
      job_id: "j1",
      status: "completed",
      workflow_id: "w",
      workflow_name: "W",
      image_id: "i1",
      parameters: { a: 1 },
      logs: [],
      outputs: [],
      created_at: "2026-01-01T00:00:00Z",
      error: null,
      input_image: image,
      result_image: null,
      result_images: [],
    };
    fetchMock.mockResolvedValueOnce(json({ items: [item], next_page_token: "next" }));
    const page = await getHistory({ status: "failed", q: "fox", from: "" }, "abc", 10);
    expect(page).toEqual({ items: [item], next_page_token: "next" });
    const url = new URL(fetchMock.mock.calls[0]?.[0].url ?? "");
    expect(url.pathname).toBe("/api/users/history");
    expect(Object.fromEntries(url.searchParams)).toEqual({ status: "failed", q: "fox", page_token: "abc", page_size: "10" });
  });

  it("leaves out the page token on the first page", () => {
    expect(historyQuery({ workflow_id: "w" }, null, 24)).toEqual({ workflow_id: "w", page_size: 24 });
  });
});
