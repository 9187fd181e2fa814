// Prices and estimates as the studio shows them.
import type { Workflow } from "@/api/client";

/** A price with as many decimals as small fal prices need ($0.0025), at least two. */
export function formatMoney(amount: number, currency: string): string {
  try {
    return new Intl.NumberFormat("en-US", { style: "currency", currency, minimumFractionDigits: 2, maximumFractionDigits: 4 }).format(amount);
  } catch {
    return `${amount.toFixed(4)} ${currency}`;
  }
}

/** "per image", "per megapixel": fal's unit names, read as English. */
export function unitLabel(unit: string): string {
  const clean = unit.replace(/_/g, " ").toLowerCase();
  return clean.endsWith("s") && clean !== "pass" ? clean.slice(0, -1) : clean;
}

/** "$0.02 / image", or null when the workflow has no known price. */
export function priceLabel(workflow: Workflow): string | null {
  const pricing = workflow.pricing;
  return pricing ? `${formatMoney(pricing.unit_price, pricing.currency)} / ${unitLabel(pricing.unit)}` : null;
}

/** "4000×3000 (12 MP)". */
export function formatResolution(width: number, height: number): string {
  const mp = (width * height) / 1_000_000;
  return `${width}×${height}${mp >= 0.1 ? ` (${mp >= 10 ? mp.toFixed(0) : mp.toFixed(1)} MP)` : ""}`;
}
