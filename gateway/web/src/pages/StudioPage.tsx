// Upload images, pick a workflow, tune its parameters, start one job or a batch.
import { useEffect, useMemo, useState } from "react";
import { useLocation, useNavigate, useSearchParams } from "react-router-dom";
import { byCategory, categoryName, workflows } from "@/api/catalogue";
import { api, idempotencyKey, unwrap, type Image, type Workflow } from "@/api/client";
import { ApiError, messageOf } from "@/api/problem";
import { DEFAULT_MAX_BYTES } from "@/api/upload";
import { getProfile } from "@/api/users";
import { SchemaForm } from "@/components/SchemaForm";
import { Uploader } from "@/components/Uploader";
import { Button } from "@/components/ui/button";
import { Alert, Card, PageTitle, Spinner } from "@/components/ui/misc";
import { fieldsOf, initialValues, toParameters, validate, type JsonSchema, type JsonValue, type Values } from "@/lib/schemaForm";
import { cn } from "@/lib/cn";
import { useAsync } from "@/lib/useAsync";
import { useSettings } from "@/stores/settings";
import { useUploads } from "@/stores/uploads";

export default function StudioPage() {
  const [search] = useSearchParams();
  const location = useLocation();
  const navigate = useNavigate();
  const catalogue = useAsync(workflows, []);
  const profile = useAsync(() => getProfile(), []);
  const recent = useAsync(async () => unwrap(await api.GET("/api/images", { params: { query: { page_size: 12 } } })).images, []);
  const uploaded = useUploads((state) => state.images);
  const selected = useUploads((state) => state.selected);
  const toggle = useUploads((state) => state.toggle);
  const select = useUploads((state) => state.select);
  const remember = useUploads((state) => state.remember);
  const settings = useSettings((state) => state.settings);
  const rememberParameters = useSettings((state) => state.rememberParameters);
  const lastWorkflowId = useSettings((state) => state.lastWorkflowId);

  const maxBytes = profile.data?.limits.max_file_bytes || DEFAULT_MAX_BYTES;
  const rerun = location.state as { parameters?: Values } | null;

  // ?image= preselects an image (re-run from a result or history).
  useEffect(() => {
    const image = search.get("image");
    if (image) select([image]);
  }, [search, select]);
  useEffect(() => {
    for (const image of recent.data ?? []) if (image.kind === "original") remember(image);
  }, [recent.data, remember]);

  const [workflowId, setWorkflowId] = useState<string | null>(search.get("workflow"));
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
    // Settings changes must not reset what is being edited.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [workflow?.id, fields]);

  const images: Image[] = useMemo(() => {
    const seen = new Map<string, Image>();
    for (const image of Object.values(uploaded).reverse()) seen.set(image.id, image);
    return [...seen.values()].filter((image) => image.kind === "original");
  }, [uploaded]);

  const onChange = (name: string, value: JsonValue | undefined) => {
    const next = { ...values, [name]: value };
    setValues(next);
    if (touched || errors[name]) setErrors(validate(fields, next));
  };

  const start = async () => {
    if (!workflow) return;
    setTouched(true);
    const found = validate(fields, values);
    setErrors(found);
    setStartError(null);
    if (Object.keys(found).length) return;
    if (selected.length === 0) {
      setStartError("Upload or select an image first.");
      return;
    }
    const parameters = toParameters(fields, values);
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
      if (error instanceof ApiError) setErrors((current) => ({ ...current, ...error.fieldErrors }));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div>
      <PageTitle>Studio</PageTitle>
      <div className="grid gap-6 lg:grid-cols-[1fr_1fr]">
        <section aria-labelledby="images-heading" className="grid content-start gap-4">
          <h2 id="images-heading" className="text-lg font-semibold">
            1. Images
          </h2>
          <Uploader maxBytes={maxBytes} />
          {images.length > 0 && (
            <fieldset>
              <legend className="mb-2 text-sm font-medium">Images to process ({selected.length} selected)</legend>
              <ul className="grid grid-cols-3 gap-2 sm:grid-cols-4">
                {images.map((image) => {
                  const checked = selected.includes(image.id);
                  return (
                    <li key={image.id}>
                      <label className="block cursor-pointer rounded-md border-2 border-transparent p-1 has-[:checked]:border-brand-600 has-[:focus-visible]:outline has-[:focus-visible]:outline-2 has-[:focus-visible]:outline-brand-600">
                        <input type="checkbox" className="sr-only" checked={checked} onChange={() => toggle(image.id)} />
                        <img
                          src={image.thumbnail_url ?? image.url}
                          alt=""
                          loading="lazy"
                          width={128}
                          height={128}
                          className="aspect-square w-full rounded object-cover"
                        />
                        <span className="mt-1 block truncate text-xs">{image.original_filename || image.filename}</span>
                      </label>
                    </li>
                  );
                })}
              </ul>
            </fieldset>
          )}
        </section>

        <section aria-labelledby="workflow-heading" className="grid content-start gap-4">
          <h2 id="workflow-heading" className="text-lg font-semibold">
            2. Workflow
          </h2>
          {catalogue.loading && !catalogue.data && <Spinner label="Loading workflows" />}
          {catalogue.error ? <Alert>{messageOf(catalogue.error)}</Alert> : null}
          {list.length > 0 && (
            <Card className="grid gap-4">
              {byCategory(list).map(([category, group]) => (
                <fieldset key={category}>
                  <legend className="mb-1 text-sm font-semibold uppercase tracking-wide text-slate-700 dark:text-slate-300">
                    {categoryName(category)}
                  </legend>
                  <div className="grid gap-1">
                    {group.map((w) => (
                      <label
                        key={w.id}
                        className={cn(
                          "flex cursor-pointer gap-3 rounded-md p-2",
                          workflow?.id === w.id ? "bg-brand-50 dark:bg-slate-800" : "hover:bg-slate-100 dark:hover:bg-slate-800",
                        )}
                      >
                        <input
                          type="radio"
                          name="workflow"
                          value={w.id}
                          checked={workflow?.id === w.id}
                          onChange={() => setWorkflowId(w.id)}
                          className="mt-1 accent-brand-700"
                        />
                        <span>
                          <span className="block text-sm font-medium">{w.name}</span>
                          <span className="block text-sm text-slate-700 dark:text-slate-300">{w.description}</span>
                        </span>
                      </label>
                    ))}
                  </div>
                </fieldset>
              ))}
            </Card>
          )}
          {workflow && (
            <section aria-labelledby="parameters-heading" className="grid gap-4">
              <div className="flex items-center justify-between">
                <h2 id="parameters-heading" className="text-lg font-semibold">
                  3. Parameters: {workflow.name}
                </h2>
                <Button
                  size="sm"
                  variant="ghost"
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
              {startError && <Alert>{startError}</Alert>}
              <Button onClick={() => void start()} disabled={busy}>
                {busy ? "Starting…" : selected.length > 1 ? `Start batch of ${selected.length}` : "Start"}
              </Button>
            </section>
          )}
        </section>
      </div>
    </div>
  );
}
