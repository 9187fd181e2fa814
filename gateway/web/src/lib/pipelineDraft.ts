// A pipeline being built in the studio: its steps (each a workflow and the form values of its
// parameters), edited without mutation, and the server's violations (`steps[1].parameters.scale`)
// sorted back onto the step and field they name.
import type { JsonValue, Values } from "@/lib/schemaForm";

/** The most steps a pipeline may have (the server's limit). */
export const MAX_STEPS = 8;

export interface DraftStep {
  /** Stable across reorders, for React keys. */
  key: string;
  workflowId: string;
  values: Values;
}

export interface SavedStep {
  workflow_id: string;
  parameters?: Record<string, unknown>;
}

let counter = 0;
function nextKey(): string {
  counter += 1;
  return `step-${counter}`;
}

export function newStep(workflowId: string, values: Values = {}): DraftStep {
  return { key: nextKey(), workflowId, values };
}

export function addStep(steps: DraftStep[], workflowId: string): DraftStep[] {
  if (steps.length >= MAX_STEPS) return steps;
  return [...steps, newStep(workflowId)];
}

export function removeStep(steps: DraftStep[], index: number): DraftStep[] {
  return steps.filter((_, i) => i !== index);
}

/** Moves step `index` by `by` places (−1 up, +1 down), staying within the list. */
export function moveStep(steps: DraftStep[], index: number, by: number): DraftStep[] {
  const target = index + by;
  if (index < 0 || index >= steps.length || target < 0 || target >= steps.length) return steps;
  const next = [...steps];
  const [moved] = next.splice(index, 1);
  if (moved) next.splice(target, 0, moved);
  return next;
}

export function setWorkflow(steps: DraftStep[], index: number, workflowId: string): DraftStep[] {
  return steps.map((step, i) => (i === index ? { ...step, workflowId, values: {} } : step));
}

export function setValue(steps: DraftStep[], index: number, name: string, value: JsonValue | undefined): DraftStep[] {
  return steps.map((step, i) => (i === index ? { ...step, values: { ...step.values, [name]: value } } : step));
}

/** The steps of a saved pipeline, as a draft. */
export function fromSaved(steps: SavedStep[]): DraftStep[] {
  return steps.map((step) => newStep(step.workflow_id, (step.parameters ?? {}) as Values));
}

/** Per step, field name → message; `_step` holds what is about the step itself (its
 * workflow), and `general` what names no step. */
export interface StepErrors {
  steps: Record<string, string>[];
  general: string[];
}

const STEP_FIELD = /^steps\[(\d+)\](?:\.(.+))?$/;

/** Sorts violations (`steps[1].parameters.scale`, `steps[0].workflow_id`, `steps`) onto the
 * steps and fields they name. */
export function errorsByStep(violations: { field: string; detail: string }[], count: number): StepErrors {
  const steps: Record<string, string>[] = Array.from({ length: count }, () => ({}));
  const general: string[] = [];
  for (const { field, detail } of violations) {
    const match = STEP_FIELD.exec(field);
    const index = match ? Number(match[1]) : NaN;
    const step = steps[index];
    if (!match || !step) {
      general.push(field ? `${field}: ${detail}` : detail);
      continue;
    }
    const rest = match[2] ?? "";
    const name = rest.startsWith("parameters.") ? rest.slice("parameters.".length) : rest === "parameters" || rest === "" || rest === "workflow_id" ? "_step" : rest;
    if (!(name in step)) step[name] = detail;
  }
  return { steps, general };
}

export function hasErrors(errors: StepErrors): boolean {
  return errors.general.length > 0 || errors.steps.some((step) => Object.keys(step).length > 0);
}
