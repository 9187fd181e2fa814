import { beforeEach, describe, expect, it } from "vitest";
import { checkFile, formatBytes } from "@/api/upload";
import { useUploads } from "./uploads";

beforeEach(() => useUploads.getState().reset());

describe("upload checks", () => {
  it("refuses unsupported types, empty and oversized files before sending", () => {
    expect(checkFile({ name: "a.png", type: "image/png", size: 10 }, 100)).toBeNull();
    expect(checkFile({ name: "a.heic", type: "image/heic", size: 10 }, 100)).toMatch(/not a supported image/);
    expect(checkFile({ name: "a.txt", type: "", size: 10 }, 100)).toMatch(/not a supported image/);
    expect(checkFile({ name: "a.tif", type: "", size: 10 }, 100)).toBeNull();
    expect(checkFile({ name: "a.png", type: "image/png", size: 0 }, 100)).toMatch(/empty/);
    expect(checkFile({ name: "a.png", type: "image/png", size: 101 }, 100)).toMatch(/larger than the 100 B limit/);
    expect(formatBytes(50 * 1024 * 1024)).toBe("50 MB");
    expect(formatBytes(1536)).toBe("1.5 KB");
  });
});

describe("uploads store", () => {
  it("lists refused files with their reason and sends nothing", async () => {
    await useUploads.getState().add([new File(["hello"], "notes.txt", { type: "text/plain" })], 1024);
    const [item] = useUploads.getState().items;
    expect(item).toMatchObject({ name: "notes.txt", status: "refused" });
    expect(item?.error).toMatch(/not a supported image/);
  });

  it("selects and forgets images", () => {
    const image = { id: "i1", kind: "original" } as Parameters<ReturnType<typeof useUploads.getState>["remember"]>[0];
    const store = useUploads.getState();
    store.remember(image);
    store.toggle("i1");
    expect(useUploads.getState().selected).toEqual(["i1"]);
    store.toggle("i1");
    expect(useUploads.getState().selected).toEqual([]);
    store.select(["i1"]);
    store.forget("i1");
    expect(useUploads.getState()).toMatchObject({ selected: [], images: {} });
  });
});
