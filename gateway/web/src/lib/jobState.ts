// A job as the page shows it: the status read once, then advanced by its live events.
import type { Job, JobStatus } from "@/api/client";

/** Every job status, for reading the untyped data of events. */
const JOB_STATUSES: readonly JobStatus[] = ["pending", "queued", "submitted", "processing", "completed", "failed", "cancelled"];

function isJobStatus(value: unknown): value is JobStatus {
  return JOB_STATUSES.includes(value as JobStatus);
}

export const TERMINAL = ["completed", "failed", "cancelled"] as const;

export function isTerminal(status: string): boolean {
  return (TERMINAL as readonly string[]).includes(status);
}

export interface JobEvent {
  kind: string;
  seq: number;
  data: Record<string, unknown>;
}

export interface LiveJob {
  job: Job;
  lastSeq: number;
  logs: string[];
  /** The job as last read from its status (its outputs known), not advanced by events since. */
  read: boolean;
}

export function liveFrom(job: Job): LiveJob {
  return { job, lastSeq: 0, logs: [...job.logs], read: true };
}

/** A fresh read of the status over the live state: its fields win. Its logs are the same lines as
 * the stream's log events (the server keeps them as events); once the stream has been read, its
 * lines are kept unless the status has more, so the count never jumps when the job finishes. */
export function withStatus(state: LiveJob | null, job: Job): LiveJob {
  if (!state || state.lastSeq === 0) return liveFrom(job);
  const logs = job.logs.length > state.logs.length ? [...job.logs] : state.logs;
  return { job, lastSeq: state.lastSeq, logs, read: true };
}

/** Applies one event; events already seen (a replay after reconnecting) change nothing.
 * A stream read from its start (no event seen yet) replays every log line the status already
 * listed: those lines are replaced by the stream's, not added to them. */
export function applyEvent(state: LiveJob, event: JobEvent): LiveJob {
  if (event.seq <= state.lastSeq) return state;
  const data = event.data;
  const job: Job = { ...state.job };
  let logs = state.lastSeq === 0 ? [] : state.logs;
  if (isJobStatus(data.status)) {
    job.status = data.status;
    if (data.status !== "queued" && data.status !== "pending") job.queue_position = null;
    if (data.status === "processing" && !job.started_at && typeof data.at === "string") job.started_at = data.at;
    if (isTerminal(data.status) && !job.completed_at && typeof data.at === "string") job.completed_at = data.at;
    if (data.status === "completed") job.progress = 1;
  }
  if (typeof data.queue_position === "number") job.queue_position = data.queue_position;
  if (typeof data.progress === "number") job.progress = data.progress;
  if (typeof data.result_image_id === "string") job.result_image_id = data.result_image_id;
  const error = data.error as { code?: unknown; message?: unknown; retryable?: unknown } | undefined;
  if (error && typeof error === "object") {
    job.error = {
      code: typeof error.code === "string" ? error.code : "error",
      message: typeof error.message === "string" ? error.message : "The job failed.",
      retryable: error.retryable === true,
    };
  }
  // A log event holds fal's new lines: { logs: [{ level, message, timestamp }] }.
  if (Array.isArray(data.logs)) {
    const fresh = (data.logs as { message?: unknown }[]).map((log) => log.message).filter((message): message is string => typeof message === "string");
    logs = [...logs, ...fresh];
  }
  return { job, lastSeq: event.seq, logs, read: false };
}

export type Phase = "waiting" | "running" | "done";

/** What the progress display shows: a place in the queue while waiting (nothing has started,
 * so there is no fraction to show), the fraction while running when fal reports one (else an
 * indeterminate bar), nothing once finished. */
export function phaseOf(job: Job): { phase: Phase; position: number | null; fraction: number | null } {
  if (isTerminal(job.status)) return { phase: "done", position: null, fraction: null };
  if (job.status === "processing") {
    const p = job.progress;
    return { phase: "running", position: null, fraction: typeof p === "number" && p > 0 && p < 1 ? p : null };
  }
  return { phase: "waiting", position: job.queue_position != null ? job.queue_position + 1 : null, fraction: null };
}

/** Milliseconds the job has run (or ran), for the elapsed-time display. */
export function elapsedMs(job: Job, now: number): number | null {
  if (job.processing_time_ms != null && isTerminal(job.status)) return job.processing_time_ms;
  const start = job.created_at ? Date.parse(job.created_at) : NaN;
  if (Number.isNaN(start)) return null;
  const end = job.completed_at ? Date.parse(job.completed_at) : now;
  return Math.max(0, end - start);
}

export function formatDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${seconds % 60} s`;
}
