import { describe, expect, it } from "vitest";
import { filenameFromDisposition } from "./saveStream";

describe("filenameFromDisposition", () => {
  it("reads plain and quoted names", () => {
    expect(filenameFromDisposition('attachment; filename="batch_1.zip"')).toBe("batch_1.zip");
    expect(filenameFromDisposition("attachment; filename=batch_2.zip")).toBe("batch_2.zip");
  });
  it("prefers the UTF-8 name", () => {
    expect(filenameFromDisposition(`attachment; filename="photo.zip"; filename*=UTF-8''f%C3%B6to.zip`)).toBe("föto.zip");
  });
  it("is null without a name", () => {
    expect(filenameFromDisposition(null)).toBeNull();
    expect(filenameFromDisposition("attachment")).toBeNull();
  });
});
