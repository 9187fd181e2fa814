import { describe, expect, it } from "vitest";
import { checkField, fieldsOf, initialValues, orderedNames, parseNumber, toParameters, unwrapNullable, validate, type JsonSchema } from "./schemaForm";

const schema: JsonSchema = {
  type: "object",
  required: ["prompt"],
  "x-fal-order-properties": ["prompt", "strength", "model", "seed"],
  properties: {
    seed: { type: "integer", title: "Seed", minimum: 0, maximum: 4294967295 },
    strength: { type: "number", title: "Strength", minimum: 0, maximum: 1, default: 0.8 },
    extra: { type: "boolean", default: false },
    model: { type: "string", enum: ["a", "b"], default: "a" },
    prompt: { type: "string", title: "Prompt", maxLength: 1000 },
    steps: { type: ["integer", "null"], minimum: 1, maximum: 50 },
    guidance: { anyOf: [{ type: "number", minimum: 0, maximum: 20 }, { type: "null" }], title: "Guidance" },
    name: { type: "string", maxLength: 40, pattern: "^[a-z]+$" },
  },
};

describe("property order", () => {
  it("follows x-fal-order-properties, then the remaining keys in their order", () => {
    expect(orderedNames(schema)).toEqual(["prompt", "strength", "model", "seed", "extra", "steps", "guidance", "name"]);
  });

  it("ignores listed names that are not properties", () => {
    expect(orderedNames({ properties: { a: {} }, "x-fal-order-properties": ["zz", "a"] })).toEqual(["a"]);
  });
});

describe("field mapping", () => {
  const fields = Object.fromEntries(fieldsOf(schema).map((f) => [f.name, f]));

  it("turns bounded numbers into sliders and wide ranges into number boxes", () => {
    expect(fields.strength).toMatchObject({ kind: "slider", min: 0, max: 1, step: 0.01, numeric: "number", default: 0.8 });
    expect(fields.seed).toMatchObject({ kind: "number", numeric: "integer", step: 1 });
  });

  it("turns enums into selects, booleans into switches, long strings into text areas", () => {
    expect(fields.model).toMatchObject({ kind: "select", options: ["a", "b"] });
    expect(fields.extra).toMatchObject({ kind: "boolean", label: "Extra" });
    expect(fields.prompt).toMatchObject({ kind: "textarea", required: true });
    expect(fields.name).toMatchObject({ kind: "text", pattern: "^[a-z]+$" });
  });

  it("handles nullable fields written as a type list or as anyOf with null", () => {
    expect(fields.steps).toMatchObject({ kind: "slider", nullable: true, numeric: "integer" });
    expect(fields.guidance).toMatchObject({ kind: "slider", nullable: true, label: "Guidance", max: 20 });
    expect(unwrapNullable({ type: "string" }).nullable).toBe(false);
    expect(unwrapNullable({ type: "string", nullable: true }).nullable).toBe(true);
  });
});

describe("values", () => {
  const fields = fieldsOf(schema);

  it("starts from defaults, with remembered values that still fit taking precedence", () => {
    const values = initialValues(fields, { model: "b" }, { strength: 0.3, seed: -5 });
    expect(values).toMatchObject({ strength: 0.3, model: "b", extra: false });
    expect(values.seed).toBeUndefined();
  });

  it("reports what the server would refuse", () => {
    const errors = validate(fields, { prompt: "", strength: 2, seed: 1.5, model: "c", name: "ABC" });
    expect(errors).toEqual({
      prompt: "Required",
      strength: "Must be at most 1",
      seed: "Must be a whole number",
      model: "Pick one of the options",
      name: "Not in the expected format",
    });
    expect(validate(fields, { prompt: "a fox", strength: 0.5, steps: null })).toEqual({});
  });

  it("checks lengths and numbers typed as text", () => {
    const prompt = fields.find((f) => f.name === "prompt");
    if (!prompt) throw new Error("no prompt field");
    expect(checkField(prompt, "x".repeat(1001))).toBe("At most 1000 characters");
    expect(parseNumber("", "number")).toBeUndefined();
    expect(parseNumber("2.5", "number")).toBe(2.5);
    expect(parseNumber("2.5", "integer")).toBe(2);
    expect(Number.isNaN(parseNumber("abc", "number"))).toBe(true);
  });

  it("sends set values, leaves out empty ones, and null only where allowed", () => {
    expect(toParameters(fields, { prompt: "fox", strength: 0.5, seed: undefined, name: "", steps: null, model: null })).toEqual({
      prompt: "fox",
      strength: 0.5,
      steps: null,
    });
  });
});
