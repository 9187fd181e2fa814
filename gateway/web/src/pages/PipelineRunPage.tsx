// One pipeline run: its steps with live progress (the run's SSE stream), cancel while it runs,
// retry from the failed step, and once completed the final result compared with the original
// and downloadable, as a single job's is.
import { useEffect, useMemo, useState } from "react";
import { useParams } from "react-router-dom";
import { workflows } from "@/api/catalogue";
import { api, unwrap } from "@/api/client";
import { cancelRun, getRun, retryRun, watchRun, type PipelineRun } from "@/api/pipelines";
import { messageOf } from "@/api/problem";
import { JobOutputs } from "@/components/JobOutputs";
import { RunSteps } from "@/components/pipelines/RunSteps";
import { Button } from "@/components/ui/button";
import { Alert, PageTitle, Spinner } from "@/components/ui/misc";
import { useAsync } from "@/lib/useAsync";

const RUN_STATUS: Record<PipelineRun["status"], string> = {
  running: "Running",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

/** Follows a run live; a retried run is followed again. */
function useLiveRun(runId: string) {
  const loaded = useAsync(() => getRun(runId), [runId]);
  const [run, setRun] = useState<PipelineRun | null>(null);
  const [follow, setFollow] = useState(0);
  useEffect(() => {
    if (loaded.data) setRun(loaded.data);
  }, [loaded.data]);
  useEffect(() => {
    const subscription = watchRun(runId, {
      onRun: setRun,
      onEnd: () => undefined,
      onError: () => undefined,
    });
    return () => subscription.close();
  }, [runId, follow]);
  return { run, error: loaded.error, setRun, refollow: () => setFollow((n) => n + 1) };
}

export default function PipelineRunPage() {
  const { runId = "" } = useParams();
  const { run, error, setRun, refollow } = useLiveRun(runId);
  const catalogue = useAsync(workflows, []);
  const names = useMemo(() => Object.fromEntries((catalogue.data ?? []).map((w) => [w.id, w.name])), [catalogue.data]);
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<string | null>(null);
  const last = run?.status === "completed" ? run.steps[run.steps.length - 1] : undefined;
  const lastJob = useAsync(
    () => (last?.job_id ? api.GET("/api/processing/{job_id}/status", { params: { path: { job_id: last.job_id } } }).then(unwrap) : Promise.resolve(null)),
    [last?.job_id],
  );
  const input = useAsync(() => (run ? api.GET("/api/images/{id}", { params: { path: { id: run.image_id } } }).then(unwrap) : Promise.resolve(null)), [run?.image_id]);

  const act = async (action: () => Promise<PipelineRun>, follow: boolean) => {
    setBusy(true);
    setActionError(null);
    try {
      setRun(await action());
      if (follow) refollow();
    } catch (err) {
      setActionError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };

  if (error) return <Alert>{messageOf(error)}</Alert>;
  if (!run) return <Spinner label="Loading the run" />;
  const failedStep = run.steps[run.current_step];
  return (
    <div className="mx-auto grid max-w-3xl gap-4">
      <PageTitle>{run.pipeline_name ?? "Pipeline run"}</PageTitle>
      <div className="flex flex-wrap items-center justify-between gap-2">
        <p data-testid="run-status" data-status={run.status} className="text-sm font-medium">
          {RUN_STATUS[run.status]}
          {run.status === "running" && ` — step ${run.current_step + 1} of ${run.steps.length}`}
        </p>
        <div className="flex gap-2">
          {run.status === "running" && (
            <Button variant="danger" disabled={busy} onClick={() => void act(() => cancelRun(run.id), false)}>
              Cancel run
            </Button>
          )}
          {(run.status === "failed" || run.status === "cancelled") && failedStep && (
            <Button disabled={busy} onClick={() => void act(() => retryRun(run.id), true)}>
              Retry from step {failedStep.index + 1}
            </Button>
          )}
        </div>
      </div>
      {run.error && <Alert>{run.error}</Alert>}
      {actionError && <Alert>{actionError}</Alert>}
      <RunSteps run={run} names={names} />
      {lastJob.data && lastJob.data.outputs.length > 0 && (
        <JobOutputs
          jobId={lastJob.data.job_id}
          workflowId={lastJob.data.workflow_id}
          outputs={lastJob.data.outputs}
          input={input.loading ? undefined : (input.data ?? null)}
          workflowName={run.pipeline_name ?? "the pipeline"}
        />
      )}
    </div>
  );
}
