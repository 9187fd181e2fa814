// The user service's REST endpoints, through the generated client: profile, settings, history,
// the account.
import { api, unwrap, type Schemas } from "./client";
import type { JsonValue } from "@/lib/schemaForm";

export type Theme = "system" | "light" | "dark";

/** The caller's profile; a limit of `null` is no limit. */
export type Profile = Schemas["ProfileBody"];
export type Limits = Schemas["LimitsBody"];

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

/** One job of the history (the job's fields, flat) with its input and result images. */
export type HistoryItem = Schemas["HistoryItem"];
export type HistoryPage = Schemas["HistoryPage"];

export interface HistoryFilters {
  status?: string;
  workflow_id?: string;
  from?: string;
  to?: string;
  q?: string;
}

export async function getProfile(): Promise<Profile> {
  return unwrap(await api.GET("/api/users/profile"));
}

export async function updateProfile(display_name: string): Promise<Profile> {
  return unwrap(await api.PATCH("/api/users/profile", { body: { display_name } }));
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

/** The history endpoint's query: the filters that are set, the page token, the page size. */
export function historyQuery(filters: HistoryFilters, pageToken: string | null, pageSize: number) {
  return {
    ...Object.fromEntries(Object.entries(filters).filter(([, value]) => Boolean(value))),
    ...(pageToken ? { page_token: pageToken } : {}),
    page_size: pageSize,
  };
}

export async function getHistory(filters: HistoryFilters, pageToken: string | null, pageSize = 24): Promise<HistoryPage> {
  return unwrap(await api.GET("/api/users/history", { params: { query: historyQuery(filters, pageToken, pageSize) } }));
}

export async function deleteAccount(): Promise<void> {
  unwrap(await api.DELETE("/api/users/me"));
}

/** Changes the password. Every other session ends and access tokens issued so far stop
 * working; the session of `refreshToken` stays (refresh it for a new access token). */
export async function changePassword(currentPassword: string, newPassword: string, refreshToken: string): Promise<void> {
  unwrap(
    await api.POST("/api/auth/password", {
      body: { current_password: currentPassword, new_password: newPassword, refresh_token: refreshToken },
    }),
  );
}

/** "Sign out everywhere": ends every session of the account. */
export async function logoutEverywhere(): Promise<void> {
  unwrap(await api.POST("/api/auth/logout-all"));
}
