import { describe, expect, it } from "vitest";
import { DEFAULT_EXPIRY, EXPIRY_CHOICES, expiresIn, sharedFileName, shareUrl, stateAt } from "./shares";

const now = new Date("2026-12-01T12:00:00Z");

describe("share links", () => {
  it("offer a week by default, within the server's bounds", () => {
    expect(EXPIRY_CHOICES.some((choice) => choice.seconds === DEFAULT_EXPIRY)).toBe(true);
    for (const choice of EXPIRY_CHOICES) {
      expect(choice.seconds).toBeGreaterThanOrEqual(60);
      expect(choice.seconds).toBeLessThanOrEqual(90 * 24 * 60 * 60);
    }
  });

  it("say when they expire", () => {
    expect(expiresIn("2026-12-08T12:00:00Z", now)).toBe("in 7 days");
    expect(expiresIn("2026-12-02T13:00:00Z", now)).toBe("in 25 hours");
    expect(expiresIn("2026-12-01T13:00:00Z", now)).toBe("in 60 minutes");
    expect(expiresIn("2026-12-01T12:01:00Z", now)).toBe("in 1 minute");
    expect(expiresIn("2026-12-01T12:00:30Z", now)).toBe("in less than a minute");
    expect(expiresIn("2026-12-01T12:00:00Z", now)).toBe("expired");
    expect(expiresIn("2026-11-30T12:00:00Z", now)).toBe("expired");
    expect(expiresIn(null, now)).toBe("expired");
    expect(expiresIn("not a date", now)).toBe("expired");
  });

  it("turn expired once their time is past, and stay revoked", () => {
    expect(stateAt({ state: "active", expires_at: "2026-12-02T00:00:00Z" }, now)).toBe("active");
    expect(stateAt({ state: "active", expires_at: "2026-12-01T00:00:00Z" }, now)).toBe("expired");
    expect(stateAt({ state: "revoked", expires_at: "2026-12-02T00:00:00Z" }, now)).toBe("revoked");
  });

  it("download under neutral names", () => {
    expect(sharedFileName("image/png")).toBe("atelier-shared.png");
    expect(sharedFileName("image/jpeg", "before")).toBe("atelier-before.jpg");
    expect(sharedFileName("application/x-unknown")).toBe("atelier-shared.img");
  });

  it("point at the share page", () => {
    expect(shareUrl("abc_-1", "https://atelier.example.com/")).toBe("https://atelier.example.com/s/abc_-1");
  });
});
