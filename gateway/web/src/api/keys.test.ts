import { beforeEach, describe, expect, it, vi } from "vitest";

// openapi-fetch captures fetch when its client is made: stub it before the modules load.
const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<(request: Request) => Promise<Response>>();
  globalThis.fetch = mock as unknown as typeof fetch;
  return mock;
});

const { createKey, keyRequest, keyState, listKeys, revokeKey, SCOPE_GROUPS } = await import("./keys");

const now = new Date("2030-05-01T12:00:00Z");

beforeEach(() => {
  fetchMock.mockReset();
});

describe("keyRequest", () => {
  it("names every problem by the field the API uses", () => {
    const result = keyRequest({ name: "  ", scopes: new Set(), expiresOn: "2030-04-30" }, now);
    expect(result).toEqual({
      errors: { name: "Give the key a name.", scopes: "Choose at least one scope.", expires_at: "Choose a day in the future." },
    });
  });

  it("trims the name, orders the scopes and runs the key to the end of the chosen day", () => {
    const result = keyRequest({ name: " ci ", scopes: new Set(["processing:write", "images:read"]), expiresOn: "2030-06-01" }, now);
    if (!("body" in result)) throw new Error("refused");
    expect(result.body.name).toBe("ci");
    expect(result.body.scopes).toEqual(["images:read", "processing:write"]);
    const expires = new Date(result.body.expires_at ?? "");
    expect(expires.getFullYear()).toBe(2030);
    expect(expires.getMonth()).toBe(5);
    expect(expires.getDate()).toBe(1);
    expect(expires.getHours()).toBe(23);
  });

  it("leaves a key without an expiry when none is chosen", () => {
    const result = keyRequest({ name: "ci", scopes: new Set(["images:read"]), expiresOn: "" }, now);
    expect(result).toEqual({ body: { name: "ci", scopes: ["images:read"], expires_at: null } });
  });

  it("offers each scope once", () => {
    const scopes = SCOPE_GROUPS.flatMap((group) => group.scopes.map((entry) => entry.scope));
    expect(new Set(scopes).size).toBe(scopes.length);
    expect(scopes).toContain("keys:write");
  });
});

describe("keyState", () => {
  it("tells revoked and expired keys from working ones", () => {
    expect(keyState({ revoked_at: null, expires_at: null }, now)).toBe("active");
    expect(keyState({ revoked_at: null, expires_at: "2030-06-01T00:00:00Z" }, now)).toBe("active");
    expect(keyState({ revoked_at: null, expires_at: "2030-04-01T00:00:00Z" }, now)).toBe("expired");
    expect(keyState({ revoked_at: "2030-04-01T00:00:00Z", expires_at: "2030-04-01T00:00:00Z" }, now)).toBe("revoked");
  });
});

describe("the keys API", () => {
  const key = {
    id: "k1",
    key: "atl_live_AbC1xyz",
    prefix: "atl_live_AbC1",
    name: "ci",
    scopes: ["images:read"],
    created_at: "2030-05-01T12:00:00Z",
    expires_at: null,
    last_used_at: null,
    revoked_at: null,
    rate_limit_per_minute: null,
  };

  it("creates, lists and revokes through /api/keys", async () => {
    fetchMock.mockResolvedValueOnce(new Response(JSON.stringify(key), { status: 201, headers: { "content-type": "application/json" } }));
    const created = await createKey({ name: "ci", scopes: ["images:read"] });
    expect(created.key).toBe("atl_live_AbC1xyz");
    let request = fetchMock.mock.calls[0]?.[0];
    if (!request) throw new Error("no request");
    expect(request.method).toBe("POST");
    expect(new URL(request.url).pathname).toBe("/api/keys");
    expect(await request.json()).toEqual({ name: "ci", scopes: ["images:read"] });

    fetchMock.mockResolvedValueOnce(
      new Response(JSON.stringify({ keys: [{ ...key, key: undefined }] }), { status: 200, headers: { "content-type": "application/json" } }),
    );
    const listed = await listKeys();
    expect(listed.map((k) => k.prefix)).toEqual(["atl_live_AbC1"]);

    fetchMock.mockResolvedValueOnce(new Response(null, { status: 204 }));
    await revokeKey("k1");
    request = fetchMock.mock.calls[2]?.[0];
    if (!request) throw new Error("no request");
    expect(request.method).toBe("DELETE");
    expect(new URL(request.url).pathname).toBe("/api/keys/k1");
  });

  it("turns a refusal into an error with its fields", async () => {
    const problem = {
      type: "https://atelier.dev/problems/invalid-argument",
      title: "Unprocessable Entity",
      status: 422,
      detail: "the request has invalid fields",
      errors: [{ field: "scopes[0]", pointer: "#/scopes/0", detail: "is not a known scope" }],
    };
    fetchMock.mockResolvedValueOnce(new Response(JSON.stringify(problem), { status: 422, headers: { "content-type": "application/problem+json" } }));
    await expect(createKey({ name: "ci", scopes: ["images:erase"] })).rejects.toMatchObject({ status: 422 });
  });
});
