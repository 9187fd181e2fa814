// The user's spend against their budgets: a card for the settings page, the banner shown from
// the alert share on, and the line the studio shows next to the estimate.
import type { Spend } from "@/api/spend";
import { Alert, Card, Progress } from "@/components/ui/misc";
import { formatMoney } from "@/lib/estimate";
import { budgetBanner, budgetLines } from "@/lib/spend";

function PeriodRow({ spend, which }: { spend: Spend; which: "day" | "month" }) {
  const period = spend[which];
  if (!period) return null;
  const money = (amount: number) => formatMoney(amount, spend.currency);
  const used = period.spent + period.reserved;
  const label = which === "day" ? "Today" : "This month";
  const text = period.budget == null ? `${money(used)} · no budget` : `${money(used)} of ${money(period.budget)}`;
  return (
    <div className="grid gap-1" data-testid={`spend-${which}`}>
      <div className="flex justify-between text-sm">
        <span>{label}</span>
        <span className="tabular-nums">{text}</span>
      </div>
      {period.budget != null && <Progress value={period.budget > 0 ? Math.min(1, used / period.budget) : 1} label={`${label}: ${text}`} />}
      {period.reserved > 0 && <span className="text-xs text-slate-700 dark:text-slate-300">{money(period.reserved)} of it for jobs still running</span>}
    </div>
  );
}

export function BudgetBanner({ spend }: { spend: Spend | undefined }) {
  if (!spend) return null;
  const text = budgetBanner(spend, (amount) => formatMoney(amount, spend.currency));
  return text ? (
    <Alert tone="info" className="border-amber-300 bg-amber-50 text-amber-900 dark:border-amber-700 dark:bg-amber-950 dark:text-amber-100">
      <span data-testid="budget-banner">{text}</span>
    </Alert>
  ) : null;
}

export function SpendCard({ spend, error }: { spend: Spend | undefined; error?: string | null }) {
  return (
    <Card className="grid gap-3" data-testid="spend-card">
      <h2 className="text-lg font-semibold">Spend</h2>
      {error && <Alert>{error}</Alert>}
      {spend && (
        <>
          <BudgetBanner spend={spend} />
          <PeriodRow spend={spend} which="day" />
          <PeriodRow spend={spend} which="month" />
          <p className="text-sm text-slate-700 dark:text-slate-300">
            What your jobs cost at fal (UTC days and months) · budgets from {spend.budget_source === "override" ? "your administrator" : "your plan"}
            {spend.hard_stop ? " · jobs that would go past a budget do not start" : ""}
          </p>
        </>
      )}
    </Card>
  );
}

/** The studio's line under the estimate: what is left of the tightest budget, and after
 * this run. */
export function BudgetLeft({ spend, estimate }: { spend: Spend | undefined; estimate: number | null | undefined }) {
  if (!spend) return null;
  const line = budgetLines(spend, estimate ?? null)[0];
  if (!line) return null;
  const money = (amount: number) => formatMoney(amount, spend.currency);
  const which = line.period === "day" ? "today" : "this month";
  return (
    <p className={line.over ? "text-sm text-red-700 dark:text-red-300" : "text-sm text-slate-700 dark:text-slate-300"} data-testid="budget-left">
      Budget left {which}: <strong>{money(line.left)}</strong>
      {line.after != null && (line.over ? ` · this run would go past it${spend.hard_stop ? " and will not start" : ""}` : ` · ${money(line.after)} after this run`)}
    </p>
  );
}
