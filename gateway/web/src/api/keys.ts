// API keys (`/api/keys`): create one (shown once), list them, revoke one. And the pure logic the
// settings section needs: the scopes offered, a form turned into a request, a key's state.
import { api, unwrap, type Schemas } from "./client";

export type ApiKey = Schemas["ApiKeyBody"];
export type NewApiKey = Schemas["NewApiKey"];

/** The scopes a key may be granted, grouped as the settings section offers them. */
export const SCOPE_GROUPS: ReadonlyArray<{ label: string; scopes: ReadonlyArray<{ scope: string; label: string }> }> = [
  {
    label: "Images",
    scopes: [
      { scope: "images:read", label: "List, view and download images" },
      { scope: "images:write", label: "Upload and delete images" },
    ],
  },
  {
    label: "Processing",
    scopes: [
      { scope: "processing:read", label: "View jobs, batches and history" },
      { scope: "processing:write", label: "Start, cancel and retry jobs" },
    ],
  },
  {
    label: "Account",
    scopes: [
      { scope: "account:read", label: "View profile, settings and usage" },
      { scope: "account:write", label: "Change profile and settings, delete the account" },
    ],
  },
  {
    label: "API keys",
    scopes: [
      { scope: "keys:read", label: "List API keys" },
      { scope: "keys:write", label: "Create and revoke API keys" },
    ],
  },
];

/** What the creation form holds. */
export interface KeyForm {
  name: string;
  scopes: ReadonlySet<string>;
  /** A date (`YYYY-MM-DD`), or empty for a key that does not expire. */
  expiresOn: string;
}

/** The request for `form`, or the problems with it by field (as the API names them). */
export function keyRequest(form: KeyForm, now: Date = new Date()): { body: NewApiKey } | { errors: Record<string, string> } {
  const errors: Record<string, string> = {};
  const name = form.name.trim();
  if (!name) errors.name = "Give the key a name.";
  else if (name.length > 100) errors.name = "At most 100 characters.";
  if (form.scopes.size === 0) errors.scopes = "Choose at least one scope.";
  let expires_at: string | null = null;
  if (form.expiresOn) {
    // The key works through the whole chosen day, in the user's time zone.
    const end = new Date(`${form.expiresOn}T23:59:59`);
    if (Number.isNaN(end.getTime())) errors.expires_at = "Not a date.";
    else if (end <= now) errors.expires_at = "Choose a day in the future.";
    else expires_at = end.toISOString();
  }
  if (Object.keys(errors).length > 0) return { errors };
  const known = SCOPE_GROUPS.flatMap((group) => group.scopes.map((entry) => entry.scope));
  const scopes = known.filter((scope) => form.scopes.has(scope));
  return { body: { name, scopes, expires_at } };
}

/** Whether a listed key still works, and why not. */
export function keyState(key: Pick<ApiKey, "revoked_at" | "expires_at">, now: Date = new Date()): "active" | "revoked" | "expired" {
  if (key.revoked_at) return "revoked";
  if (key.expires_at && new Date(key.expires_at) <= now) return "expired";
  return "active";
}

/** A listed instant, or what its absence means. */
export function when(at: string | null | undefined, absent: string): string {
  return at ? new Date(at).toLocaleString() : absent;
}

export async function listKeys(): Promise<ApiKey[]> {
  return unwrap(await api.GET("/api/keys")).keys;
}

/** Creates a key: the answer holds the key itself, this once. */
export async function createKey(body: NewApiKey): Promise<ApiKey> {
  return unwrap(await api.POST("/api/keys", { body }));
}

export async function revokeKey(id: string): Promise<void> {
  unwrap(await api.DELETE("/api/keys/{id}", { params: { path: { id } } }));
}
