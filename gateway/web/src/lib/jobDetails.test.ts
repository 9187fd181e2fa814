import { describe, expect, it } from "vitest";
import { formatCost, formatValue, parameterRows } from "./jobDetails";

describe("job details", () => {
  it("labels parameters from the schema, in its order, with plain values", () => {
    const schema = {
      type: "object",
      properties: {
        model: { type: "string", title: "Model" },
        scale: { type: "number", title: "Scale" },
        face: { type: "boolean", title: "Enhance faces" },
      },
      "x-fal-order-properties": ["scale", "model", "face"],
    };
    const rows = parameterRows(schema, { model: "RealESRGAN_x2plus", face: false, scale: 2, extra_thing: "x" });
    expect(rows).toEqual([
      { name: "scale", label: "Scale", value: "2" },
      { name: "model", label: "Model", value: "RealESRGAN_x2plus" },
      { name: "face", label: "Enhance faces", value: "no" },
      { name: "extra_thing", label: "Extra thing", value: "x" },
    ]);
  });

  it("formats values and costs", () => {
    expect(formatValue(true)).toBe("yes");
    expect(formatValue(null)).toBe("—");
    expect(formatValue([1, "a"])).toBe("1, a");
    expect(formatCost({ amount: 0.0025, currency: "USD" })).toMatch(/0\.0025/);
    expect(formatCost({ amount: 0.00144, currency: "USD" })).toMatch(/0\.00144/);
    expect(formatCost({ amount: 1.5, currency: "USD" })).toMatch(/1\.50/);
  });
});
