// The user service's REST endpoints. Coded against the agreed contract while they land in
// the gateway; once the OpenAPI snapshot describes them, these types come from it instead.
import { authedFetch, authedJson } from "./client";
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

export interface UserSettings {
  theme: Theme;
  retention_days: number | null;
  notifications: { job_completed: boolean; job_failed: boolean };
  default_workflow_id: string | null;
  workflow_defaults: Record<string, Record<string, JsonValue>>;
}

export interface SettingsDocument {
  revision: number;
  updated_at: string;
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

export function getProfile(): Promise<Profile> {
  return authedJson<Profile>("/api/users/profile");
}

export function updateProfile(display_name: string): Promise<Profile> {
  return authedJson<Profile>("/api/users/profile", { method: "PATCH", body: JSON.stringify({ display_name }) });
}

export async function getSettings(): Promise<{ document: SettingsDocument; etag: string | null }> {
  const response = await authedFetch("/api/users/settings");
  return { document: (await response.json()) as SettingsDocument, etag: response.headers.get("etag") };
}

export async function putSettings(
  settings: UserSettings,
  etag: string | null,
): Promise<{ document: SettingsDocument; etag: string | null }> {
  const response = await authedFetch("/api/users/settings", {
    method: "PUT",
    body: JSON.stringify(settings),
    headers: etag ? { "if-match": etag } : {},
  });
  return { document: (await response.json()) as SettingsDocument, etag: response.headers.get("etag") };
}

export function historyQuery(filters: HistoryFilters, cursor: string | null, pageSize: number): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filters) as [string, string | undefined][]) if (value) params.set(key, value);
  if (cursor) params.set("cursor", cursor);
  params.set("page_size", String(pageSize));
  return params.toString();
}

export function getHistory(filters: HistoryFilters, cursor: string | null, pageSize = 24): Promise<HistoryPage> {
  return authedJson<HistoryPage>(`/api/users/history?${historyQuery(filters, cursor, pageSize)}`);
}

export async function deleteAccount(): Promise<void> {
  await authedFetch("/api/users/me", { method: "DELETE" });
}

/** "Sign out everywhere": ends every session of the account. */
export async function logoutEverywhere(): Promise<void> {
  await authedFetch("/api/auth/logout-all", { method: "POST" });
}
