import { describe, expect, it } from "vitest";
import { dispositionName, outputLabel, type Output } from "./JobOutputs";

const output = (role: string, id: string): Output => ({
  image_id: id,
  url: `/files/${id}`,
  thumbnail_url: null,
  filename: `garden_flux-image-to-image_${id}.png`,
  mime_type: "image/png",
  width: 1,
  height: 1,
  file_size: 1,
  role,
});

describe("job outputs", () => {
  it("labels images by their place and the mask by its role", () => {
    const one = output("image", "1");
    const outputs = [one, output("image", "2"), output("mask", "3")];
    expect(outputs.map((o) => outputLabel(o, outputs))).toEqual(["Image 1", "Image 2", "Mask"]);
    expect(outputLabel(one, [one])).toBe("Image");
  });

  it("reads the ZIP's name from Content-Disposition", () => {
    expect(dispositionName('attachment; filename="garden_results.zip"')).toBe("garden_results.zip");
    expect(dispositionName("attachment; filename*=UTF-8''Gr%C3%BCn_results.zip; filename=\"Grn_results.zip\"")).toBe("Grün_results.zip");
    expect(dispositionName(null)).toBeNull();
  });
});
