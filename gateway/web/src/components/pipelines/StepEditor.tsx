// One step of a pipeline being built: its workflow, its parameters in the same schema form as
// a single job's, its errors, and moving or removing it.
import { useId, useMemo } from "react";
import type { Workflow } from "@/api/client";
import { SchemaForm } from "@/components/SchemaForm";
import { Button } from "@/components/ui/button";
import { FieldError, Label, Select } from "@/components/ui/field";
import { Card } from "@/components/ui/misc";
import type { DraftStep } from "@/lib/pipelineDraft";
import { fieldsOf, initialValues, type JsonSchema, type JsonValue, type Values } from "@/lib/schemaForm";

export function StepEditor({
  index,
  count,
  step,
  workflows,
  errors,
  onWorkflow,
  onChange,
  onMove,
  onRemove,
}: {
  index: number;
  count: number;
  step: DraftStep;
  workflows: Workflow[];
  errors: Record<string, string>;
  onWorkflow: (workflowId: string) => void;
  onChange: (name: string, value: JsonValue | undefined) => void;
  onMove: (by: number) => void;
  onRemove: () => void;
}) {
  const id = useId();
  const workflow = workflows.find((w) => w.id === step.workflowId);
  const fields = useMemo(() => (workflow ? fieldsOf(workflow.parameters_schema as JsonSchema) : []), [workflow]);
  // The step's own values as typed (even ones the server refuses), over the defaults.
  const values = useMemo(() => ({ ...initialValues(fields, (workflow?.defaults ?? {}) as Values), ...step.values }), [fields, workflow, step.values]);
  const { _step: stepError, ...fieldErrors } = errors;
  return (
    <Card className="grid gap-3" data-testid={`pipeline-step-${index}`}>
      <div className="flex flex-wrap items-end gap-2">
        <div className="grid min-w-0 flex-1 gap-1">
          <Label htmlFor={`${id}-workflow`}>Step {index + 1}</Label>
          <Select
            id={`${id}-workflow`}
            value={step.workflowId}
            aria-invalid={stepError ? true : undefined}
            aria-describedby={stepError ? `${id}-error` : undefined}
            onChange={(event) => onWorkflow(event.target.value)}
          >
            {!workflow && <option value={step.workflowId}>{step.workflowId || "Choose a workflow"}</option>}
            {workflows.map((w) => (
              <option key={w.id} value={w.id}>
                {w.name}
              </option>
            ))}
          </Select>
        </div>
        <div className="flex gap-1">
          <Button size="sm" variant="ghost" aria-label={`Move step ${index + 1} up`} disabled={index === 0} onClick={() => onMove(-1)}>
            ↑
          </Button>
          <Button size="sm" variant="ghost" aria-label={`Move step ${index + 1} down`} disabled={index === count - 1} onClick={() => onMove(1)}>
            ↓
          </Button>
          <Button size="sm" variant="ghost" aria-label={`Remove step ${index + 1}`} disabled={count === 1} onClick={onRemove}>
            ✕
          </Button>
        </div>
      </div>
      <FieldError id={`${id}-error`}>{stepError}</FieldError>
      {index > 0 && <p className="text-xs text-slate-600 dark:text-slate-300">Runs on step {index}'s result.</p>}
      {workflow && <SchemaForm fields={fields} values={values} errors={fieldErrors} onChange={onChange} />}
    </Card>
  );
}
