import { describe, expect, it } from "vitest";
import { ApiError, describeProblem, errorFromResponse, fieldName, messageOf, parseProblem } from "./problem";

describe("problem documents", () => {
  it("reads a problem+json body", async () => {
    const response = new Response(
      JSON.stringify({
        type: "https://atelier.dev/problems/invalid-argument",
        title: "Unprocessable Entity",
        status: 422,
        detail: "the request has invalid fields",
        errors: [{ field: "parameters.strength", pointer: "#/parameters/strength", detail: "must be at most 1" }],
      }),
      { status: 422, headers: { "content-type": "application/problem+json" } },
    );
    const error = await errorFromResponse(response);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(422);
    expect(error.fieldErrors).toEqual({ strength: "must be at most 1" });
    expect(error.message).toBe("The request has invalid fields (strength: must be at most 1)");
  });

  it("explains quota refusals with their limit and reset time", () => {
    const error = new ApiError(429, { status: 429, detail: "quota", limit: "jobs_per_day", resets_at: "2030-01-01T00:00:00Z" });
    expect(error.isQuota).toBe(true);
    expect(error.message).toMatch(/^You have reached your daily job limit\. It resets /);
    expect(new ApiError(403, { limit: "storage_bytes" }).message).toBe("You have reached your storage limit.");
    const tooLarge = new ApiError(413, { status: 413, limit: "max_file_size_bytes", allowed: 20 * 1024 * 1024, tier: "free" });
    expect(tooLarge.isQuota).toBe(true);
    expect(tooLarge.message).toBe("This file is larger than your plan allows (20 MB).");
  });

  it("copes with bodies that are not JSON, and with no connection", () => {
    expect(parseProblem("<html>bad gateway</html>", 502, "Bad Gateway")).toEqual({ status: 502, title: "Bad Gateway" });
    expect(describeProblem(502, parseProblem("", 502))).toBe("HTTP 502");
    expect(describeProblem(0, {})).toMatch(/cannot be reached/);
    expect(messageOf(new TypeError("Failed to fetch"))).toMatch(/cannot be reached/);
    expect(messageOf(new ApiError(415, { detail: "not an image of a supported type" }))).toBe("Not an image of a supported type");
  });

  it("names fields from pointers or dotted paths", () => {
    expect(fieldName({ field: "email", pointer: "#/email", detail: "" })).toBe("email");
    expect(fieldName({ field: "parameters.seed", detail: "" })).toBe("seed");
    expect(fieldName({ field: "/strength", pointer: "#", detail: "" })).toBe("strength");
  });
});
