import { describe, expect, it } from "vitest";
import { ApiError } from "@/api/problem";
import { isGone, refreshDelay } from "./shares";

describe("the shared page", () => {
  it("treats a 404 as a link that is gone, and nothing else", () => {
    expect(isGone(new ApiError(404, { detail: "this link does not exist, has expired or was revoked" }))).toBe(true);
    expect(isGone(new ApiError(429, {}))).toBe(false);
    expect(isGone(new ApiError(503, {}))).toBe(false);
    expect(isGone(new Error("offline"))).toBe(false);
  });

  it("fetches fresh URLs shortly before they expire", () => {
    const now = Date.parse("2026-12-01T12:00:00Z");
    expect(refreshDelay("2026-12-01T12:15:00Z", now)).toBe(15 * 60_000 - 30_000);
    expect(refreshDelay("2026-12-01T12:00:05Z", now)).toBe(10_000);
    expect(refreshDelay(null, now)).toBeNull();
    expect(refreshDelay("garbage", now)).toBeNull();
  });
});
