// The rules of share links as the app shows them: the expiry choices, how a link's state and
// expiry read, and the file name a shared image downloads under.
import { ApiError } from "@/api/problem";

export interface ExpiryChoice {
  label: string;
  seconds: number;
}

const DAY = 24 * 60 * 60;

/** The expiries offered when sharing (the server allows 1 minute to SHARE_MAX_DAYS, 90 by default). */
export const EXPIRY_CHOICES: ExpiryChoice[] = [
  { label: "1 hour", seconds: 60 * 60 },
  { label: "1 day", seconds: DAY },
  { label: "7 days", seconds: 7 * DAY },
  { label: "30 days", seconds: 30 * DAY },
  { label: "90 days", seconds: 90 * DAY },
];

/** The choice selected at first: a week, the server's default. */
export const DEFAULT_EXPIRY = 7 * DAY;

export type ShareState = "active" | "expired" | "revoked";

/** "in 3 days", "in 5 hours", "in 12 minutes", "expired": when a link stops working, from `now`. */
export function expiresIn(expiresAt: string | null | undefined, now: Date = new Date()): string {
  if (!expiresAt) return "expired";
  const ms = new Date(expiresAt).getTime() - now.getTime();
  if (!(ms > 0)) return "expired";
  const minutes = Math.floor(ms / 60000);
  const plural = (n: number, unit: string) => `in ${n} ${unit}${n === 1 ? "" : "s"}`;
  if (minutes >= 2 * 24 * 60) return plural(Math.floor(minutes / (24 * 60)), "day");
  if (minutes >= 2 * 60) return plural(Math.floor(minutes / 60), "hour");
  return minutes < 1 ? "in less than a minute" : plural(minutes, "minute");
}

/** A link's state at `now`: the server's verdict, unless the link ran out since it was read. */
export function stateAt(link: { state: ShareState; expires_at?: string | null }, now: Date = new Date()): ShareState {
  if (link.state !== "active") return link.state;
  return expiresIn(link.expires_at, now) === "expired" ? "expired" : "active";
}

const EXTENSIONS: Record<string, string> = {
  "image/png": "png",
  "image/jpeg": "jpg",
  "image/webp": "webp",
  "image/gif": "gif",
  "image/tiff": "tiff",
};

/** The name a shared image downloads under: nothing of its owner's file name. */
export function sharedFileName(mimeType: string, role: "image" | "before" = "image"): string {
  const extension = EXTENSIONS[mimeType] ?? "img";
  return `${role === "before" ? "atelier-before" : "atelier-shared"}.${extension}`;
}

/** The page of a token on this site, when the server did not name one. */
export function shareUrl(token: string, origin: string): string {
  return `${origin.replace(/\/+$/, "")}/s/${encodeURIComponent(token)}`;
}

/** Whether an error means the link is no more (the server answers 404 alike for every reason). */
export function isGone(error: unknown): boolean {
  return error instanceof ApiError && error.status === 404;
}

/** How long until fresh image URLs are needed: a little before they expire, at least 10 s. */
export function refreshDelay(urlExpiresAt: string | null | undefined, now: number = Date.now()): number | null {
  if (!urlExpiresAt) return null;
  const at = new Date(urlExpiresAt).getTime();
  if (Number.isNaN(at)) return null;
  return Math.max(10_000, at - now - 30_000);
}
