import { lazy, Suspense, useEffect, type ReactNode } from "react";
import { BrowserRouter, Link, Navigate, NavLink, Route, Routes, useLocation } from "react-router-dom";
import { OfflineBanner } from "@/components/OfflineBanner";
import { Button } from "@/components/ui/button";
import { Spinner } from "@/components/ui/misc";
import { cn } from "@/lib/cn";
import { startRefreshTimer, useAuth } from "@/stores/auth";
import { resolveTheme, useSettings } from "@/stores/settings";
import { useUploads } from "@/stores/uploads";

// One chunk per route: the first page loads only what it shows.
const LoginPage = lazy(() => import("@/pages/LoginPage"));
const StudioPage = lazy(() => import("@/pages/StudioPage"));
const JobPage = lazy(() => import("@/pages/JobPage"));
const HistoryPage = lazy(() => import("@/pages/HistoryPage"));
const LibraryPage = lazy(() => import("@/pages/LibraryPage"));
const SettingsPage = lazy(() => import("@/pages/SettingsPage"));
const BatchPage = lazy(() => import("@/pages/BatchPage"));

function useTheme() {
  const theme = useSettings((state) => state.settings.theme);
  useEffect(() => {
    const media = window.matchMedia("(prefers-color-scheme: dark)");
    const apply = () => document.documentElement.classList.toggle("dark", resolveTheme(theme, media.matches) === "dark");
    apply();
    media.addEventListener("change", apply);
    return () => media.removeEventListener("change", apply);
  }, [theme]);
}

function RequireSession({ children }: { children: ReactNode }) {
  const signedIn = useAuth((state) => state.session !== null);
  const location = useLocation();
  if (!signedIn) return <Navigate to="/login" replace state={{ from: location.pathname + location.search }} />;
  return <>{children}</>;
}

function NavItem({ to, children }: { to: string; children: ReactNode }) {
  return (
    <NavLink
      to={to}
      end={to === "/"}
      className={({ isActive }) =>
        cn(
          "rounded-md px-3 py-2 text-sm font-medium",
          isActive
            ? "bg-brand-100 text-brand-800 dark:bg-slate-800 dark:text-white"
            : "text-slate-800 hover:bg-slate-100 dark:text-slate-200 dark:hover:bg-slate-800",
        )
      }
    >
      {children}
    </NavLink>
  );
}

function Header() {
  const session = useAuth((state) => state.session);
  const signOut = useAuth((state) => state.signOut);
  return (
    <header className="border-b border-slate-200 bg-white dark:border-slate-800 dark:bg-slate-900">
      <div className="mx-auto flex max-w-6xl flex-wrap items-center gap-2 px-4 py-2">
        <Link to="/" className="mr-2 text-lg font-bold text-brand-700 dark:text-brand-100">
          Atelier
        </Link>
        {session && (
          <nav aria-label="Main" className="flex flex-1 flex-wrap gap-1">
            <NavItem to="/">Studio</NavItem>
            <NavItem to="/history">History</NavItem>
            <NavItem to="/library">Library</NavItem>
            <NavItem to="/settings">Settings</NavItem>
          </nav>
        )}
        {session && (
          <div className="flex items-center gap-2">
            <span className="hidden text-sm text-slate-700 sm:inline dark:text-slate-300">{session.user.email}</span>
            <Button
              variant="secondary"
              size="sm"
              onClick={() => {
                useUploads.getState().reset();
                void signOut();
              }}
            >
              Sign out
            </Button>
          </div>
        )}
      </div>
    </header>
  );
}

function SettingsLoader() {
  const signedIn = useAuth((state) => state.session !== null);
  const load = useSettings((state) => state.load);
  useEffect(() => {
    if (signedIn) load().catch(() => undefined);
  }, [signedIn, load]);
  return null;
}

export function App() {
  useTheme();
  useEffect(() => startRefreshTimer(), []);
  return (
    <BrowserRouter>
      <a
        href="#main"
        className="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:z-50 focus:rounded focus:bg-white focus:px-3 focus:py-2 focus:text-slate-900"
      >
        Skip to content
      </a>
      <SettingsLoader />
      <Header />
      <OfflineBanner />
      <main id="main" className="mx-auto max-w-6xl px-4 py-6">
        <Suspense fallback={<Spinner />}>
          <Routes>
            <Route path="/login" element={<LoginPage />} />
            <Route path="/register" element={<LoginPage register />} />
            <Route path="/" element={<RequireSession><StudioPage /></RequireSession>} />
            <Route path="/jobs/:jobId" element={<RequireSession><JobPage /></RequireSession>} />
            <Route path="/batches/:batchId" element={<RequireSession><BatchPage /></RequireSession>} />
            <Route path="/history" element={<RequireSession><HistoryPage /></RequireSession>} />
            <Route path="/library" element={<RequireSession><LibraryPage /></RequireSession>} />
            <Route path="/settings" element={<RequireSession><SettingsPage /></RequireSession>} />
            <Route path="*" element={<NotFound />} />
          </Routes>
        </Suspense>
      </main>
    </BrowserRouter>
  );
}

function NotFound() {
  return (
    <div>
      <h1 className="text-2xl font-semibold">Page not found</h1>
      <p className="mt-2">
        <Link className="text-brand-700 underline dark:text-brand-100" to="/">
          Back to the studio
        </Link>
      </p>
    </div>
  );
}
