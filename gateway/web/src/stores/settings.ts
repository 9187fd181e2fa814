// Preferences: the theme and the last-used parameters of each workflow. Kept in
// localStorage always (so they work offline and before the server answers) and synced
// with the user's settings on the server once they were read (optimistic, with its ETag).
import { create } from "zustand";
import { persist } from "zustand/middleware";
import { ApiError } from "@/api/problem";
import { getSettings, putSettings, type Theme, type UserSettings } from "@/api/users";
import type { JsonValue } from "@/lib/schemaForm";

export const DEFAULT_SETTINGS: UserSettings = {
  schema_version: 1,
  theme: "system",
  retention_days: null,
  notifications: { job_completed: true, job_failed: true, quota_warning: true },
  default_workflow_id: null,
  workflow_defaults: {},
};

interface SettingsState {
  settings: UserSettings;
  etag: string | null;
  /** The workflow last started from this device (preselected when no default is set). */
  lastWorkflowId: string | null;
  /** Whether the settings were read from the server: only then are changes saved there. */
  synced: boolean;
  load: () => Promise<void>;
  /** Apply a change locally, then save it on the server (retrying once on a stale ETag). */
  update: (change: Partial<UserSettings>) => Promise<void>;
  setTheme: (theme: Theme) => Promise<void>;
  rememberParameters: (workflowId: string, parameters: Record<string, JsonValue>) => Promise<void>;
  reset: () => void;
}

export const useSettings = create<SettingsState>()(
  persist(
    (set, get) => ({
      settings: DEFAULT_SETTINGS,
      etag: null,
      lastWorkflowId: null,
      synced: false,

      async load() {
        const { document, etag } = await getSettings();
        set({ settings: { ...DEFAULT_SETTINGS, ...document.settings }, etag, synced: true });
      },

      async update(change) {
        const previous = get().settings;
        const next = { ...previous, ...change };
        set({ settings: next });
        if (!get().synced) return;
        try {
          const saved = await putSettings(next, get().etag);
          set({ settings: { ...DEFAULT_SETTINGS, ...saved.document.settings }, etag: saved.etag });
        } catch (error) {
          if (error instanceof ApiError && error.status === 412) {
            // Changed elsewhere: take theirs, apply ours on top, save once more.
            await get().load();
            const merged = { ...get().settings, ...change };
            const saved = await putSettings(merged, get().etag);
            set({ settings: { ...DEFAULT_SETTINGS, ...saved.document.settings }, etag: saved.etag });
          } else {
            // Refused (invalid, offline...): what is shown stays what is stored.
            set({ settings: previous });
            throw error;
          }
        }
      },

      setTheme(theme) {
        return get().update({ theme });
      },

      rememberParameters(workflowId, parameters) {
        const workflow_defaults = { ...get().settings.workflow_defaults, [workflowId]: parameters };
        set({ lastWorkflowId: workflowId });
        return get().update({ workflow_defaults });
      },

      reset() {
        set({ settings: DEFAULT_SETTINGS, etag: null, synced: false });
      },
    }),
    { name: "atelier-settings", partialize: (state) => ({ settings: state.settings, lastWorkflowId: state.lastWorkflowId }) },
  ),
);

/** The class on <html> that turns dark mode on. */
export function resolveTheme(theme: Theme, prefersDark: boolean): "light" | "dark" {
  return theme === "system" ? (prefersDark ? "dark" : "light") : theme;
}
