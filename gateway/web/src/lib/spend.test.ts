import { describe, expect, it } from "vitest";
import { budgetBanner, budgetLines, type SpendLike } from "./spend";

const spend = (month: { spent: number; reserved?: number; budget: number | null }, day?: { spent: number; budget: number | null }): SpendLike => ({
  currency: "USD",
  alert_percent: 80,
  hard_stop: true,
  month: { period: "month", spent: month.spent, reserved: month.reserved ?? 0, budget: month.budget },
  day: day ? { period: "day", spent: day.spent, reserved: 0, budget: day.budget } : null,
});
const usd = (n: number) => `$${n.toFixed(2)}`;

describe("budgetLines", () => {
  it("says what is left now and after the run", () => {
    const [line] = budgetLines(spend({ spent: 3, reserved: 1, budget: 10 }), 2);
    expect(line).toMatchObject({ period: "month", used: 4, left: 6, after: 4, percent: 60, warn: false, over: false });
  });

  it("warns at the alert share and flags a run that does not fit", () => {
    const [line] = budgetLines(spend({ spent: 7, budget: 10 }), 1);
    expect(line?.warn).toBe(true);
    expect(line?.over).toBe(false);
    expect(budgetLines(spend({ spent: 9.5, budget: 10 }), 1)[0]?.over).toBe(true);
  });

  it("skips periods without a budget and puts the tightest first", () => {
    expect(budgetLines(spend({ spent: 5, budget: null }))).toEqual([]);
    const lines = budgetLines(spend({ spent: 5, budget: 100 }, { spent: 1, budget: 2 }), 0.5);
    expect(lines.map((line) => line.period)).toEqual(["day", "month"]);
  });

  it("does not add float noise", () => {
    const [line] = budgetLines(spend({ spent: 0.1, reserved: 0.2, budget: 0.4 }), 0.1);
    expect(line?.after).toBe(0);
  });
});

describe("budgetBanner", () => {
  it("is shown from the alert share on", () => {
    expect(budgetBanner(spend({ spent: 7.9, budget: 10 }), usd)).toBeNull();
    expect(budgetBanner(spend({ spent: 8.5, budget: 10 }), usd)).toBe("You have used 85% of this month's budget ($8.50 of $10.00).");
  });

  it("says when a used-up budget lets jobs start again", () => {
    expect(budgetBanner(spend({ spent: 10, budget: 10 }), usd)).toMatch(/new jobs start again when the period ends/);
  });
});
