// A batch: every job with its image, followed live over one WebSocket; cancel one job or all,
// and download every result as one ZIP.
import { useCallback, useEffect, useMemo, useState } from "react";
import { Link, useParams } from "react-router-dom";
import { workflows } from "@/api/catalogue";
import { api, unwrap, type Image, type Schemas } from "@/api/client";
import { watchJobs } from "@/api/live";
import { ApiError, messageOf } from "@/api/problem";
import { Button } from "@/components/ui/button";
import { ConfirmDialog } from "@/components/ui/dialog";
import { Alert, Card, PageTitle, Progress, Spinner } from "@/components/ui/misc";
import { cn } from "@/lib/cn";
import { formatMoney } from "@/lib/estimate";
import { saveDownload } from "@/lib/saveStream";
import { applyEvent, isTerminal, liveFrom, type LiveJob } from "@/lib/jobState";
import { useAsync } from "@/lib/useAsync";

const STATUS_TEXT: Record<string, string> = {
  pending: "Waiting",
  queued: "Queued",
  submitted: "Submitted",
  processing: "Processing",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

const STATUS_STYLE: Record<string, string> = {
  completed: "bg-emerald-100 text-emerald-900 dark:bg-emerald-900 dark:text-emerald-100",
  failed: "bg-red-100 text-red-900 dark:bg-red-900 dark:text-red-100",
  cancelled: "bg-slate-200 text-slate-900 dark:bg-slate-700 dark:text-slate-100",
};

type JobOutput = Schemas["JobOutputBody"];

async function fetchImage(id: string): Promise<Image | null> {
  try {
    return unwrap(await api.GET("/api/images/{id}", { params: { path: { id } } }));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

export default function BatchPage() {
  const { batchId = "" } = useParams();
  const batch = useAsync(
    async () => unwrap(await api.GET("/api/processing/batch/{batch_id}", { params: { path: { batch_id: batchId } } })),
    [batchId],
  );
  const catalogue = useAsync(workflows, []);
  const [jobs, setJobs] = useState<Record<string, LiveJob>>({});
  const [images, setImages] = useState<Record<string, Image | null>>({});
  const [connected, setConnected] = useState(false);
  const [actionError, setActionError] = useState<string | null>(null);
  const jobIds = useMemo(() => batch.data?.job_ids ?? [], [batch.data]);
  const workflow = catalogue.data?.find((w) => w.id === batch.data?.workflow_id);

  const loadImage = useCallback((id: string | null | undefined) => {
    if (!id) return;
    setImages((current) => {
      if (id in current) return current;
      fetchImage(id)
        .then((image) => setImages((now) => ({ ...now, [id]: image })))
        .catch(() => setImages((now) => ({ ...now, [id]: null })));
      return { ...current, [id]: null };
    });
  }, []);

  // Every job's state comes with the batch (read at first, and again when a job finishes, for
  // its outputs); a job's live state is kept unless the batch's copy has finished.
  useEffect(() => {
    for (const fresh of batch.data?.jobs ?? []) loadImage(fresh.image_id);
    setJobs((current) => {
      const next = { ...current };
      for (const fresh of batch.data?.jobs ?? []) {
        const known = current[fresh.job_id];
        if (!known || isTerminal(fresh.status) || !isTerminal(known.job.status)) {
          next[fresh.job_id] = { ...liveFrom(fresh), lastSeq: known?.lastSeq ?? 0, logs: known?.logs ?? fresh.logs };
        }
      }
      return next;
    });
  }, [batch.data, loadImage]);

  const loaded = jobIds.length > 0 && jobIds.every((id) => jobs[id]);
  const unfinished = useMemo(() => jobIds.filter((id) => jobs[id] && !isTerminal(jobs[id].job.status)), [jobIds, jobs]);
  const following = unfinished.length > 0;
  const { reload: reloadBatch } = batch;

  // Live: one socket for every unfinished job; a job that finishes is read once more.
  useEffect(() => {
    if (!loaded || !following) return;
    const subscription = watchJobs(
      unfinished,
      {
        onEvent(jobId, event) {
          setJobs((current) => {
            const job = current[jobId];
            return job ? { ...current, [jobId]: applyEvent(job, event) } : current;
          });
          if (typeof event.data.status === "string" && isTerminal(event.data.status)) reloadBatch();
        },
        onJobError: (_jobId, _status, detail) => setActionError(detail || "A job could not be followed."),
        onConnected: setConnected,
      },
      Object.fromEntries(unfinished.map((id) => [id, jobs[id]?.lastSeq ?? 0])),
    );
    return () => subscription.close();
    // One subscription while jobs run; it is not redone on every event.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [loaded, following, batchId]);

  const counts = useMemo(() => {
    const tally = { waiting: 0, running: 0, completed: 0, failed: 0, cancelled: 0 };
    for (const id of jobIds) {
      const status = jobs[id]?.job.status;
      if (!status) continue;
      if (status === "completed" || status === "failed" || status === "cancelled") tally[status]++;
      else if (status === "submitted" || status === "processing") tally.running++;
      else tally.waiting++;
    }
    return tally;
  }, [jobIds, jobs]);
  const done = counts.completed + counts.failed + counts.cancelled;

  const cancelJob = async (jobId: string) => {
    setActionError(null);
    try {
      unwrap(await api.POST("/api/processing/{job_id}/cancel", { params: { path: { job_id: jobId } } }));
    } catch (error) {
      setActionError(messageOf(error));
    }
  };
  // The gateway streams the ZIP; saveDownload streams it on into a file where the browser can
  // (see lib/saveStream.ts for why, and the fallback).
  const [downloading, setDownloading] = useState(false);
  const downloadAll = async () => {
    setActionError(null);
    setDownloading(true);
    try {
      await saveDownload(
        async () => {
          const result = await api.GET("/api/processing/batch/{batch_id}/download", { params: { path: { batch_id: batchId } }, parseAs: "stream" });
          unwrap(result);
          return result.response;
        },
        `batch-${batchId.slice(0, 8)}${workflow ? `_${workflow.id}` : ""}.zip`,
        { description: "ZIP archive", mime: "application/zip", extension: ".zip" },
      );
    } catch (error) {
      setActionError(messageOf(error));
    } finally {
      setDownloading(false);
    }
  };

  const cancelBatch = async () => {
    setActionError(null);
    try {
      unwrap(await api.POST("/api/processing/batch/{batch_id}/cancel", { params: { path: { batch_id: batchId } } }));
      reloadBatch();
    } catch (error) {
      setActionError(messageOf(error));
    }
  };

  return (
    <div className="grid gap-4">
      <div className="flex flex-wrap items-end justify-between gap-3">
        <div>
          <PageTitle>Batch{workflow ? `: ${workflow.name}` : ""}</PageTitle>
          {batch.data && (
            <p className="-mt-3 text-sm text-slate-700 dark:text-slate-300" data-testid="batch-tally">
              {counts.completed} completed, {counts.failed} failed, {counts.cancelled} cancelled, {counts.running} running, {counts.waiting} waiting, of{" "}
              {jobIds.length}
              {following && (
                <span className="ml-2 inline-flex items-center gap-1">
                  <span aria-hidden="true" className={cn("h-2 w-2 rounded-full", connected ? "bg-emerald-600" : "bg-slate-400")} />
                  {connected ? "Live" : "Reconnecting…"}
                </span>
              )}
            </p>
          )}
          {batch.data?.estimated_cost && (
            <p className="text-sm text-slate-700 dark:text-slate-300" data-testid="batch-cost">
              Estimated cost:{" "}
              <strong className="text-slate-900 dark:text-slate-100">
                {formatMoney(batch.data.estimated_cost.amount, batch.data.estimated_cost.currency)}
              </strong>{" "}
              for {jobIds.length} job{jobIds.length === 1 ? "" : "s"}
            </p>
          )}
        </div>
        {batch.data && (
          <div className="flex flex-wrap gap-2">
            {counts.completed > 0 && (
              <Button variant="secondary" onClick={() => void downloadAll()} disabled={downloading}>
                {downloading ? "Preparing the ZIP…" : "Download all"}
                <span className="sr-only"> {counts.completed} results as a ZIP</span>
              </Button>
            )}
            {following && (
              <ConfirmDialog
                trigger={<Button variant="danger">Cancel batch</Button>}
                title="Cancel the whole batch?"
                description={`The ${unfinished.length} unfinished job${unfinished.length === 1 ? "" : "s"} stop; finished ones keep their results.`}
                confirmLabel="Cancel batch"
                cancelLabel="Keep running"
                danger
                onConfirm={cancelBatch}
              />
            )}
          </div>
        )}
      </div>
      {batch.error ? <Alert>{messageOf(batch.error)}</Alert> : null}
      {actionError && <Alert>{actionError}</Alert>}
      {!batch.data && !batch.error && <Spinner label="Loading the batch" />}
      {batch.data && (
        <>
          <Progress value={jobIds.length ? done / jobIds.length : 0} label="Batch progress" />
          <ul className="grid grid-cols-1 gap-3 sm:grid-cols-2 lg:grid-cols-3" aria-label="Jobs">
            {jobIds.map((id, index) => (
              <JobCard
                key={id}
                index={index}
                jobId={id}
                live={jobs[id]}
                input={jobs[id] ? images[jobs[id].job.image_id] : undefined}
                result={jobs[id]?.job.outputs[0]}
                onCancel={() => void cancelJob(id)}
              />
            ))}
          </ul>
        </>
      )}
    </div>
  );
}

function JobCard({
  index,
  jobId,
  live,
  input,
  result,
  onCancel,
}: {
  index: number;
  jobId: string;
  live: LiveJob | undefined;
  input: Image | null | undefined;
  result: JobOutput | undefined;
  onCancel: () => void;
}) {
  const job = live?.job;
  const status = job?.status ?? "pending";
  const name = input ? input.original_filename || input.filename : `Job ${index + 1}`;
  return (
    <li data-testid="batch-job" data-status={status}>
      <Card className="grid grid-cols-[auto_minmax(0,1fr)] gap-3 p-3">
        <div className="flex items-center gap-1">
          <Thumb image={input} label="Original" />
          <svg aria-hidden="true" viewBox="0 0 24 24" className="h-4 w-4 shrink-0 text-slate-500 dark:text-slate-400" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" strokeLinejoin="round">
            <path d="M5 12h14m-5-5 5 5-5 5" />
          </svg>
          {result ? (
            <Thumb image={result} label="Result" />
          ) : (
            <div className="flex h-16 w-16 items-center justify-center rounded-md border border-dashed border-slate-300 text-[11px] text-slate-700 dark:border-slate-600 dark:text-slate-300">
              {status === "completed" ? "…" : isTerminal(status) ? "None" : "Pending"}
            </div>
          )}
        </div>
        <div className="grid min-w-0 content-start gap-1.5">
          <Link className="truncate text-sm font-semibold text-brand-700 underline dark:text-brand-100" to={`/jobs/${jobId}`}>
            <span className="sr-only">Job {index + 1}: </span>
            {name}
          </Link>
          <span className="flex items-center gap-2">
            <span className={cn("rounded px-1.5 py-0.5 text-xs font-medium", STATUS_STYLE[status] ?? "bg-brand-50 text-brand-800 dark:bg-slate-800 dark:text-brand-100")}>
              {STATUS_TEXT[status] ?? status}
            </span>
            {job?.queue_position != null && !isTerminal(status) && <span className="text-xs text-slate-700 dark:text-slate-300">#{job.queue_position + 1} in queue</span>}
          </span>
          {job && !isTerminal(status) && (
            <Progress value={status === "processing" ? (job.progress ?? null) : status === "pending" || status === "queued" ? 0 : null} label={`Progress of ${name}`} />
          )}
          {job?.error && <p className="truncate text-xs text-red-700 dark:text-red-300">{job.error.message}</p>}
          {job && !isTerminal(status) && (
            <Button size="sm" variant="ghost" className="justify-self-start" onClick={onCancel}>
              Cancel<span className="sr-only"> {name}</span>
            </Button>
          )}
        </div>
      </Card>
    </li>
  );
}

function Thumb({ image, label }: { image: { url: string; thumbnail_url?: string | null } | null | undefined; label: string }) {
  return (
    <div className="checkerboard relative h-16 w-16 shrink-0 overflow-hidden rounded-md">
      {image && <img src={image.thumbnail_url ?? image.url} alt="" className="h-full w-full object-cover" />}
      <span className="absolute bottom-0.5 left-0.5 rounded bg-slate-900/80 px-1 text-[10px] text-white">{label}</span>
    </div>
  );
}
