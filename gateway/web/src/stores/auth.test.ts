import { beforeEach, describe, expect, it, vi } from "vitest";

// openapi-fetch captures fetch when its client is made: stub it before the modules load.
const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<(request: Request) => Promise<Response>>();
  globalThis.fetch = mock as unknown as typeof fetch;
  return mock;
});

const { useAuth, isAdmin, needsRefresh, refreshDelay, sessionFrom, REFRESH_MARGIN_MS } = await import("./auth");
const { currentToken } = await import("@/api/client");

const tokens = (n: number) => ({
  access_token: `access-${n}`,
  refresh_token: `refresh-${n}`,
  token_type: "Bearer",
  expires_in: 900,
  user: { id: "u1", email: "ada@example.com", role: "user" },
});
const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": status < 400 ? "application/json" : "application/problem+json" } });

beforeEach(() => {
  fetchMock.mockReset();
  localStorage.clear();
  useAuth.setState({ session: null, notice: null });
});

describe("session timing", () => {
  it("refreshes a minute before expiry", () => {
    const session = sessionFrom(tokens(1), 0);
    expect(session.expiresAt).toBe(900_000);
    expect(needsRefresh(session, 900_000 - REFRESH_MARGIN_MS - 1)).toBe(false);
    expect(needsRefresh(session, 900_000 - REFRESH_MARGIN_MS)).toBe(true);
    expect(refreshDelay(session, 0)).toBe(840_000);
    expect(refreshDelay(session, 10_000_000)).toBe(0);
  });
});

describe("role", () => {
  it("knows an administrator from the token response's user", () => {
    expect(isAdmin(null)).toBe(false);
    expect(isAdmin(sessionFrom(tokens(1), 0))).toBe(false);
    const admin = { ...tokens(2), user: { ...tokens(2).user, role: "admin" } };
    expect(isAdmin(sessionFrom(admin, 0))).toBe(true);
  });
});

describe("auth store", () => {
  it("signs in, keeps the session in localStorage, and hands out the access token", async () => {
    fetchMock.mockResolvedValueOnce(json(200, tokens(1)));
    await useAuth.getState().signIn("ada@example.com", "correct horse battery");
    const request = fetchMock.mock.calls[0]?.[0];
    expect(request?.url).toMatch(/\/api\/auth\/login$/);
    expect(await request?.json()).toEqual({ email: "ada@example.com", password: "correct horse battery" });
    expect(useAuth.getState().session?.user.email).toBe("ada@example.com");
    expect(localStorage.getItem("atelier-session")).toContain("refresh-1");
    expect(await currentToken()).toBe("access-1");
  });

  it("surfaces the server's problem on a failed sign-in", async () => {
    fetchMock.mockResolvedValueOnce(json(401, { status: 401, title: "Unauthorized", detail: "invalid email or password" }));
    await expect(useAuth.getState().signIn("ada@example.com", "wrong")).rejects.toMatchObject({
      status: 401,
      message: "Invalid email or password",
    });
    expect(useAuth.getState().session).toBeNull();
  });

  it("refreshes an expiring token once, even when asked twice at the same time", async () => {
    useAuth.setState({ session: { ...sessionFrom(tokens(1), Date.now()), expiresAt: Date.now() + 1000 } });
    fetchMock.mockResolvedValueOnce(json(200, tokens(2)));
    const [a, b] = await Promise.all([currentToken(), currentToken()]);
    expect(a).toBe("access-2");
    expect(b).toBe("access-2");
    expect(fetchMock).toHaveBeenCalledTimes(1);
    expect(await fetchMock.mock.calls[0]?.[0].json()).toEqual({ refresh_token: "refresh-1" });
    expect(useAuth.getState().session?.refreshToken).toBe("refresh-2");
  });

  it("ends the session when the refresh token is refused", async () => {
    useAuth.setState({ session: { ...sessionFrom(tokens(1), Date.now()), expiresAt: Date.now() } });
    fetchMock.mockResolvedValueOnce(json(401, { status: 401, detail: "reused refresh token" }));
    expect(await currentToken()).toBeNull();
    expect(useAuth.getState().session).toBeNull();
    expect(useAuth.getState().notice).toMatch(/session ended/);
  });

  it("keeps the session when the server cannot be reached", async () => {
    useAuth.setState({ session: { ...sessionFrom(tokens(1), Date.now()), expiresAt: Date.now() } });
    fetchMock.mockRejectedValueOnce(new TypeError("Failed to fetch"));
    await useAuth.getState().refresh();
    expect(useAuth.getState().session?.refreshToken).toBe("refresh-1");
  });

  it("signs out locally even when the server does not answer", async () => {
    useAuth.setState({ session: sessionFrom(tokens(1), Date.now()) });
    fetchMock.mockRejectedValueOnce(new TypeError("Failed to fetch"));
    await useAuth.getState().signOut();
    expect(useAuth.getState().session).toBeNull();
    expect(localStorage.getItem("atelier-session")).not.toContain("refresh-1");
  });
});
