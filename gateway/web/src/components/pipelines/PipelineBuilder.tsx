// Builds a pipeline in the studio: steps in order (add, remove, reorder, each with its schema
// form), checked by the server as they change, saved under a name or loaded from the saved
// ones, and run on the selected images (one run each).
import { useEffect, useMemo, useState } from "react";
import { Link, useNavigate } from "react-router-dom";
import type { Workflow } from "@/api/client";
import { createPipeline, listPipelines, startRuns, updatePipeline, validatePipeline, type Pipeline, type PipelineRun, type PipelineStep } from "@/api/pipelines";
import { ApiError, messageOf } from "@/api/problem";
import { Button } from "@/components/ui/button";
import { Input, Label, Select } from "@/components/ui/field";
import { Alert } from "@/components/ui/misc";
import {
  addStep,
  errorsByStep,
  fromSaved,
  hasErrors,
  MAX_STEPS,
  moveStep,
  newStep,
  removeStep,
  setValue,
  setWorkflow,
  type DraftStep,
  type StepErrors,
} from "@/lib/pipelineDraft";
import { fieldsOf, toParameters } from "@/lib/schemaForm";
import { useAsync } from "@/lib/useAsync";
import { StepEditor } from "./StepEditor";

const NO_ERRORS: StepErrors = { steps: [], general: [] };

/** The steps as the API takes them: each step's form values as its parameters. */
function toSteps(steps: DraftStep[], workflows: Workflow[]): PipelineStep[] {
  return steps.map((step) => {
    const workflow = workflows.find((w) => w.id === step.workflowId);
    const fields = workflow ? fieldsOf(workflow.parameters_schema) : [];
    return { workflow_id: step.workflowId, parameters: toParameters(fields, step.values) };
  });
}

export function PipelineBuilder({ workflows, imageIds }: { workflows: Workflow[]; imageIds: string[] }) {
  const navigate = useNavigate();
  const saved = useAsync(listPipelines, []);
  const [steps, setSteps] = useState<DraftStep[]>(() => [newStep(workflows[0]?.id ?? "")]);
  const [name, setName] = useState("");
  const [savedId, setSavedId] = useState<string | null>(null);
  const [errors, setErrors] = useState<StepErrors>(NO_ERRORS);
  const [message, setMessage] = useState<{ tone: "error" | "success"; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const [started, setStarted] = useState<PipelineRun[]>([]);
  const request = useMemo(() => toSteps(steps, workflows), [steps, workflows]);

  // Checked inline: a moment after the last change, the server says what it would refuse.
  useEffect(() => {
    let current = true;
    const timer = setTimeout(() => {
      validatePipeline(request)
        .then((violations) => {
          if (current) setErrors(errorsByStep(violations.map((v) => ({ field: v.field, detail: v.detail })), request.length));
        })
        .catch(() => undefined);
    }, 300);
    return () => {
      current = false;
      clearTimeout(timer);
    };
  }, [request]);

  const showProblem = (error: unknown) => {
    setMessage({ tone: "error", text: messageOf(error) });
    if (error instanceof ApiError) setErrors(errorsByStep(error.problem.errors ?? [], steps.length));
  };

  const load = (pipeline: Pipeline) => {
    setSteps(fromSaved(pipeline.steps));
    setName(pipeline.name);
    setSavedId(pipeline.id);
    setMessage(null);
  };

  const save = async () => {
    setBusy(true);
    setMessage(null);
    try {
      const pipeline = savedId ? await updatePipeline(savedId, { name, steps: request }) : await createPipeline(name, request);
      setSavedId(pipeline.id);
      setMessage({ tone: "success", text: `Saved as “${pipeline.name}”.` });
      saved.reload();
    } catch (error) {
      showProblem(error);
    } finally {
      setBusy(false);
    }
  };

  const run = async () => {
    if (imageIds.length === 0) {
      setMessage({ tone: "error", text: "Upload or select an image first." });
      return;
    }
    setBusy(true);
    setMessage(null);
    try {
      const runs = await startRuns({ steps: request }, imageIds);
      const first = runs[0];
      if (runs.length === 1 && first) void navigate(`/pipeline-runs/${first.id}`);
      else setStarted(runs);
    } catch (error) {
      showProblem(error);
    } finally {
      setBusy(false);
    }
  };

  const invalid = hasErrors(errors);
  return (
    <section aria-labelledby="pipeline-heading" className="grid gap-3" data-testid="pipeline-builder">
      <h2 id="pipeline-heading" className="text-base font-semibold">
        Pipeline
      </h2>
      {(saved.data?.length ?? 0) > 0 && (
        <div className="grid gap-1">
          <Label htmlFor="pipeline-load">Saved pipelines</Label>
          <Select
            id="pipeline-load"
            value={savedId ?? ""}
            onChange={(event) => {
              const pipeline = saved.data?.find((p) => p.id === event.target.value);
              if (pipeline) load(pipeline);
            }}
          >
            <option value="">Load a saved pipeline…</option>
            {saved.data?.map((p) => (
              <option key={p.id} value={p.id}>
                {p.name} ({p.steps.length} steps)
              </option>
            ))}
          </Select>
        </div>
      )}
      {steps.map((step, index) => (
        <StepEditor
          key={step.key}
          index={index}
          count={steps.length}
          step={step}
          workflows={workflows}
          errors={errors.steps[index] ?? {}}
          onWorkflow={(id) => setSteps((s) => setWorkflow(s, index, id))}
          onChange={(field, value) => setSteps((s) => setValue(s, index, field, value))}
          onMove={(by) => setSteps((s) => moveStep(s, index, by))}
          onRemove={() => setSteps((s) => removeStep(s, index))}
        />
      ))}
      <Button variant="secondary" disabled={steps.length >= MAX_STEPS} onClick={() => setSteps((s) => addStep(s, workflows[0]?.id ?? ""))}>
        Add step
      </Button>
      {errors.general.map((text) => (
        <Alert key={text}>{text}</Alert>
      ))}
      <div className="flex flex-wrap items-end gap-2">
        <div className="grid min-w-0 flex-1 gap-1">
          <Label htmlFor="pipeline-name">Name</Label>
          <Input id="pipeline-name" value={name} maxLength={100} placeholder="e.g. Cut out and upscale" onChange={(event) => setName(event.target.value)} />
        </div>
        <Button variant="secondary" disabled={busy || !name.trim() || invalid} onClick={() => void save()}>
          {savedId ? "Save changes" : "Save pipeline"}
        </Button>
      </div>
      {message && <Alert tone={message.tone}>{message.text}</Alert>}
      <Button disabled={busy || invalid} onClick={() => void run()} data-testid="run-pipeline">
        {busy ? "Starting…" : imageIds.length > 1 ? `Run pipeline on ${imageIds.length} images` : "Run pipeline"}
      </Button>
      {started.length > 0 && (
        <ul className="grid gap-1 text-sm" aria-label="Started runs">
          {started.map((r, i) => (
            <li key={r.id}>
              <Link className="underline" to={`/pipeline-runs/${r.id}`}>
                Run {i + 1}
              </Link>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
