// A batch: its tally, refreshed until every job has finished, and a link to each job.
import { useEffect } from "react";
import { Link, useParams } from "react-router-dom";
import { api, unwrap } from "@/api/client";
import { messageOf } from "@/api/problem";
import { Button } from "@/components/ui/button";
import { Alert, Card, PageTitle, Progress, Spinner } from "@/components/ui/misc";
import { useAsync } from "@/lib/useAsync";

export default function BatchPage() {
  const { batchId = "" } = useParams();
  const batch = useAsync(
    async () => unwrap(await api.GET("/api/processing/batch/{batch_id}", { params: { path: { batch_id: batchId } } })),
    [batchId],
  );
  const running = batch.data?.status === "running";
  const { reload } = batch;
  useEffect(() => {
    if (!running) return;
    const timer = setInterval(reload, 2000);
    return () => clearInterval(timer);
  }, [running, reload]);

  const cancel = async () => {
    await api.POST("/api/processing/batch/{batch_id}/cancel", { params: { path: { batch_id: batchId } } });
    reload();
  };

  return (
    <div className="grid gap-4">
      <PageTitle>Batch</PageTitle>
      {batch.error ? <Alert>{messageOf(batch.error)}</Alert> : null}
      {!batch.data && !batch.error && <Spinner label="Loading the batch" />}
      {batch.data && (
        <Card className="grid gap-3">
          <p>
            {batch.data.completed} completed, {batch.data.failed} failed, {batch.data.cancelled} cancelled, {batch.data.running} running,{" "}
            {batch.data.waiting} waiting, of {batch.data.total}
          </p>
          <Progress value={batch.data.progress} label="Batch progress" />
          {running && (
            <Button variant="danger" className="justify-self-start" onClick={() => void cancel()}>
              Cancel batch
            </Button>
          )}
          <ul className="grid gap-1">
            {batch.data.job_ids.map((id, index) => (
              <li key={id}>
                <Link className="text-brand-700 underline dark:text-brand-100" to={`/jobs/${id}`}>
                  Job {index + 1}
                </Link>
              </li>
            ))}
          </ul>
        </Card>
      )}
    </div>
  );
}
