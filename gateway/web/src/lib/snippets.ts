// "Show code": the request the studio is about to make, as cURL, Python (requests) and
// TypeScript (fetch). The token is never embedded: every snippet reads $ATELIER_TOKEN.
import type { JsonValue } from "@/lib/schemaForm";

export interface StartRequest {
  /** The gateway's origin, e.g. https://atelier.example.com */
  origin: string;
  imageIds: string[];
  workflowId: string;
  parameters: Record<string, JsonValue>;
}

/** One image starts a job, several a batch, exactly as the Start button does. */
export function requestOf(request: StartRequest): { url: string; body: Record<string, JsonValue> } {
  const [first] = request.imageIds;
  if (request.imageIds.length === 1 && first !== undefined) {
    return {
      url: `${request.origin}/api/processing/start`,
      body: { image_id: first, workflow_id: request.workflowId, parameters: request.parameters },
    };
  }
  return {
    url: `${request.origin}/api/processing/batch`,
    body: { image_ids: request.imageIds, workflow_id: request.workflowId, parameters: request.parameters },
  };
}

/** A POSIX shell single-quoted word: safe for any text. */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

export function curlSnippet(request: StartRequest): string {
  const { url, body } = requestOf(request);
  return [
    `curl -sS -X POST ${shellQuote(url)} \\`,
    `  -H "Authorization: Bearer $ATELIER_TOKEN" \\`,
    `  -H 'Content-Type: application/json' \\`,
    `  -d ${shellQuote(JSON.stringify(body, null, 2))}`,
  ].join("\n");
}

/** A JSON value as a Python literal (True/False/None; JSON strings and numbers are valid Python). */
export function pythonLiteral(value: JsonValue, indent = 0): string {
  const pad = "    ".repeat(indent + 1);
  const end = "    ".repeat(indent);
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return Number.isFinite(value) ? JSON.stringify(value) : "None";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((item) => pad + pythonLiteral(item, indent + 1)).join(",\n")},\n${end}]`;
  }
  const entries = Object.entries(value);
  if (entries.length === 0) return "{}";
  return `{\n${entries.map(([key, item]) => `${pad}${JSON.stringify(key)}: ${pythonLiteral(item, indent + 1)}`).join(",\n")},\n${end}}`;
}

export function pythonSnippet(request: StartRequest): string {
  const { url, body } = requestOf(request);
  return [
    "import os",
    "",
    "import requests",
    "",
    "response = requests.post(",
    `    ${JSON.stringify(url)},`,
    `    headers={"Authorization": f"Bearer {os.environ['ATELIER_TOKEN']}"},`,
    `    json=${pythonLiteral(body, 1)},`,
    "    timeout=30,",
    ")",
    "response.raise_for_status()",
    "print(response.json())",
  ].join("\n");
}

export function typescriptSnippet(request: StartRequest): string {
  const { url, body } = requestOf(request);
  const json = JSON.stringify(body, null, 2).replace(/\n/g, "\n  ");
  return [
    `const response = await fetch(${JSON.stringify(url)}, {`,
    `  method: "POST",`,
    `  headers: {`,
    "    Authorization: `Bearer ${process.env.ATELIER_TOKEN}`,",
    `    "Content-Type": "application/json",`,
    `  },`,
    `  body: JSON.stringify(${json}),`,
    `});`,
    "if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);",
    "console.log(await response.json());",
  ].join("\n");
}

export const LANGUAGES = [
  { id: "curl", label: "cURL", make: curlSnippet },
  { id: "python", label: "Python", make: pythonSnippet },
  { id: "typescript", label: "TypeScript", make: typescriptSnippet },
] as const;
