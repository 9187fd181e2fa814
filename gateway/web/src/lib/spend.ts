// What the budget means for the user: what is left, what this run leaves, and when to warn.
// The API sends `null` for no budget; amounts are in the spend's currency.

export interface PeriodLike {
  period: string;
  spent: number;
  reserved: number;
  budget?: number | null;
  percent?: number | null;
  remaining?: number | null;
  end?: string | null;
}

export interface SpendLike {
  currency: string;
  alert_percent: number;
  hard_stop: boolean;
  day?: PeriodLike | null;
  month?: PeriodLike | null;
}

export interface BudgetLine {
  period: "day" | "month";
  budget: number;
  /** Spent and reserved so far. */
  used: number;
  /** Left now, never below 0. */
  left: number;
  /** Left after a run costing the estimate; below 0 when it does not fit. */
  after: number | null;
  /** Used in percent of the budget, with the run when one is given. */
  percent: number;
  /** At or past the alert share. */
  warn: boolean;
  /** The run would be refused (hard stop) or overrun the budget. */
  over: boolean;
}

const round = (n: number) => Math.round(n * 1e6) / 1e6;

/** Each period with a budget, the tightest first (least left after the run). */
export function budgetLines(spend: SpendLike, estimate: number | null = null): BudgetLine[] {
  const lines: BudgetLine[] = [];
  for (const period of [spend.day, spend.month]) {
    if (!period || period.budget == null) continue;
    const used = round(period.spent + period.reserved);
    const withRun = estimate == null ? used : round(used + estimate);
    const budget = period.budget;
    const percent = budget > 0 ? (withRun / budget) * 100 : 100;
    lines.push({
      period: period.period === "day" ? "day" : "month",
      budget,
      used,
      left: round(Math.max(0, budget - used)),
      after: estimate == null ? null : round(budget - withRun),
      percent,
      warn: percent >= spend.alert_percent,
      over: withRun > budget + 1e-9 || (estimate == null && used >= budget && budget >= 0 && percent >= 100),
    });
  }
  return lines.sort((a, b) => (a.after ?? a.left) - (b.after ?? b.left));
}

/** The banner to show, if any: past the alert share of a budget, or used up. */
export function budgetBanner(spend: SpendLike, format: (amount: number) => string): string | null {
  const line = budgetLines(spend)[0];
  if (!line || !line.warn) return null;
  const which = line.period === "day" ? "today's" : "this month's";
  if (line.used >= line.budget) {
    return spend.hard_stop
      ? `You have used ${which} budget of ${format(line.budget)}: new jobs start again when the period ends.`
      : `You have used ${which} budget of ${format(line.budget)}.`;
  }
  return `You have used ${Math.floor(line.percent)}% of ${which} budget (${format(line.used)} of ${format(line.budget)}).`;
}
