// The arithmetic of the analytics page's small SVG charts: axis maxima, stacked bars per day,
// and the formats of durations and rates.

/** The smallest "nice" number (1, 2 or 5 × 10ⁿ) at or above `max`; 1 for nothing. */
export function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= max - 1e-12) return step * power;
  }
  return 10 * power;
}

/** Every date from `from` to `to` (`YYYY-MM-DD`, both included), at most `limit`. */
export function dateRange(from: string, to: string, limit = 400): string[] {
  const dates: string[] = [];
  const day = new Date(`${from}T00:00:00Z`);
  const end = new Date(`${to}T00:00:00Z`);
  if (Number.isNaN(day.getTime()) || Number.isNaN(end.getTime())) return dates;
  while (day <= end && dates.length < limit) {
    dates.push(day.toISOString().slice(0, 10));
    day.setUTCDate(day.getUTCDate() + 1);
  }
  return dates;
}

export interface DayRow {
  date: string;
  workflow_id: string;
  jobs: number;
}

export interface Segment {
  workflow: string;
  /** From the bottom, in jobs. */
  start: number;
  jobs: number;
}

export interface Stack {
  date: string;
  total: number;
  segments: Segment[];
}

/** Jobs per day as stacks of workflows (in `workflows` order), a stack for every date of
 * the range, empty ones included. */
export function stackDays(rows: DayRow[], dates: string[], workflows: string[]): Stack[] {
  const byDate = new Map<string, Map<string, number>>();
  for (const row of rows) {
    const day = byDate.get(row.date) ?? new Map<string, number>();
    day.set(row.workflow_id, (day.get(row.workflow_id) ?? 0) + row.jobs);
    byDate.set(row.date, day);
  }
  return dates.map((date) => {
    const day = byDate.get(date);
    let start = 0;
    const segments: Segment[] = [];
    for (const workflow of workflows) {
      const jobs = day?.get(workflow) ?? 0;
      if (jobs > 0) segments.push({ workflow, start, jobs });
      start += jobs;
    }
    return { date, total: start, segments };
  });
}

/** The workflows of `rows`, most jobs first (then by id), so colours stay put. */
export function workflowOrder(rows: DayRow[]): string[] {
  const totals = new Map<string, number>();
  for (const row of rows) totals.set(row.workflow_id, (totals.get(row.workflow_id) ?? 0) + row.jobs);
  return [...totals.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([id]) => id);
}

/** "850 ms", "1.2 s", "3 min 5 s"; an en dash when unknown. */
export function formatMs(ms: number | null | undefined): string {
  if (ms == null) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** A rate from 0 to 1 as "87.5%". */
export function formatRate(rate: number): string {
  return `${(Math.round(rate * 1000) / 10).toString()}%`;
}

/** A byte count as "1.5 GB" (decimal units, as storage is billed). */
export function formatStorage(bytes: number | null | undefined): string {
  if (bytes == null) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}
