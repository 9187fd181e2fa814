// A job's progress: its place in the queue while it waits (nothing to measure yet), the fraction
// fal reports while it runs, else a sweeping indeterminate bar.
import * as ProgressPrimitive from "@radix-ui/react-progress";
import type { Job } from "@/api/client";
import { cn } from "@/lib/cn";
import { phaseOf } from "@/lib/jobState";
import "./job-progress.css";

function ordinal(n: number): string {
  const tens = n % 100;
  if (tens >= 11 && tens <= 13) return `${n}th`;
  return `${n}${["th", "st", "nd", "rd"][n % 10] ?? "th"}`;
}

export function JobProgress({ job }: { job: Job }) {
  const { phase, position, fraction } = phaseOf(job);
  if (phase === "done") return null;
  const text =
    phase === "waiting"
      ? position !== null
        ? `Waiting in the queue: ${ordinal(position)} in line`
        : "Waiting for a free worker"
      : fraction !== null
        ? `Processing: ${Math.round(fraction * 100)}%`
        : "Processing";
  const percent = fraction === null ? null : Math.round(fraction * 100);
  return (
    <div className="grid gap-1.5" data-testid="job-progress" data-phase={phase}>
      <p className="text-sm text-slate-800 dark:text-slate-200" data-testid="job-progress-text">
        {text}
      </p>
      <ProgressPrimitive.Root
        aria-label="Job progress"
        aria-valuetext={text}
        value={percent}
        max={100}
        className="relative h-2 w-full overflow-hidden rounded-full bg-slate-200 dark:bg-slate-700"
      >
        <ProgressPrimitive.Indicator
          data-testid="job-progress-indicator"
          className={cn(
            "h-full rounded-full transition-[width]",
            percent !== null
              ? "bg-brand-600 dark:bg-brand-500"
              : phase === "waiting"
                ? "job-progress-sweep w-2/5 bg-slate-400 dark:bg-slate-500"
                : "job-progress-sweep w-2/5 bg-brand-600 dark:bg-brand-500",
          )}
          style={percent === null ? undefined : { width: `${percent}%` }}
        />
      </ProgressPrimitive.Root>
    </div>
  );
}
