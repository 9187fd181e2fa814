// The user service's REST endpoints, through the generated client. Profiles and history are
// normalised into the shapes the pages use (tolerating the agreed contract's field names as
// well as the served ones), so a page never depends on one spelling.
import { api, unwrap, type Schemas } from "./client";
import { ApiError } from "./problem";
import type { JsonValue } from "@/lib/schemaForm";

export type Tier = "free" | "pro" | "enterprise";
export type Theme = "system" | "light" | "dark";

export interface Profile {
  id: string;
  email: string;
  display_name: string;
  subscription_tier: Tier;
  created_at: string;
  usage: { jobs_today: number; concurrent_jobs: number; storage_bytes: number; images: number };
  limits: {
    jobs_per_day: number;
    concurrent_jobs: number;
    storage_bytes: number;
    max_file_bytes: number;
    max_retention_days: number;
  };
  jobs_reset_at: string;
}

/** The settings document as served (SettingsBody), with its theme and defaults typed. */
export type UserSettings = Omit<Schemas["SettingsBody"], "theme" | "workflow_defaults"> & {
  theme: Theme;
  workflow_defaults: Record<string, Record<string, JsonValue>>;
};

export interface SettingsDocument {
  revision: number;
  updated_at?: string | null;
  settings: UserSettings;
}

export interface HistoryImage {
  id: string;
  filename: string;
  width: number;
  height: number;
  url: string;
  thumbnail_url: string | null;
}

export interface HistoryItem {
  job_id: string;
  status: string;
  workflow_id: string;
  workflow_name: string;
  parameters: Record<string, JsonValue>;
  created_at: string;
  completed_at: string | null;
  processing_time_ms: number | null;
  error: { code: string; message: string } | string | null;
  input_image: HistoryImage | null;
  result_image: HistoryImage | null;
}

export interface HistoryPage {
  items: HistoryItem[];
  next_cursor: string | null;
}

export interface HistoryFilters {
  status?: string;
  workflow_id?: string;
  from?: string;
  to?: string;
  q?: string;
}

/** 404 / 405 / 501: the endpoint is not deployed on this server (yet). */
export function isMissing(error: unknown): boolean {
  return error instanceof ApiError && (error.status === 404 || error.status === 405 || error.status === 501);
}

type Loose = Record<string, unknown>;
const num = (...values: unknown[]): number => {
  for (const value of values) if (typeof value === "number") return value;
  return 0;
};
const str = (...values: unknown[]): string => {
  for (const value of values) if (typeof value === "string") return value;
  return "";
};
const obj = (value: unknown): Loose => (value && typeof value === "object" ? (value as Loose) : {});

/** The profile as the page uses it, from the agreed contract or the shape the gateway
 * serves (usage counts named `active_jobs` / `image_count`, limits null when unlimited,
 * shown here as 0). */
export function normalizeProfile(raw: unknown): Profile {
  const p = obj(raw);
  const usage = obj(p.usage);
  const limits = obj(p.limits);
  return {
    id: str(p.id),
    email: str(p.email),
    display_name: str(p.display_name),
    subscription_tier: str(p.subscription_tier, "free") as Tier,
    created_at: str(p.created_at),
    usage: {
      jobs_today: num(usage.jobs_today),
      concurrent_jobs: num(usage.concurrent_jobs, usage.active_jobs),
      storage_bytes: num(usage.storage_bytes),
      images: num(usage.images, usage.image_count),
    },
    limits: {
      jobs_per_day: num(limits.jobs_per_day),
      concurrent_jobs: num(limits.concurrent_jobs),
      storage_bytes: num(limits.storage_bytes),
      max_file_bytes: num(limits.max_file_bytes, limits.max_file_size_bytes),
      max_retention_days: num(limits.max_retention_days),
    },
    jobs_reset_at: str(p.jobs_reset_at, usage.jobs_reset_at),
  };
}

export async function getProfile(): Promise<Profile> {
  return normalizeProfile(unwrap(await api.GET("/api/users/profile")));
}

export async function updateProfile(display_name: string): Promise<Profile> {
  return normalizeProfile(unwrap(await api.PATCH("/api/users/profile", { body: { display_name } })));
}

export async function getSettings(): Promise<{ document: SettingsDocument; etag: string | null }> {
  const result = await api.GET("/api/users/settings");
  return { document: unwrap(result) as SettingsDocument, etag: result.response.headers.get("etag") };
}

export async function putSettings(
  settings: UserSettings,
  etag: string | null,
): Promise<{ document: SettingsDocument; etag: string | null }> {
  const result = await api.PUT("/api/users/settings", {
    body: settings,
    params: { header: etag ? { "If-Match": etag } : {} },
  });
  return { document: unwrap(result) as SettingsDocument, etag: result.response.headers.get("etag") };
}

export function historyQuery(filters: HistoryFilters, cursor: string | null, pageSize: number): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filters) as [string, string | undefined][]) if (value) params.set(key, value);
  if (cursor) {
    // The contract's name and the gateway's usual one for the same token.
    params.set("cursor", cursor);
    params.set("page_token", cursor);
  }
  params.set("page_size", String(pageSize));
  return params.toString();
}

function historyImage(raw: unknown): HistoryImage | null {
  if (!raw || typeof raw !== "object") return null;
  const image = raw as Loose;
  return {
    id: str(image.id),
    filename: str(image.original_filename, image.filename),
    width: num(image.width),
    height: num(image.height),
    url: str(image.url),
    thumbnail_url: typeof image.thumbnail_url === "string" ? image.thumbnail_url : null,
  };
}

/** One history entry, flat as in the contract, or with the job nested as the gateway serves it. */
export function normalizeHistoryItem(raw: unknown): HistoryItem {
  const item = obj(raw);
  const job = item.job ? obj(item.job) : item;
  const error = job.error;
  return {
    job_id: str(job.job_id),
    status: str(job.status),
    workflow_id: str(job.workflow_id),
    workflow_name: str(item.workflow_name, job.workflow_id),
    parameters: obj(job.parameters) as Record<string, JsonValue>,
    created_at: str(job.created_at),
    completed_at: typeof job.completed_at === "string" ? job.completed_at : null,
    processing_time_ms: typeof job.processing_time_ms === "number" ? job.processing_time_ms : null,
    error: typeof error === "string" || (error && typeof error === "object") ? (error as HistoryItem["error"]) : null,
    input_image: historyImage(item.input_image),
    result_image: historyImage(item.result_image),
  };
}

export async function getHistory(filters: HistoryFilters, cursor: string | null, pageSize = 24): Promise<HistoryPage> {
  const query = Object.fromEntries(new URLSearchParams(historyQuery(filters, cursor, pageSize)));
  const page = obj(unwrap(await api.GET("/api/users/history", { params: { query } })));
  const items = Array.isArray(page.items) ? page.items.map(normalizeHistoryItem) : [];
  const next = str(page.next_cursor, page.next_page_token);
  return { items, next_cursor: next || null };
}

export async function deleteAccount(): Promise<void> {
  unwrap(await api.DELETE("/api/users/me"));
}

/** "Sign out everywhere": ends every session of the account. */
export async function logoutEverywhere(): Promise<void> {
  unwrap(await api.POST("/api/auth/logout-all"));
}
