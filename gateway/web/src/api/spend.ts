// Spend and analytics through the generated client: the caller's spend and budgets, and
// for administrators the analytics figures, per workflow and as CSV.
import { api, unwrap, type Schemas } from "./client";

export type Spend = Schemas["SpendBody"];
export type PeriodSpend = Schemas["PeriodSpendBody"];
export type BudgetAlert = Schemas["BudgetAlertBody"];
export type Analytics = Schemas["AnalyticsBody"];
export type WorkflowFigures = Schemas["WorkflowFiguresBody"];
export type DayCount = Schemas["DayCountBody"];

export async function getMySpend(): Promise<Spend> {
  return unwrap(await api.GET("/api/users/me/spend"));
}

/** The range the analytics are asked for: `YYYY-MM-DD` dates, `to` included. */
export interface Range {
  from: string;
  to: string;
}

export async function getAnalytics(range: Range): Promise<Analytics> {
  return unwrap(await api.GET("/api/admin/analytics", { params: { query: { from: range.from, to: range.to, top: 10 } } }));
}

/** The figures as CSV, as the export route serves them. */
export async function getAnalyticsCsv(range: Range): Promise<Blob> {
  const result = await api.GET("/api/admin/analytics/export.csv", {
    params: { query: { from: range.from, to: range.to } },
    parseAs: "blob",
  });
  return unwrap<Blob>(result);
}
