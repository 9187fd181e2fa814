// What Start will make and cost, before it is pressed: per job and for the batch.
import { formatBytes } from "@/api/upload";
import type { EstimateState } from "@/lib/useEstimate";
import { formatMoney, formatResolution } from "@/lib/estimate";
import { messageOf } from "@/api/problem";
import { useUploads } from "@/stores/uploads";

export function EstimateSummary({ estimate, count }: { estimate: EstimateState; count: number }) {
  const known = useUploads((state) => state.images);
  if (count === 0) return <p className="text-sm text-slate-700 dark:text-slate-300">Select an image to see what this makes and costs.</p>;
  const data = estimate.data;
  const money = (amount: number | null | undefined) => (data?.currency && amount != null ? formatMoney(amount, data.currency) : null);
  const total = money(data?.total_cost);
  const bytes = data?.jobs.reduce((sum, job) => sum + job.estimated_bytes, 0) ?? 0;
  const first = data?.jobs[0];
  const main = first?.outputs[0];
  // Priced, but in a unit only the run can tell (e.g. GPU seconds).
  const later = data && data.unit_price != null && data.total_cost == null ? " · cost known after the run" : "";
  return (
    <div className="grid gap-1 text-sm" data-testid="estimate" aria-live="polite" aria-busy={estimate.loading}>
      {estimate.error ? (
        <p className="text-red-700 dark:text-red-300">{messageOf(estimate.error)}</p>
      ) : !data ? (
        <p className="text-slate-700 dark:text-slate-300">Estimating…</p>
      ) : count === 1 && first ? (
        <p className="text-slate-800 dark:text-slate-200">
          {main && (
            <>
              Output <strong data-testid="estimate-resolution">{formatResolution(main.width, main.height)}</strong>
              {first.outputs.length > 1 && ` + ${first.outputs.length - 1} more`} ·{" "}
            </>
          )}
          up to <strong data-testid="estimate-size">{formatBytes(first.estimated_bytes)}</strong>
          {total && (
            <>
              {" "}
              · <strong data-testid="estimate-cost">{total}</strong>
            </>
          )}
          {later}
        </p>
      ) : (
        <details className="text-slate-800 dark:text-slate-200">
          <summary className="cursor-pointer rounded-sm focus-visible:outline focus-visible:outline-2 focus-visible:outline-brand-600 dark:focus-visible:outline-brand-100">
            {data.jobs.length} jobs · up to <strong data-testid="estimate-size">{formatBytes(bytes)}</strong> in all
            {total && (
              <>
                {" "}
                · <strong data-testid="estimate-cost">{total}</strong> for the batch
              </>
            )}
            {later}
          </summary>
          <ul className="mt-1 grid max-h-40 gap-0.5 overflow-y-auto text-xs" aria-label="Estimate per job">
            {data.jobs.map((job) => {
              const image = known[job.image_id];
              const output = job.outputs[0];
              return (
                <li key={job.image_id} className="flex justify-between gap-2" data-testid="estimate-job">
                  <span className="truncate">{image ? image.original_filename || image.filename : job.image_id}</span>
                  <span className="shrink-0">
                    {output ? `${formatResolution(output.width, output.height)} · ` : ""}
                    {formatBytes(job.estimated_bytes)}
                    {money(job.cost) ? ` · ${money(job.cost)}` : ""}
                    {!job.allowed ? " · refused" : ""}
                  </span>
                </li>
              );
            })}
          </ul>
        </details>
      )}
    </div>
  );
}
