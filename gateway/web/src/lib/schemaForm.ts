// Maps a workflow's parameter schema (JSON Schema 2020-12, as the catalogue serves it) to
// form fields, and checks values the way the server will, so errors show while typing.
// Property order: JSON objects lose key order on the way through protobuf Structs, so the
// workflow service keeps display order in `x-fal-order-properties`; keys not listed follow.

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type Values = Record<string, JsonValue | undefined>;

export interface JsonSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  default?: JsonValue;
  enum?: JsonValue[];
  const?: JsonValue;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  multipleOf?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  nullable?: boolean;
  "x-fal-order-properties"?: string[];
  [key: string]: unknown;
}

export type FieldKind = "slider" | "number" | "text" | "textarea" | "select" | "boolean" | "json";

export interface FieldSpec {
  name: string;
  label: string;
  description?: string;
  kind: FieldKind;
  /** `integer` or `number` for numeric fields. */
  numeric?: "integer" | "number";
  min?: number;
  max?: number;
  step?: number;
  maxLength?: number;
  minLength?: number;
  pattern?: string;
  options?: JsonValue[];
  required: boolean;
  nullable: boolean;
  default?: JsonValue;
}

/** The largest range still shown as a slider; wider ones (seeds) get a number box. */
const SLIDER_MAX_RANGE = 10_000;
/** Strings longer than this may be get a multi-line box (prompts). */
const TEXTAREA_FROM = 200;

/** Property names in display order. */
export function orderedNames(schema: JsonSchema): string[] {
  const properties = Object.keys(schema.properties ?? {});
  const order = (schema["x-fal-order-properties"] ?? []).filter((name) => properties.includes(name));
  return [...order, ...properties.filter((name) => !order.includes(name))];
}

/** The schema without its null branch, and whether null is allowed. */
export function unwrapNullable(schema: JsonSchema): { schema: JsonSchema; nullable: boolean } {
  if (Array.isArray(schema.type)) {
    const types = schema.type.filter((t) => t !== "null");
    const nullable = types.length !== schema.type.length;
    return { schema: { ...schema, type: types.length === 1 ? types[0] : types }, nullable: nullable || !!schema.nullable };
  }
  for (const key of ["anyOf", "oneOf"] as const) {
    const branches = schema[key];
    if (branches) {
      const rest = branches.filter((b) => b.type !== "null");
      if (rest.length === 1 && rest.length !== branches.length) {
        const { [key]: _dropped, ...outer } = schema;
        return { schema: { ...outer, ...rest[0] }, nullable: true };
      }
    }
  }
  return { schema, nullable: !!schema.nullable };
}

function niceStep(min: number, max: number): number {
  const range = max - min;
  if (range <= 1) return 0.01;
  if (range <= 20) return 0.1;
  if (range <= 200) return 0.5;
  return 1;
}

function humanise(name: string): string {
  const words = name.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function fieldsOf(root: JsonSchema): FieldSpec[] {
  const required = new Set(root.required ?? []);
  return orderedNames(root).map((name) => {
    const raw = root.properties?.[name] ?? {};
    const { schema, nullable } = unwrapNullable(raw);
    const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
    const field: FieldSpec = {
      name,
      label: schema.title ?? raw.title ?? humanise(name),
      required: required.has(name),
      nullable,
      kind: "json",
    };
    const description = schema.description ?? raw.description;
    if (description) field.description = description;
    const def = raw.default !== undefined ? raw.default : schema.default;
    if (def !== undefined) field.default = def;

    if (schema.enum) {
      field.kind = "select";
      field.options = schema.enum.filter((option) => option !== null);
    } else if (type === "boolean") {
      field.kind = "boolean";
    } else if (type === "integer" || type === "number") {
      field.numeric = type;
      const min = schema.minimum ?? (schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum : undefined);
      const max = schema.maximum ?? (schema.exclusiveMaximum !== undefined ? schema.exclusiveMaximum : undefined);
      if (min !== undefined) field.min = min;
      if (max !== undefined) field.max = max;
      const step = schema.multipleOf ?? (type === "integer" ? 1 : min !== undefined && max !== undefined ? niceStep(min, max) : undefined);
      if (step !== undefined) field.step = step;
      field.kind = min !== undefined && max !== undefined && max - min <= SLIDER_MAX_RANGE ? "slider" : "number";
    } else if (type === "string") {
      field.kind = (schema.maxLength ?? Infinity) > TEXTAREA_FROM ? "textarea" : "text";
      if (schema.maxLength !== undefined) field.maxLength = schema.maxLength;
      if (schema.minLength !== undefined) field.minLength = schema.minLength;
      if (schema.pattern !== undefined) field.pattern = schema.pattern;
    }
    return field;
  });
}

/** Starting values: remembered ones that still fit, else the workflow's defaults. */
export function initialValues(fields: FieldSpec[], defaults: Values = {}, remembered: Values = {}): Values {
  const values: Values = {};
  for (const field of fields) {
    const candidate = remembered[field.name];
    if (candidate !== undefined && checkField(field, candidate) === null) {
      values[field.name] = candidate;
    } else if (defaults[field.name] !== undefined) {
      values[field.name] = defaults[field.name];
    } else if (field.default !== undefined) {
      values[field.name] = field.default;
    }
  }
  return values;
}

/** What is wrong with one value, or null. */
export function checkField(field: FieldSpec, value: JsonValue | undefined): string | null {
  if (value === undefined || value === "") {
    return field.required ? "Required" : null;
  }
  if (value === null) return field.nullable || !field.required ? null : "Required";
  switch (field.kind) {
    case "select":
      return field.options?.some((option) => option === value) ? null : "Pick one of the options";
    case "boolean":
      return typeof value === "boolean" ? null : "Must be on or off";
    case "slider":
    case "number": {
      if (typeof value !== "number" || Number.isNaN(value)) return "Must be a number";
      if (field.numeric === "integer" && !Number.isInteger(value)) return "Must be a whole number";
      if (field.min !== undefined && value < field.min) return `Must be at least ${field.min}`;
      if (field.max !== undefined && value > field.max) return `Must be at most ${field.max}`;
      return null;
    }
    case "text":
    case "textarea": {
      if (typeof value !== "string") return "Must be text";
      if (field.minLength !== undefined && value.length < field.minLength) return `At least ${field.minLength} characters`;
      if (field.maxLength !== undefined && value.length > field.maxLength) return `At most ${field.maxLength} characters`;
      if (field.pattern !== undefined && !new RegExp(field.pattern, "u").test(value)) return "Not in the expected format";
      return null;
    }
    default:
      return null;
  }
}

export function validate(fields: FieldSpec[], values: Values): Record<string, string> {
  const errors: Record<string, string> = {};
  for (const field of fields) {
    const problem = checkField(field, values[field.name]);
    if (problem) errors[field.name] = problem;
  }
  return errors;
}

/** The parameters to send: empty optional fields left out (the server fills defaults),
 * cleared nullable ones sent as null. */
export function toParameters(fields: FieldSpec[], values: Values): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = {};
  for (const field of fields) {
    const value = values[field.name];
    if (value === undefined || value === "") continue;
    if (value === null && !field.nullable) continue;
    out[field.name] = value;
  }
  return out;
}

/** Parses a number box's text: empty is "not set". */
export function parseNumber(text: string, numeric: "integer" | "number" | undefined): number | undefined {
  if (text.trim() === "") return undefined;
  const value = numeric === "integer" ? Number.parseInt(text, 10) : Number.parseFloat(text);
  return Number.isNaN(value) ? Number.NaN : value;
}
