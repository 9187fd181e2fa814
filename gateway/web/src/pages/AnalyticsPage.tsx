// The operator's analytics (administrators): jobs per day per workflow, success rate, processing
// time and queue wait percentiles, spend, storage and top users over a range of days, with a
// CSV download. Small hand-drawn SVG charts keep the bundle lean.
import { useState } from "react";
import { ApiError, messageOf } from "@/api/problem";
import { getAnalytics, getAnalyticsCsv, type Analytics, type Range } from "@/api/spend";
import { Button } from "@/components/ui/button";
import { Input, Label } from "@/components/ui/field";
import { Alert, Card, PageTitle, Spinner } from "@/components/ui/misc";
import { dateRange, formatMs, formatRate, formatStorage, niceMax, stackDays, workflowOrder, type Stack } from "@/lib/charts";
import { saveBlob } from "@/lib/download";
import { formatMoney } from "@/lib/estimate";
import { useAsync } from "@/lib/useAsync";

const COLOURS = ["#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#dc2626", "#ca8a04", "#4b5563"];

function isoDate(date: Date): string {
  return date.toISOString().slice(0, 10);
}

function lastDays(days: number): Range {
  const to = new Date();
  const from = new Date(to.getTime() - (days - 1) * 86_400_000);
  return { from: isoDate(from), to: isoDate(to) };
}

function Figure({ label, value, testId }: { label: string; value: string; testId: string }) {
  return (
    <div className="rounded-md border border-slate-200 p-3 dark:border-slate-700">
      <div className="text-xs text-slate-700 dark:text-slate-300">{label}</div>
      <div className="text-lg font-semibold tabular-nums" data-testid={testId}>
        {value}
      </div>
    </div>
  );
}

/** Jobs per day, stacked by workflow. */
function JobsChart({ stacks, workflows }: { stacks: Stack[]; workflows: string[] }) {
  const width = 640;
  const height = 180;
  const max = niceMax(Math.max(0, ...stacks.map((stack) => stack.total)));
  const slot = width / Math.max(1, stacks.length);
  const bar = Math.max(1, slot * 0.8);
  const y = (jobs: number) => height - (jobs / max) * height;
  return (
    <figure className="grid gap-2">
      <svg viewBox={`0 0 ${width} ${height + 16}`} className="h-48 w-full" role="img" aria-label="Jobs per day by workflow">
        <line x1={0} x2={width} y1={height} y2={height} stroke="currentColor" strokeOpacity={0.3} />
        <text x={2} y={10} fontSize={10} fill="currentColor">
          {max}
        </text>
        {stacks.map((stack, index) =>
          stack.segments.map((segment) => (
            <rect
              key={`${stack.date}-${segment.workflow}`}
              x={index * slot + (slot - bar) / 2}
              y={y(segment.start + segment.jobs)}
              width={bar}
              height={(segment.jobs / max) * height}
              fill={COLOURS[workflows.indexOf(segment.workflow) % COLOURS.length]}
            >
              <title>{`${stack.date} · ${segment.workflow}: ${segment.jobs}`}</title>
            </rect>
          )),
        )}
        {stacks.length > 0 && (
          <>
            <text x={0} y={height + 13} fontSize={10} fill="currentColor">
              {stacks[0]?.date}
            </text>
            <text x={width} y={height + 13} fontSize={10} fill="currentColor" textAnchor="end">
              {stacks[stacks.length - 1]?.date}
            </text>
          </>
        )}
      </svg>
      <figcaption className="flex flex-wrap gap-3 text-xs">
        {workflows.map((workflow, index) => (
          <span key={workflow} className="flex items-center gap-1">
            <span aria-hidden="true" className="inline-block h-2 w-2 rounded-sm" style={{ background: COLOURS[index % COLOURS.length] }} />
            {workflow}
          </span>
        ))}
      </figcaption>
    </figure>
  );
}

/** Spend per day, as a line. */
function CostChart({ costs, currency }: { costs: { date: string; cost: number }[]; currency: string }) {
  const width = 640;
  const height = 120;
  const max = niceMax(Math.max(0, ...costs.map((day) => day.cost)));
  const step = costs.length > 1 ? width / (costs.length - 1) : 0;
  const points = costs.map((day, index) => `${(index * step).toFixed(1)},${(height - (day.cost / max) * height).toFixed(1)}`).join(" ");
  return (
    <svg viewBox={`0 0 ${width} ${height + 4}`} className="h-32 w-full" role="img" aria-label="Spend per day">
      <line x1={0} x2={width} y1={height} y2={height} stroke="currentColor" strokeOpacity={0.3} />
      <text x={2} y={10} fontSize={10} fill="currentColor">
        {formatMoney(max, currency)}
      </text>
      <polyline points={points} fill="none" stroke="#2563eb" strokeWidth={2} />
    </svg>
  );
}

