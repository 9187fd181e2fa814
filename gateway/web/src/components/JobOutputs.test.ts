import { describe, expect, it } from "vitest";
import { outputLabel, type Output } from "./JobOutputs";

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
});
