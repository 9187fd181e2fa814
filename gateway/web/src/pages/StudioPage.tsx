// The studio: the selected image big on the left with the user's images under it; the workflow,
// its parameters and the estimate on the right; Start always in reach (a bar fixed above the
// bottom nav on phones, sticky under the parameters on wide screens).
import { useEffect, useMemo, useState } from "react";
import { useLocation, useNavigate, useSearchParams } from "react-router-dom";
import { workflows } from "@/api/catalogue";
import { api, idempotencyKey, unwrap, type Workflow } from "@/api/client";
import { ApiError, messageOf } from "@/api/problem";
import { DEFAULT_MAX_BYTES } from "@/api/upload";
import { getMySpend } from "@/api/spend";
import { getProfile } from "@/api/users";
import { SchemaForm } from "@/components/SchemaForm";
import { Uploader } from "@/components/Uploader";
import { PipelineBuilder } from "@/components/pipelines/PipelineBuilder";
import { EstimateSummary } from "@/components/studio/EstimateSummary";
import { Examples } from "@/components/studio/Examples";
import { ImagePicker } from "@/components/studio/ImagePicker";
import { BudgetBanner, BudgetLeft } from "@/components/spend/SpendCard";
import { ShowCode } from "@/components/studio/ShowCode";
import { Stage } from "@/components/studio/Stage";
import { WorkflowPicker } from "@/components/studio/WorkflowPicker";
import { Button } from "@/components/ui/button";
import { Alert, Card, Spinner } from "@/components/ui/misc";
import { useEstimate } from "@/lib/useEstimate";
import { fieldsOf, initialValues, toParameters, validate, type JsonSchema, type JsonValue, type Values } from "@/lib/schemaForm";
import { useAsync } from "@/lib/useAsync";
import { useSettings } from "@/stores/settings";
import { useUploads } from "@/stores/uploads";

