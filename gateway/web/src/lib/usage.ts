// Use against a limit of the plan, as the settings page shows it. The API reports no limit as
// `null` (LimitsBody), never as 0: 0 would be a limit nothing fits under.

export interface UsageView {
  /** "3 of 10", or "3 used · Unlimited". */
  text: string;
  /** How full, from 0 to 1; null when there is no limit to fill. */
  fraction: number | null;
}

export function usageView(used: number, limit: number | null | undefined, format: (n: number) => string = String): UsageView {
  if (limit == null) return { text: `${format(used)} used · Unlimited`, fraction: null };
  return { text: `${format(used)} of ${format(limit)}`, fraction: limit > 0 ? Math.min(1, used / limit) : 1 };
}
