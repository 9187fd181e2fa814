import { beforeEach, describe, expect, it, vi } from "vitest";

// openapi-fetch captures fetch when its client is made: stub it before the modules load.
const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<(request: Request) => Promise<Response>>();
  globalThis.fetch = mock as unknown as typeof fetch;
  return mock;
});

const { useSettings, DEFAULT_SETTINGS, resolveTheme } = await import("./settings");

const doc = (revision: number, settings: object) => ({ revision, updated_at: "2026-01-01T00:00:00Z", settings: { ...DEFAULT_SETTINGS, ...settings } });
const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });

beforeEach(() => {
  fetchMock.mockReset();
  localStorage.clear();
  useSettings.getState().reset();
});

describe("settings store", () => {
  it("keeps changes on this device while the settings could not be read", async () => {
    fetchMock.mockRejectedValue(new TypeError("Failed to fetch"));
    await expect(useSettings.getState().load()).rejects.toThrow("Failed to fetch");
    expect(useSettings.getState().synced).toBe(false);
    await useSettings.getState().rememberParameters("esrgan-upscale", { scale: 4 });
    // Not written over the server's settings, which were never read.
    expect(fetchMock).toHaveBeenCalledTimes(1);
    expect(useSettings.getState().settings.workflow_defaults).toEqual({ "esrgan-upscale": { scale: 4 } });
    expect(localStorage.getItem("atelier-settings")).toContain('"scale":4');
  });

  it("saves with If-Match and retries once on a stale ETag, keeping the change", async () => {
    fetchMock.mockResolvedValueOnce(json(200, doc(1, { theme: "light" }), { etag: '"1"' }));
    await useSettings.getState().load();
    expect(useSettings.getState()).toMatchObject({ synced: true, etag: '"1"' });

    fetchMock
      .mockResolvedValueOnce(json(412, { status: 412, detail: "stale" }))
      .mockResolvedValueOnce(json(200, doc(2, { theme: "light", retention_days: 7 }), { etag: '"2"' }))
      .mockResolvedValueOnce(json(200, doc(3, { theme: "dark", retention_days: 7 }), { etag: '"3"' }));
    await useSettings.getState().setTheme("dark");

    const firstPut = fetchMock.mock.calls[1]?.[0];
    expect(firstPut?.method).toBe("PUT");
    expect(firstPut?.headers.get("if-match")).toBe('"1"');
    const retry = fetchMock.mock.calls[3]?.[0];
    expect(retry?.headers.get("if-match")).toBe('"2"');
    expect(await retry?.json()).toMatchObject({ theme: "dark", retention_days: 7, schema_version: 1 });
    expect(useSettings.getState()).toMatchObject({ etag: '"3"', settings: { theme: "dark", retention_days: 7 } });
  });

  it("reports field errors from the server", async () => {
    fetchMock.mockResolvedValueOnce(json(200, doc(1, {}), { etag: '"1"' }));
    await useSettings.getState().load();
    fetchMock.mockResolvedValueOnce(
      json(422, { status: 422, detail: "the request has invalid fields", errors: [{ field: "retention_days", pointer: "#/retention_days", detail: "must be at most 30" }] }),
    );
    await expect(useSettings.getState().update({ retention_days: 90 })).rejects.toMatchObject({
      status: 422,
      fieldErrors: { retention_days: "must be at most 30" },
    });
    expect(useSettings.getState().settings.retention_days).toBeNull();
  });

  it("resolves the system theme", () => {
    expect(resolveTheme("system", true)).toBe("dark");
    expect(resolveTheme("system", false)).toBe("light");
    expect(resolveTheme("light", true)).toBe("light");
  });
});
