// The session: tokens kept in localStorage (so every tab shares them and a reload keeps you
// signed in), the access token refreshed shortly before it expires. Refresh tokens rotate on
// every use and reusing a retired one ends the session, so only one refresh runs at a time,
// across tabs (Web Locks), and a tab adopts a token another tab just got.
import { create } from "zustand";
import { persist } from "zustand/middleware";
import { configureAuth, publicApi, unwrap, type TokenResponse } from "@/api/client";
import { ApiError } from "@/api/problem";

export interface Session {
  accessToken: string;
  refreshToken: string;
  /** Epoch milliseconds. */
  expiresAt: number;
  /** `role` is `user` or `admin`, as the last token response said (absent in sessions kept
   * from before roles). */
  user: { id: string; email: string; role?: string };
}

/** Whether the signed-in user is an administrator. The API decides for itself: this only
 * chooses what the app shows. */
export function isAdmin(session: Session | null): boolean {
  return session?.user.role === "admin";
}

/** Refresh this long before the access token expires. */
export const REFRESH_MARGIN_MS = 60_000;

export function sessionFrom(tokens: TokenResponse, now: number): Session {
  return {
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token,
    expiresAt: now + tokens.expires_in * 1000,
    user: tokens.user,
  };
}

export function needsRefresh(session: Session, now: number): boolean {
  return session.expiresAt - now <= REFRESH_MARGIN_MS;
}

/** When to refresh next (ms from now), never negative. */
export function refreshDelay(session: Session, now: number): number {
  return Math.max(0, session.expiresAt - REFRESH_MARGIN_MS - now);
}

interface AuthState {
  session: Session | null;
  /** Why the last session ended, shown on the sign-in page. */
  notice: string | null;
  signIn: (email: string, password: string) => Promise<void>;
  register: (email: string, password: string) => Promise<void>;
  signOut: (notice?: string | null) => Promise<void>;
  /** Forget the session locally (it already ended on the server). */
  drop: (notice: string | null) => void;
  /** A valid access token, refreshing first when it is about to expire. */
  accessToken: () => Promise<string | null>;
  refresh: () => Promise<Session | null>;
}

const STORAGE_KEY = "atelier-session";
let inflight: Promise<Session | null> | null = null;

async function withLock<T>(fn: () => Promise<T>): Promise<T> {
  if (typeof navigator !== "undefined" && "locks" in navigator) {
    return navigator.locks.request("atelier-refresh", fn) as Promise<T>;
  }
  return fn();
}

function storedSession(): Session | null {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    if (!raw) return null;
    const parsed = JSON.parse(raw) as { state?: { session?: Session | null } };
    return parsed.state?.session ?? null;
  } catch {
    return null;
  }
}

export const useAuth = create<AuthState>()(
  persist(
    (set, get) => ({
      session: null,
      notice: null,

      async signIn(email, password) {
        const tokens = unwrap(await publicApi.POST("/api/auth/login", { body: { email, password } }));
        set({ session: sessionFrom(tokens, Date.now()), notice: null });
      },

      async register(email, password) {
        const tokens = unwrap(await publicApi.POST("/api/auth/register", { body: { email, password } }));
        set({ session: sessionFrom(tokens, Date.now()), notice: null });
      },

      async signOut(notice = null) {
        const session = get().session;
        get().drop(notice);
        if (session) {
          // Best effort: the local session is gone whatever the server says.
          await publicApi
            .POST("/api/auth/logout", { body: { refresh_token: session.refreshToken } })
            .catch(() => undefined);
        }
      },

      drop(notice) {
        set({ session: null, notice });
        void clearPrivateCaches();
      },

      async accessToken() {
        const session = get().session;
        if (!session) return null;
        if (!needsRefresh(session, Date.now())) return session.accessToken;
        const fresh = await get().refresh();
        return fresh?.accessToken ?? null;
      },

      refresh() {
        inflight ??= withLock(async () => {
          // Another tab may have refreshed while this one waited for the lock.
          const stored = storedSession();
          const current = get().session;
          if (!current) return null;
          if (stored && stored.refreshToken !== current.refreshToken && !needsRefresh(stored, Date.now())) {
            set({ session: stored });
            return stored;
          }
          try {
            const tokens = unwrap(
              await publicApi.POST("/api/auth/refresh", { body: { refresh_token: current.refreshToken } }),
            );
            const session = sessionFrom(tokens, Date.now());
            set({ session });
            return session;
          } catch (error) {
            if (error instanceof ApiError && (error.status === 401 || error.status === 422)) {
              get().drop("Your session ended. Please sign in again.");
              return null;
            }
            // Offline or the server is down: keep the session, try again later.
            return current;
          }
        }).finally(() => {
          inflight = null;
        });
        return inflight;
      },
    }),
    { name: STORAGE_KEY, partialize: (state) => ({ session: state.session }) },
  ),
);

/** Cached API responses and files belong to the person signed in: gone when they sign out. */
async function clearPrivateCaches(): Promise<void> {
  if (typeof caches === "undefined") return;
  await Promise.all(["atelier-api", "atelier-files"].map((name) => caches.delete(name).catch(() => false)));
}

configureAuth(
  () => useAuth.getState().accessToken(),
  () => {
    const session = useAuth.getState().session;
    // A 401 with a token that should still be valid: the session was ended elsewhere.
    if (session) useAuth.getState().drop("Your session ended. Please sign in again.");
  },
);

/** Keeps the access token fresh while the app is open. Returns a stop function. */
export function startRefreshTimer(): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const schedule = (session: Session | null) => {
    clearTimeout(timer);
    if (!session) return;
    timer = setTimeout(() => void useAuth.getState().refresh(), refreshDelay(session, Date.now()));
  };
  schedule(useAuth.getState().session);
  const unsubscribe = useAuth.subscribe((state, previous) => {
    if (state.session !== previous.session) schedule(state.session);
  });
  // Other tabs' sign-in, refresh and sign-out.
  const onStorage = (event: StorageEvent) => {
    if (event.key === STORAGE_KEY) void useAuth.persist.rehydrate();
  };
  window.addEventListener("storage", onStorage);
  return () => {
    clearTimeout(timer);
    unsubscribe();
    window.removeEventListener("storage", onStorage);
  };
}
