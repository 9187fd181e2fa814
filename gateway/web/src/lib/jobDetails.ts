// A job's parameters as people read them: the schema's labels in display order, values plain.
import { fieldsOf, type JsonSchema, type JsonValue } from "./schemaForm";

export interface ParameterRow {
  name: string;
  label: string;
  value: string;
}

/** `true` → yes, numbers in the reader's locale, strings as they are, lists and objects joined. */
export function formatValue(value: unknown): string {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "number") return value.toLocaleString(undefined, { maximumFractionDigits: 6 });
  if (typeof value === "string") return value;
  if (Array.isArray(value)) return value.map(formatValue).join(", ");
  if (typeof value !== "object") return typeof value === "bigint" ? value.toString() : "";
  return Object.entries(value as Record<string, JsonValue>)
    .map(([key, inner]) => `${key}: ${formatValue(inner)}`)
    .join(", ");
}

/** The job's parameters labelled by `schema` (in its display order; names it does not know
 * follow, as they are). */
export function parameterRows(schema: JsonSchema | null | undefined, parameters: Record<string, unknown>): ParameterRow[] {
  const fields = schema ? fieldsOf(schema) : [];
  const rows: ParameterRow[] = [];
  for (const field of fields) {
    if (field.name in parameters) rows.push({ name: field.name, label: field.label, value: formatValue(parameters[field.name]) });
  }
  const known = new Set(fields.map((field) => field.name));
  for (const [name, value] of Object.entries(parameters)) {
    if (!known.has(name)) rows.push({ name, label: name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase()), value: formatValue(value) });
  }
  return rows;
}

/** An amount of money in its currency: cents for amounts of a cent or more, else three
 * significant digits (fal prices single images in fractions of a cent), e.g. `$0.00144`. */
export function formatCost(cost: { amount: number; currency: string }): string {
  const small = cost.amount > 0 && cost.amount < 0.01;
  try {
    return new Intl.NumberFormat(undefined, {
      style: "currency",
      currency: cost.currency,
      ...(small ? { maximumSignificantDigits: 3 } : { minimumFractionDigits: 2, maximumFractionDigits: 4 }),
    }).format(cost.amount);
  } catch {
    return `${cost.amount} ${cost.currency}`;
  }
}
