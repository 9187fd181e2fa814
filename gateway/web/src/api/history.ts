// History's date filters: the server filters by instants; the date inputs hold days.

/** The date inputs' days (YYYY-MM-DD, local time) as the instants the API filters by:
 * `from` the start of its day, `to` the start of the next (exclusive), both RFC 3339. */
export function dayRange(from: string | undefined, to: string | undefined): { from?: string; to?: string } {
  const start = (day: string) => new Date(`${day}T00:00:00`);
  const range: { from?: string; to?: string } = {};
  if (from) range.from = start(from).toISOString();
  if (to) {
    const end = start(to);
    end.setDate(end.getDate() + 1);
    range.to = end.toISOString();
  }
  return range;
}

/** Why the date inputs' days (YYYY-MM-DD) cannot be used, or null. */
export function dateProblem(from: string | undefined, to: string | undefined): string | null {
  if (from && to && from > to) return "The From date is after the To date. Choose a From date on or before the To date.";
  return null;
}
