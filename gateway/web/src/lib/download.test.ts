import { describe, expect, it } from "vitest";
import { uniqueName } from "./download";

describe("download names", () => {
  it("keeps names unique inside one ZIP", () => {
    const taken = new Set<string>();
    expect(uniqueName("cat.png", taken)).toBe("cat.png");
    expect(uniqueName("cat.png", taken)).toBe("cat (2).png");
    expect(uniqueName("CAT.png", taken)).toBe("CAT (3).png");
    expect(uniqueName("notes", taken)).toBe("notes");
  });
});