export default function StudioPage() {
  const [search] = useSearchParams();
  const location = useLocation();
  const navigate = useNavigate();
  const catalogue = useAsync(workflows, []);
  const profile = useAsync(() => getProfile(), []);
  const spend = useAsync(() => getMySpend(), []);
  const selected = useUploads((state) => state.selected);
  const select = useUploads((state) => state.select);
  const remember = useUploads((state) => state.remember);
  const settings = useSettings((state) => state.settings);
  const rememberParameters = useSettings((state) => state.rememberParameters);
  const lastWorkflowId = useSettings((state) => state.lastWorkflowId);

  // The plan's limit when it has one; the platform's default limit otherwise.
  const maxBytes = profile.data?.limits.max_file_size_bytes ?? DEFAULT_MAX_BYTES;
  const rerun = location.state as { parameters?: Values } | null;

  // ?image= preselects any of the user's images, results included ("use as input", re-run).
  const imageParam = search.get("image");
  const [imageError, setImageError] = useState<string | null>(null);
  useEffect(() => {
    if (!imageParam) return;
    let current = true;
    setImageError(null);
    select([imageParam]);
    api
      .GET("/api/images/{id}", { params: { path: { id: imageParam } } })
      .then((result) => {
        if (current) remember(unwrap(result));
      })
      .catch((error: unknown) => {
        if (!current) return;
        select(useUploads.getState().selected.filter((id) => id !== imageParam));
        setImageError(error instanceof ApiError && error.status === 404 ? "That image is not in your library (it may have been deleted)." : messageOf(error));
      });
    return () => {
      current = false;
    };
  }, [imageParam, select, remember]);

  const [workflowId, setWorkflowId] = useState<string | null>(search.get("workflow"));
  // One workflow at a time, or several chained as a pipeline.
  const [mode, setMode] = useState<"single" | "pipeline">(search.get("mode") === "pipeline" ? "pipeline" : "single");
  const list = useMemo(() => catalogue.data ?? [], [catalogue.data]);
  const workflow: Workflow | undefined =
    list.find((w) => w.id === workflowId) ??
    list.find((w) => w.id === settings.default_workflow_id) ??
    list.find((w) => w.id === lastWorkflowId) ??
    list[0];

  const fields = useMemo(() => (workflow ? fieldsOf(workflow.parameters_schema as JsonSchema) : []), [workflow]);
  const [values, setValues] = useState<Values>({});
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [touched, setTouched] = useState(false);
  const [busy, setBusy] = useState(false);
  const [startError, setStartError] = useState<string | null>(null);

  // New workflow: its remembered parameters (or a re-run's), else its defaults.
  useEffect(() => {
    if (!workflow) return;
    const remembered = rerun?.parameters ?? settings.workflow_defaults[workflow.id] ?? {};
    setValues(initialValues(fields, workflow.defaults as Values, remembered));
    setErrors({});
    setTouched(false);
    setStartError(null);
    // Settings changes must not reset what is being edited.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [workflow?.id, fields]);

  const onChange = (name: string, value: JsonValue | undefined) => {
    const next = { ...values, [name]: value };
    setValues(next);
    if (touched || errors[name]) setErrors(validate(fields, next));
  };

  const parameters = useMemo(() => toParameters(fields, values), [fields, values]);
  // Invalid parameters get their messages beside the fields, not an estimate.
  const valid = Object.keys(validate(fields, values)).length === 0;
  const estimate = useEstimate(workflow?.id ?? null, selected, parameters, valid);
  const refusal = estimate.data?.jobs.find((job) => !job.allowed);

  const request =
    workflow && selected.length > 0 ? { origin: window.location.origin, imageIds: selected, workflowId: workflow.id, parameters } : null;

  const start = async () => {
    if (!workflow) return;
    setTouched(true);
    const found = validate(fields, values);
    setErrors(found);
    setStartError(null);
    if (Object.keys(found).length) {
      setStartError("Some parameters need a look: see the messages beside them.");
      return;
    }
    if (selected.length === 0) {
      setStartError("Upload or select an image first.");
      return;
    }
    setBusy(true);
    try {
      const headers = { "Idempotency-Key": idempotencyKey() };
      void rememberParameters(workflow.id, parameters).catch(() => undefined);
      if (selected.length === 1) {
        const started = unwrap(
          await api.POST("/api/processing/start", {
            body: { image_id: selected[0] ?? "", workflow_id: workflow.id, parameters },
            params: { header: headers },
          }),
        );
        void navigate(`/jobs/${started.job_id}`);
      } else {
        const batch = unwrap(
          await api.POST("/api/processing/batch", {
            body: { image_ids: selected, workflow_id: workflow.id, parameters },
            headers,
          }),
        );
        void navigate(`/batches/${batch.batch_id}`);
      }
    } catch (error) {
      setStartError(messageOf(error));
      // A budget refusal: show what is left now.
      if (error instanceof ApiError && error.status === 429) spend.reload();
      if (error instanceof ApiError) setErrors((current) => ({ ...current, ...error.fieldErrors }));
    } finally {
      setBusy(false);
    }
  };

  const startLabel = busy ? "Starting…" : selected.length > 1 ? `Start batch of ${selected.length}` : "Start";

  return (
    // grid-cols-1 (minmax(0, 1fr)), not the implicit auto track: a wide child (the example strip)
    // must scroll inside its column, not widen the page.
    <div className="grid grid-cols-1 gap-6 lg:grid-cols-[minmax(0,7fr)_minmax(0,5fr)] lg:items-start">
      <h1 className="sr-only">Studio</h1>
      <div className="grid min-w-0 grid-cols-1 content-start gap-5">
        <BudgetBanner spend={spend.data} />
        {imageError && <Alert>{imageError}</Alert>}
        {/* One uploader: the stage itself while nothing is selected, a strip under it after. */}
        <Stage
          empty={
            <>
              <p className="text-lg font-semibold text-slate-900 dark:text-slate-50">Start with an image</p>
              <p className="max-w-sm text-sm text-slate-700 dark:text-slate-300">
                Upload a photo, pick one of yours below, or try an example. Then choose what to do with it.
              </p>
              <div className="w-full max-w-xl text-left">
                <Uploader maxBytes={maxBytes} />
              </div>
              <div className="w-full max-w-xl text-left">
                <Examples maxBytes={maxBytes} />
              </div>
            </>
          }
        />
        {selected.length > 0 && (
          <>
            <Uploader maxBytes={maxBytes} />
            <Examples maxBytes={maxBytes} />
          </>
        )}
        <ImagePicker />
      </div>

      <div className="grid min-w-0 grid-cols-1 content-start gap-4">
        <div role="group" aria-label="What to run" className="flex gap-1">
          <Button size="sm" variant={mode === "single" ? "default" : "secondary"} aria-pressed={mode === "single"} onClick={() => setMode("single")}>
            One workflow
          </Button>
          <Button size="sm" variant={mode === "pipeline" ? "default" : "secondary"} aria-pressed={mode === "pipeline"} onClick={() => setMode("pipeline")}>
            Pipeline
          </Button>
        </div>
        {mode === "pipeline" && list.length > 0 && <PipelineBuilder workflows={list} imageIds={selected} />}
        {mode === "single" && (
        <>
        <section aria-labelledby="workflow-heading" className="grid gap-3">
          <h2 id="workflow-heading" className="text-base font-semibold">
            Workflow
          </h2>
          {catalogue.loading && !catalogue.data && <Spinner label="Loading workflows" />}
          {catalogue.error ? <Alert>{messageOf(catalogue.error)}</Alert> : null}
          {list.length > 0 && (
            // On wide screens the list scrolls in its own box, so the parameters stay in view.
            <div className="lg:max-h-[22rem] lg:overflow-y-auto lg:pr-1">
              <WorkflowPicker list={list} value={workflow?.id} onChange={setWorkflowId} />
            </div>
          )}
        </section>
        {workflow && (
          <section aria-labelledby="parameters-heading" className="grid gap-3">
            <div className="flex items-start justify-between gap-2">
              <h2 id="parameters-heading" className="min-w-0 text-base font-semibold">
                Parameters: {workflow.name}
              </h2>
              <Button
                size="sm"
                variant="ghost"
                className="shrink-0 whitespace-nowrap"
                onClick={() => {
                  setValues(initialValues(fields, workflow.defaults as Values));
                  setErrors({});
                }}
              >
                Reset to defaults
              </Button>
            </div>
            <Card>
              <SchemaForm fields={fields} values={values} errors={errors} onChange={onChange} />
            </Card>
          </section>
        )}
        {workflow && (
          <section
            aria-label="Start"
            data-testid="action-bar"
            className="fixed inset-x-0 bottom-14 z-20 border-t border-slate-200 bg-white/95 px-4 py-2 shadow-[0_-4px_12px_rgba(0,0,0,0.08)] backdrop-blur sm:bottom-0 lg:sticky lg:bottom-4 lg:rounded-lg lg:border lg:px-4 lg:py-3 lg:shadow-lg dark:border-slate-700 dark:bg-slate-900/95"
          >
            <div className="mx-auto grid max-w-7xl gap-2">
              <EstimateSummary estimate={estimate} count={selected.length} />
              {selected.length > 0 && <BudgetLeft spend={spend.data} estimate={estimate.data?.total_cost} />}
              {refusal && (
                <p role="alert" data-testid="estimate-refusal" className="text-sm text-red-700 dark:text-red-300">
                  {refusal.reason ?? "The result would be larger than this server accepts."}
                </p>
              )}
              {startError && <Alert>{startError}</Alert>}
              <div className="flex items-center justify-end gap-2">
                <ShowCode request={request} />
                <Button onClick={() => void start()} disabled={busy || !!refusal} className="min-w-32 flex-1 sm:flex-none">
                  {startLabel}
                </Button>
              </div>
            </div>
          </section>
        )}
        </>
        )}
      </div>
    </div>
  );
}
