// A form generated from a workflow's parameter schema (see lib/schemaForm.ts for the mapping).
import { useId } from "react";
import { FieldError, Hint, Input, Label, Select, Textarea } from "@/components/ui/field";
import { Slider, Switch } from "@/components/ui/misc";
import { parseNumber, type FieldSpec, type JsonValue, type Values } from "@/lib/schemaForm";

export function SchemaForm({
  fields,
  values,
  errors,
  onChange,
}: {
  fields: FieldSpec[];
  values: Values;
  errors: Record<string, string>;
  onChange: (name: string, value: JsonValue | undefined) => void;
}) {
  if (fields.length === 0) return <p className="text-sm text-slate-700 dark:text-slate-300">This workflow has no parameters.</p>;
  return (
    <div className="grid gap-4">
      {fields.map((field) => (
        <Field key={field.name} field={field} value={values[field.name]} error={errors[field.name]} onChange={(v) => onChange(field.name, v)} />
      ))}
    </div>
  );
}

function Field({
  field,
  value,
  error,
  onChange,
}: {
  field: FieldSpec;
  value: JsonValue | undefined;
  error: string | undefined;
  onChange: (value: JsonValue | undefined) => void;
}) {
  const id = useId();
  const inputId = `${id}-input`;
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const rangeId = `${id}-range`;
  const range = rangeOf(field);
  const describedBy = [field.description ? hintId : null, range ? rangeId : null, error ? errorId : null].filter(Boolean).join(" ") || undefined;
  const common = { id: inputId, "aria-describedby": describedBy, "aria-invalid": error ? true : undefined, name: field.name };
  const optionalNull = field.nullable && value === null;

  let control;
  switch (field.kind) {
    case "boolean":
      control = (
        <Switch
          id={inputId}
          aria-describedby={describedBy}
          checked={value === true}
          onCheckedChange={(checked) => onChange(checked)}
        />
      );
      break;
    case "select":
      control = (
        <Select
          {...common}
          value={value === undefined || value === null ? "" : JSON.stringify(value)}
          onChange={(event) => onChange(event.target.value === "" ? (field.nullable ? null : undefined) : (JSON.parse(event.target.value) as JsonValue))}
        >
          {(!field.required || field.nullable) && <option value="">{field.nullable ? "None" : "Default"}</option>}
          {field.options?.map((option) => (
            <option key={JSON.stringify(option)} value={JSON.stringify(option)}>
              {typeof option === "object" ? JSON.stringify(option) : String(option)}
            </option>
          ))}
        </Select>
      );
      break;
    case "slider": {
      const current = typeof value === "number" ? value : (field.min ?? 0);
      control = (
        <div className="flex items-center gap-3">
          <Slider
            label={field.label}
            min={field.min}
            max={field.max}
            step={field.step}
            value={[current]}
            onValueChange={([v]) => onChange(v)}
            aria-describedby={describedBy}
            className="flex-1"
          />
          <Input
            {...common}
            type="number"
            inputMode="decimal"
            className="w-24"
            min={field.min}
            max={field.max}
            step={field.step}
            value={typeof value === "number" && !Number.isNaN(value) ? value : ""}
            onChange={(event) => onChange(parseNumber(event.target.value, field.numeric))}
          />
        </div>
      );
      break;
    }
    case "number":
      control = (
        <Input
          {...common}
          type="number"
          inputMode="numeric"
          min={field.min}
          max={field.max}
          step={field.step ?? "any"}
          placeholder={field.required ? undefined : "Not set"}
          value={typeof value === "number" && !Number.isNaN(value) ? value : ""}
          onChange={(event) => onChange(parseNumber(event.target.value, field.numeric))}
        />
      );
      break;
    case "textarea":
      control = <Textarea {...common} rows={3} value={typeof value === "string" ? value : ""} onChange={(event) => onChange(event.target.value)} />;
      break;
    case "text":
      control = <Input {...common} type="text" value={typeof value === "string" ? value : ""} onChange={(event) => onChange(event.target.value)} />;
      break;
    default:
      control = (
        <Textarea
          {...common}
          rows={2}
          className="font-mono"
          defaultValue={value === undefined ? "" : JSON.stringify(value)}
          onChange={(event) => {
            try {
              onChange(event.target.value.trim() === "" ? undefined : (JSON.parse(event.target.value) as JsonValue));
            } catch {
              // keep the last valid value while the JSON is being typed
            }
          }}
        />
      );
  }

  return (
    <div className="grid gap-1.5" data-field={field.name}>
      <div className="flex items-center justify-between gap-2">
        <Label htmlFor={inputId}>
          {field.label}
          {field.required && <span aria-hidden="true"> *</span>}
        </Label>
        {range && (
          <span id={rangeId} className="text-xs text-slate-600 dark:text-slate-300">
            {range}
          </span>
        )}
      </div>
      {control}
      {field.nullable && !optionalNull && field.kind !== "select" && (
        <button type="button" className="justify-self-start text-xs text-brand-700 underline dark:text-brand-100" onClick={() => onChange(null)}>
          Clear {field.label.toLowerCase()}
        </button>
      )}
      <Hint id={hintId}>{field.description}</Hint>
      {field.default !== undefined && field.default !== null && field.kind !== "boolean" && (
        <p className="text-xs text-slate-600 dark:text-slate-300">Default: {typeof field.default === "object" ? JSON.stringify(field.default) : String(field.default)}</p>
      )}
      <FieldError id={errorId}>{error}</FieldError>
    </div>
  );
}

/** The limits of a number, as shown beside its label: "1 – 8", "at least 0", "at most 10". */
export function rangeOf(field: FieldSpec): string | null {
  if (field.kind !== "slider" && field.kind !== "number") return null;
  if (field.min !== undefined && field.max !== undefined) return `${field.min} – ${field.max}`;
  if (field.min !== undefined) return `at least ${field.min}`;
  if (field.max !== undefined) return `at most ${field.max}`;
  return null;
}
