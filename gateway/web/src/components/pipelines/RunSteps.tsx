// A run's steps, in order: each with its status, its job's live progress while it runs, why it
// failed, and a link to its job.
import { Link } from "react-router-dom";
import type { PipelineRun, PipelineRunStep } from "@/api/pipelines";
import { Card, Progress } from "@/components/ui/misc";
import { cn } from "@/lib/cn";

const STATUS_TEXT: Record<PipelineRunStep["status"], string> = {
  pending: "Waiting for the step before",
  running: "Running",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

const STATUS_TONE: Record<PipelineRunStep["status"], string> = {
  pending: "bg-slate-100 text-slate-800 dark:bg-slate-800 dark:text-slate-200",
  running: "bg-sky-100 text-sky-900 dark:bg-sky-950 dark:text-sky-100",
  completed: "bg-emerald-100 text-emerald-900 dark:bg-emerald-950 dark:text-emerald-100",
  failed: "bg-red-100 text-red-900 dark:bg-red-950 dark:text-red-100",
  cancelled: "bg-amber-100 text-amber-900 dark:bg-amber-950 dark:text-amber-100",
};

/** What a running step's job is doing, in words. */
export function stepActivity(step: PipelineRunStep): string {
  if (step.status !== "running") return STATUS_TEXT[step.status];
  switch (step.job_status) {
    case "pending":
    case "queued":
    case undefined:
    case null:
      return "Waiting in the queue";
    case "submitted":
      return "Sent to fal";
    default:
      return step.progress != null ? `Processing: ${Math.round(step.progress * 100)}%` : "Processing";
  }
}

export function RunSteps({ run, names }: { run: PipelineRun; names: Record<string, string> }) {
  return (
    <ol className="grid gap-2" aria-label="Steps">
      {run.steps.map((step) => (
        <li key={step.index} data-testid={`run-step-${step.index}`} data-status={step.status}>
          <Card className="grid gap-2">
            <div className="flex flex-wrap items-center justify-between gap-2">
              <p className="font-medium">
                Step {step.index + 1}: {names[step.workflow_id] ?? step.workflow_id}
              </p>
              <span className={cn("rounded-full px-2 py-0.5 text-xs font-medium", STATUS_TONE[step.status])}>{stepActivity(step)}</span>
            </div>
            {step.status === "running" && <Progress value={step.progress ?? null} label={`Step ${step.index + 1} progress`} />}
            {step.error && <p className="text-sm text-red-700 dark:text-red-300">{step.error}</p>}
            {step.job_id && (
              <p className="text-xs text-slate-600 dark:text-slate-300">
                <Link className="underline" to={`/jobs/${step.job_id}`}>
                  Its job
                </Link>
                {step.attempts > 1 && ` (attempt ${step.attempts})`}
              </p>
            )}
          </Card>
        </li>
      ))}
    </ol>
  );
}
