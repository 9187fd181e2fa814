import { describe, expect, it } from "vitest";
import { curlSnippet, pythonLiteral, pythonSnippet, requestOf, shellQuote, typescriptSnippet, type StartRequest } from "./snippets";

const one: StartRequest = {
  origin: "https://atelier.example.com",
  imageIds: ["img-1"],
  workflowId: "esrgan-upscale",
  parameters: { scale: 2, face_enhance: false, model: "RealESRGAN_x2plus", prompt: "it's \"quoted\"", seed: null },
};
const many: StartRequest = { ...one, imageIds: ["img-1", "img-2", "img-3"] };

describe("requestOf", () => {
  it("starts one job for one image", () => {
    expect(requestOf(one)).toEqual({
      url: "https://atelier.example.com/api/processing/start",
      body: { image_id: "img-1", workflow_id: "esrgan-upscale", parameters: one.parameters },
    });
  });
  it("starts a batch for several", () => {
    const { url, body } = requestOf(many);
    expect(url).toBe("https://atelier.example.com/api/processing/batch");
    expect(body.image_ids).toEqual(["img-1", "img-2", "img-3"]);
    expect(body).not.toHaveProperty("image_id");
  });
});

describe("curl", () => {
  it("quotes for the shell and reads the token from the environment", () => {
    const text = curlSnippet(one);
    expect(text).toContain(`-X POST 'https://atelier.example.com/api/processing/start'`);
    expect(text).toContain(`-H "Authorization: Bearer $ATELIER_TOKEN"`);
    // The body is single-quoted; an apostrophe inside closes, escapes and reopens the quote.
    expect(text).toContain(`it'\\''s`);
    const body = text.slice(text.indexOf("-d ") + 3);
    const unquoted = body.slice(1, -1).replace(/'\\''/g, "'");
    expect(JSON.parse(unquoted)).toEqual(requestOf(one).body);
  });
  it("shellQuote leaves nothing to expand", () => {
    expect(shellQuote("$HOME `x` 'y'")).toBe(`'$HOME \`x\` '\\''y'\\'''`);
  });
});

describe("python", () => {
  it("writes Python literals", () => {
    expect(pythonLiteral({ a: true, b: false, c: null, d: [1, "x"] })).toBe('{\n    "a": True,\n    "b": False,\n    "c": None,\n    "d": [\n        1,\n        "x",\n    ],\n}');
    expect(pythonLiteral([])).toBe("[]");
    expect(pythonLiteral({})).toBe("{}");
  });
  it("posts JSON with the token from the environment", () => {
    const text = pythonSnippet(many);
    expect(text).toContain('requests.post(\n    "https://atelier.example.com/api/processing/batch"');
    expect(text).toContain(`f"Bearer {os.environ['ATELIER_TOKEN']}"`);
    expect(text).toContain('"face_enhance": False');
    expect(text).toContain('"seed": None');
    expect(text).toContain('"img-3"');
  });
});

describe("typescript", () => {
  it("fetches with the body as JSON and the token from the environment", () => {
    const text = typescriptSnippet(one);
    expect(text).toContain('await fetch("https://atelier.example.com/api/processing/start"');
    expect(text).toContain("Authorization: `Bearer ${process.env.ATELIER_TOKEN}`");
    const json = text.slice(text.indexOf("JSON.stringify(") + 15, text.indexOf("),\n});"));
    expect(JSON.parse(json)).toEqual(requestOf(one).body);
  });
});

it("never embeds a token", () => {
  for (const make of [curlSnippet, pythonSnippet, typescriptSnippet]) expect(make(one)).not.toMatch(/Bearer ey/);
});