function Body({ data }: { data: Analytics }) {
  const money = (amount: number) => formatMoney(amount, data.currency);
  const totals = data.totals;
  const from = data.from?.slice(0, 10) ?? "";
  // `to` is exclusive: the last day shown is the one before.
  const last = data.to ? isoDate(new Date(new Date(data.to).getTime() - 1)) : from;
  const dates = dateRange(from, last);
  const order = workflowOrder(data.days);
  const stacks = stackDays(data.days, dates, order);
  const costByDate = new Map<string, number>();
  for (const day of data.days) costByDate.set(day.date, (costByDate.get(day.date) ?? 0) + day.cost);
  const costs = dates.map((date) => ({ date, cost: costByDate.get(date) ?? 0 }));
  return (
    <>
      <div className="grid grid-cols-2 gap-2 sm:grid-cols-4">
        <Figure label="Jobs" value={String(totals?.jobs ?? 0)} testId="analytics-jobs" />
        <Figure label="Success rate" value={formatRate(totals?.success_rate ?? 0)} testId="analytics-success" />
        <Figure label="Processing p50 / p95" value={`${formatMs(totals?.p50_ms)} / ${formatMs(totals?.p95_ms)}`} testId="analytics-processing" />
        <Figure label="Queue wait p50 / p95" value={`${formatMs(totals?.queue_wait_p50_ms)} / ${formatMs(totals?.queue_wait_p95_ms)}`} testId="analytics-wait" />
        <Figure label="Spend" value={money(totals?.cost ?? 0)} testId="analytics-cost" />
        <Figure label="Storage" value={`${formatStorage(data.storage_bytes)}${data.storage_images != null ? ` · ${data.storage_images} images` : ""}`} testId="analytics-storage" />
      </div>
      <Card className="grid gap-2">
        <h2 className="text-base font-semibold">Jobs per day</h2>
        <JobsChart stacks={stacks} workflows={order} />
      </Card>
      <Card className="grid gap-2">
        <h2 className="text-base font-semibold">Spend per day</h2>
        <CostChart costs={costs} currency={data.currency} />
      </Card>
      <Card className="grid gap-2 overflow-x-auto">
        <h2 className="text-base font-semibold">Workflows</h2>
        <table className="w-full text-sm" data-testid="analytics-workflows">
          <thead>
            <tr className="text-left text-xs text-slate-700 dark:text-slate-300">
              <th className="py-1 pr-2">Workflow</th>
              <th className="pr-2 text-right">Jobs</th>
              <th className="pr-2 text-right">Success</th>
              <th className="pr-2 text-right">p50 / p95</th>
              <th className="pr-2 text-right">Queue p50 / p95</th>
              <th className="text-right">Spend</th>
            </tr>
          </thead>
          <tbody>
            {data.workflows.map((row) => (
              <tr key={row.workflow_id} className="border-t border-slate-100 dark:border-slate-800">
                <td className="py-1 pr-2">{row.workflow_id}</td>
                <td className="pr-2 text-right tabular-nums">{row.jobs}</td>
                <td className="pr-2 text-right tabular-nums">{formatRate(row.success_rate)}</td>
                <td className="pr-2 text-right tabular-nums">{`${formatMs(row.p50_ms)} / ${formatMs(row.p95_ms)}`}</td>
                <td className="pr-2 text-right tabular-nums">{`${formatMs(row.queue_wait_p50_ms)} / ${formatMs(row.queue_wait_p95_ms)}`}</td>
                <td className="text-right tabular-nums">{money(row.cost)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Card>
      <Card className="grid gap-2 overflow-x-auto">
        <h2 className="text-base font-semibold">Top users</h2>
        <table className="w-full text-sm">
          <thead>
            <tr className="text-left text-xs text-slate-700 dark:text-slate-300">
              <th className="py-1 pr-2">User</th>
              <th className="pr-2 text-right">Jobs</th>
              <th className="text-right">Spend</th>
            </tr>
          </thead>
          <tbody>
            {data.top_users.map((user) => (
              <tr key={user.user_id} className="border-t border-slate-100 dark:border-slate-800">
                <td className="py-1 pr-2 font-mono text-xs">{user.user_id}</td>
                <td className="pr-2 text-right tabular-nums">{user.jobs}</td>
                <td className="text-right tabular-nums">{money(user.cost)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Card>
    </>
  );
}

export default function AnalyticsPage() {
  const [range, setRange] = useState<Range>(() => lastDays(30));
  const [draft, setDraft] = useState<Range>(range);
  const [csvError, setCsvError] = useState<string | null>(null);
  const analytics = useAsync(() => getAnalytics(range), [range.from, range.to]);
  const forbidden = analytics.error instanceof ApiError && analytics.error.status === 404;

  const download = async () => {
    setCsvError(null);
    try {
      saveBlob(await getAnalyticsCsv(range), `atelier-analytics-${range.from}-${range.to}.csv`);
    } catch (error) {
      setCsvError(messageOf(error));
    }
  };

  if (forbidden) {
    return (
      <div>
        <PageTitle>Page not found</PageTitle>
      </div>
    );
  }
  return (
    <div className="grid gap-4">
      <PageTitle>Analytics</PageTitle>
      <form
        className="flex flex-wrap items-end gap-2"
        onSubmit={(event) => {
          event.preventDefault();
          setRange(draft);
        }}
      >
        <div className="grid gap-1">
          <Label htmlFor="analytics-from">From</Label>
          <Input id="analytics-from" type="date" value={draft.from} onChange={(event) => setDraft({ ...draft, from: event.target.value })} />
        </div>
        <div className="grid gap-1">
          <Label htmlFor="analytics-to">To</Label>
          <Input id="analytics-to" type="date" value={draft.to} onChange={(event) => setDraft({ ...draft, to: event.target.value })} />
        </div>
        <Button type="submit" variant="secondary">
          Show
        </Button>
        <Button type="button" variant="secondary" onClick={() => void download()}>
          Download CSV
        </Button>
      </form>
      {csvError && <Alert>{csvError}</Alert>}
      {analytics.loading && !analytics.data && <Spinner label="Loading the figures" />}
      {analytics.error ? <Alert>{messageOf(analytics.error)}</Alert> : null}
      {analytics.data && <Body data={analytics.data} />}
    </div>
  );
}
