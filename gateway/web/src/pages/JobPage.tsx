// One job: watched live until it finishes, then its result compared with the original.
import { useCallback, useEffect, useRef, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { workflows } from "@/api/catalogue";
import { api, idempotencyKey, unwrap, type Image, type Job, type Schemas } from "@/api/client";
import { watchJob } from "@/api/events";
import { ApiError, messageOf } from "@/api/problem";
import { formatBytes } from "@/api/upload";
import { JobOutputs } from "@/components/JobOutputs";
import { JobProgress } from "@/components/JobProgress";
import { Button } from "@/components/ui/button";
import { ConfirmDialog } from "@/components/ui/dialog";
import { Alert, Card, PageTitle, Spinner } from "@/components/ui/misc";
import { formatCost, parameterRows } from "@/lib/jobDetails";
import { applyEvent, elapsedMs, formatDuration, isTerminal, phaseOf, withStatus, type LiveJob } from "@/lib/jobState";
import { useAsync } from "@/lib/useAsync";

/** The job's status; `include` asks for its log lines (a page that never streamed shows them)
 * and its live place in the queue, each an extra read the plain status leaves out. */
type StatusInclude = Schemas["StatusInclude"];

async function fetchJob(jobId: string, include: StatusInclude[]): Promise<Job> {
  return unwrap(await api.GET("/api/processing/{job_id}/status", { params: { path: { job_id: jobId }, query: { include } } }));
}

async function fetchWorkflow(id: string) {
  try {
    return unwrap(await api.GET("/api/workflows/{id}", { params: { path: { id } } }));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

async function fetchImage(id: string): Promise<Image | null> {
  try {
    return unwrap(await api.GET("/api/images/{id}", { params: { path: { id } } }));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

const STATUS_TEXT: Record<string, string> = {
  pending: "Waiting to be queued",
  queued: "Queued",
  submitted: "Submitted to fal.ai",
  processing: "Processing",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

export default function JobPage() {
  const { jobId = "" } = useParams();
  const navigate = useNavigate();
  const [live, setLive] = useState<LiveJob | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [connected, setConnected] = useState(false);
  const [now, setNow] = useState(() => Date.now());
  const job = live?.job;
  const terminal = job ? isTerminal(job.status) : false;

  // Whether the event stream should be open: from a status read that finds the job unfinished
  // until the server ends the stream (it does once the job is finished).
  const [following, setFollowing] = useState(false);
  const reload = useCallback(() => {
    fetchJob(jobId, ["logs", "queue_position"])
      .then((fresh) => {
        setLive((current) => withStatus(current, fresh));
        setFollowing(!isTerminal(fresh.status));
      })
      .catch(setLoadError);
  }, [jobId]);

  useEffect(() => {
    setLive(null);
    setLoadError(null);
    setFollowing(false);
    reload();
  }, [reload]);

  // Live events until the stream ends; then the state is read once more (for the outputs, or
  // to follow again should the job have been sent round again). A subscription starts after the
  // last event this page has applied (from the first when it has applied none, and then the
  // stream's log lines replace the status's). It is not closed by a finished status seen in a
  // replay: a retried job's history holds its earlier failure.
  const lastSeq = useRef(0);
  lastSeq.current = live?.lastSeq ?? 0;
  useEffect(() => {
    if (!following) return;
    let resumed: ReturnType<typeof setTimeout> | undefined;
    const from = lastSeq.current;
    const subscription = watchJob(jobId, from, {
      onEvent: (event) => setLive((current) => (current ? applyEvent(current, event) : current)),
      onEnd: () => {
        // A stream that ended without news is not asked again at once.
        resumed = setTimeout(
          () => {
            setFollowing(false);
            reload();
          },
          lastSeq.current === from ? 2000 : 0,
        );
      },
      onError: (error) => setActionError(messageOf(error)),
      onConnected: setConnected,
    });
    return () => {
      clearTimeout(resumed);
      subscription.close();
    };
  }, [following, jobId, reload]);

  // The place in the queue changes without an event: read it again now and then while waiting.
  const waiting = job ? phaseOf(job).phase === "waiting" : false;
  useEffect(() => {
    if (!waiting) return;
    const timer = setInterval(() => {
      fetchJob(jobId, ["queue_position"])
        .then((fresh) =>
          setLive((current) =>
            current && current.job.status === fresh.status ? { ...current, job: { ...current.job, queue_position: fresh.queue_position ?? null } } : current,
          ),
        )
        .catch(() => undefined);
    }, 2000);
    return () => clearInterval(timer);
  }, [waiting, jobId]);

  // Finished live: read it once more for its result's URL (once: a deleted result has none).
  const reread = useRef<string | null>(null);
  useEffect(() => {
    if (terminal) {
      if (job && job.status === "completed" && !job.result_url && reread.current !== jobId) {
        reread.current = jobId;
        reload();
      }
      return;
    }
    const timer = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(timer);
  }, [terminal, job, jobId, reload]);

  const input = useAsync(() => (job ? fetchImage(job.image_id) : Promise.resolve(null)), [job?.image_id]);
  const catalogue = useAsync(workflows, []);
  const workflow = useAsync(() => (job ? fetchWorkflow(job.workflow_id) : Promise.resolve(null)), [job?.workflow_id]);
  const workflowName = workflow.data?.name ?? catalogue.data?.find((w) => w.id === job?.workflow_id)?.name ?? job?.workflow_id;

  const act = async (fn: () => Promise<void>) => {
    setActionError(null);
    try {
      await fn();
    } catch (error) {
      setActionError(messageOf(error));
    }
  };

  const cancel = () =>
    act(async () => {
      unwrap(await api.POST("/api/processing/{job_id}/cancel", { params: { path: { job_id: jobId } } }));
      reload();
    });

  const rerun = () =>
    act(async () => {
      if (!job) return;
      const started = unwrap(
        await api.POST("/api/processing/start", {
          body: { image_id: job.image_id, workflow_id: job.workflow_id, parameters: job.parameters as Record<string, never> },
          params: { header: { "Idempotency-Key": idempotencyKey() } },
        }),
      );
      void navigate(`/jobs/${started.job_id}`);
    });

  const retry = () =>
    act(async () => {
      unwrap(await api.POST("/api/processing/{job_id}/retry", { params: { path: { job_id: jobId } } }));
      reload();
    });

  if (loadError) {
    return (
      <div>
        <PageTitle>Job</PageTitle>
        <Alert>{loadError instanceof ApiError && loadError.status === 404 ? "No such job." : messageOf(loadError)}</Alert>
      </div>
    );
  }
  if (!job) return <Spinner label="Loading the job" />;
  const logs = live.logs;

  const elapsed = elapsedMs(job, now);
  const outputs = job.status === "completed" ? job.outputs : [];
  const first = outputs[0];
  const inputImage = input.data;
  const inputName = inputImage?.original_filename || inputImage?.filename || "original";

  return (
    <div className="grid gap-4">
      <PageTitle>{workflowName ?? "Job"}</PageTitle>
      <Card className="grid gap-3">
        <div className="flex flex-wrap items-center gap-x-6 gap-y-2">
          <p>
            <span className="text-sm text-slate-700 dark:text-slate-300">Status </span>
            <strong data-testid="job-status" data-status={job.status}>
              {STATUS_TEXT[job.status] ?? job.status}
            </strong>
          </p>
          {elapsed !== null && (
            <p>
              <span className="text-sm text-slate-700 dark:text-slate-300">{terminal ? "Took " : "Elapsed "}</span>
              <strong className="tabular-nums">{formatDuration(elapsed)}</strong>
            </p>
          )}
          {!terminal && (
            <p className="text-sm text-slate-700 dark:text-slate-300">{connected ? "Live" : "Connecting…"}</p>
          )}
        </div>
        <JobProgress job={job} />
        <div aria-live="polite" className="sr-only">
          {STATUS_TEXT[job.status] ?? job.status}
        </div>
        {job.error && job.status === "failed" && (
          <div className="grid gap-1" data-testid="job-error">
            <Alert>{job.error.message}</Alert>
            <details className="text-sm text-slate-700 dark:text-slate-300">
              <summary className="cursor-pointer">Details</summary>
              <p className="mt-1">
                Error code: <code className="rounded bg-slate-100 px-1 dark:bg-slate-800">{job.error.code}</code>
              </p>
            </details>
          </div>
        )}
        {actionError && <Alert>{actionError}</Alert>}
        <div className="flex flex-wrap gap-2">
          {!terminal && (
            <ConfirmDialog
              trigger={<Button variant="danger">Cancel job</Button>}
              title="Cancel this job?"
              description="The job stops wherever it is. You can run it again later."
              confirmLabel="Cancel job"
              cancelLabel="Keep running"
              danger
              onConfirm={cancel}
            />
          )}
          {(job.status === "cancelled" || (job.status === "failed" && retryable(job))) && (
            <Button variant="secondary" onClick={() => void retry()}>
              Retry
            </Button>
          )}
          {terminal && (
            <>
              <Button variant="secondary" onClick={() => void rerun()}>
                Run again
              </Button>
              <Button variant="secondary" asChild>
                <Link to={`/?image=${encodeURIComponent(job.image_id)}&workflow=${encodeURIComponent(job.workflow_id)}`} state={{ parameters: job.parameters }}>
                  Edit parameters and run again
                </Link>
              </Button>
            </>
          )}
        </div>
        {logs.length > 0 && (
          <details open={!terminal}>
            <summary className="cursor-pointer text-sm font-medium">Logs ({logs.length})</summary>
            {/* A scrolling box must be reachable by keyboard (WCAG 2.1.1). */}
            {/* eslint-disable-next-line jsx-a11y/no-noninteractive-tabindex */}
            <pre aria-label="Job logs" className="mt-2 max-h-48 overflow-auto whitespace-pre-wrap rounded bg-slate-100 p-2 text-xs dark:bg-slate-800" tabIndex={0}>
              {logs.join("\n")}
            </pre>
          </details>
        )}
      </Card>

      {outputs.length > 0 && <JobOutputs jobId={job.job_id} workflowId={job.workflow_id} outputs={outputs} input={input.loading ? undefined : (inputImage ?? null)} workflowName={workflowName ?? "the workflow"} />}
      {job.status === "completed" &&
        outputs.length === 0 &&
        (live.read ? <Alert tone="info">The results of this job were deleted.</Alert> : <Spinner label="Loading the results" />)}

      <Card>
        <h2 className="mb-2 text-lg font-semibold">Details</h2>
        <dl className="grid grid-cols-[auto_1fr] gap-x-4 gap-y-1 text-sm">
          <dt className="text-slate-700 dark:text-slate-300">Workflow</dt>
          <dd>{workflowName}</dd>
          {inputImage && (
            <>
              <dt className="text-slate-700 dark:text-slate-300">Original</dt>
              <dd>
                {inputName}, {inputImage.width}×{inputImage.height}, {formatBytes(inputImage.file_size)}
              </dd>
            </>
          )}
          {first && (
            <>
              <dt className="text-slate-700 dark:text-slate-300">{outputs.length > 1 ? "Results" : "Result"}</dt>
              <dd>
                {outputs.length > 1 ? `${outputs.length} outputs; the first ` : ""}
                {first.width}×{first.height}, {first.mime_type}, {formatBytes(first.file_size)}
              </dd>
            </>
          )}
          {job.estimated_cost && (
            <>
              <dt className="text-slate-700 dark:text-slate-300">Estimated cost</dt>
              <dd data-testid="job-cost">{formatCost(job.estimated_cost)}</dd>
            </>
          )}
          {job.created_at && (
            <>
              <dt className="text-slate-700 dark:text-slate-300">Started</dt>
              <dd>{new Date(job.created_at).toLocaleString()}</dd>
            </>
          )}
          {job.processing_time_ms != null && (
            <>
              <dt className="text-slate-700 dark:text-slate-300">Processing time</dt>
              <dd>{formatDuration(job.processing_time_ms)}</dd>
            </>
          )}
          {parameterRows(workflow.data?.parameters_schema, job.parameters).map((row) => (
            <div key={row.name} className="contents" data-testid="job-parameter">
              <dt className="text-slate-700 dark:text-slate-300">{row.label}</dt>
              <dd className="break-words">{row.value}</dd>
            </div>
          ))}
        </dl>
      </Card>
    </div>
  );
}

/** A retry can help only when the server says so. */
function retryable(job: Job): boolean {
  return job.error?.retryable ?? false;
}
