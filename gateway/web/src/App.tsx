import { lazy, Suspense, useEffect, type ReactNode } from "react";
import { BrowserRouter, Link, Navigate, NavLink, Route, Routes, useLocation } from "react-router-dom";
import { OfflineBanner } from "@/components/OfflineBanner";
import { Button } from "@/components/ui/button";
import { Spinner } from "@/components/ui/misc";
import { cn } from "@/lib/cn";
import { isAdmin, startRefreshTimer, useAuth } from "@/stores/auth";
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
const SharedPage = lazy(() => import("@/pages/SharedPage"));
const AdminPage = lazy(() => import("@/pages/AdminPage"));
const AnalyticsPage = lazy(() => import("@/pages/AnalyticsPage"));
const PipelineRunPage = lazy(() => import("@/pages/PipelineRunPage"));

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

/** Administrators' pages: anyone else sees "page not found", as the API answers them. */
function RequireAdmin({ children }: { children: ReactNode }) {
  const admin = useAuth((state) => isAdmin(state.session));
  if (!admin) return <NotFound />;
  return <>{children}</>;
}

function RequireSession({ children }: { children: ReactNode }) {
  const signedIn = useAuth((state) => state.session !== null);
  const location = useLocation();
  if (!signedIn) return <Navigate to="/login" replace state={{ from: location.pathname + location.search }} />;
  return <>{children}</>;
}

/** The app's sections, in nav order: one list for the header (wide screens) and the bottom
 * bar (phones). */
const NAV: { to: string; label: string; icon: string }[] = [
  { to: "/", label: "Studio", icon: "M4 20h4L18.5 9.5a2.8 2.8 0 0 0-4-4L4 16v4Zm9.5-13.5 4 4" },
  { to: "/history", label: "History", icon: "M12 8v4l3 2M3.05 11a9 9 0 1 1 .5 4M3 4v5h5" },
  { to: "/library", label: "Library", icon: "M4 4h7v7H4zM13 4h7v7h-7zM4 13h7v7H4zM13 13h7v7h-7z" },
  { to: "/settings", label: "Settings", icon: "M4 21v-7M4 10V3M12 21v-9M12 8V3M20 21v-5M20 12V3M1 14h6M9 8h6M17 16h6" },
];

/** Shown to administrators only. */
const ADMIN_NAV = { to: "/admin", label: "Admin", icon: "M12 3l8 4v5c0 5-3.5 8-8 9-4.5-1-8-4-8-9V7l8-4Z" };

function NavItem({ to, icon, children }: { to: string; icon: string; children: ReactNode }) {
  return (
    <NavLink
      to={to}
      end={to === "/"}
      className={({ isActive }) =>
        cn(
          "group flex min-w-0 flex-1 flex-col items-center gap-0.5 rounded-md px-1 py-1 text-xs font-medium sm:flex-none sm:flex-row sm:px-3 sm:py-2 sm:text-sm",
          isActive
            ? "font-semibold text-brand-800 sm:bg-brand-100 dark:text-white sm:dark:bg-slate-800"
            : "text-slate-700 hover:bg-slate-100 dark:text-slate-300 dark:hover:bg-slate-800",
        )
      }
    >
      {/* On phones the current section's icon sits in a pill, as in native tab bars. */}
      <span aria-hidden="true" className="rounded-full px-3 py-0.5 group-aria-[current=page]:bg-brand-100 sm:hidden dark:group-aria-[current=page]:bg-slate-700">
        <svg viewBox="0 0 24 24" className="h-5 w-5" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" strokeLinejoin="round">
          <path d={icon} />
        </svg>
      </span>
      {children}
    </NavLink>
  );
}

function Header() {
  const session = useAuth((state) => state.session);
  const signOut = useAuth((state) => state.signOut);
  const nav = isAdmin(session) ? [...NAV, ADMIN_NAV] : NAV;
  return (
    // No backdrop-filter here: it would make the header the containing block of the nav's
    // `position: fixed` on phones, pinning the bottom bar inside the header.
    <header className="sticky top-0 z-30 border-b border-slate-200 bg-white dark:border-slate-800 dark:bg-slate-900">
      <div className="mx-auto flex max-w-7xl items-center gap-2 px-4 py-2">
        <Link to="/" className="mr-2 flex items-center gap-2 text-lg font-bold text-brand-700 dark:text-brand-100">
          <img src="/icon.svg" alt="" width={24} height={24} className="h-6 w-6" />
          Atelier
        </Link>
        {session && (
          // One list: in the header from `sm` up, a bar fixed to the bottom of the screen on phones.
          <nav
            aria-label="Main"
            className="fixed inset-x-0 bottom-0 z-30 flex border-t border-slate-200 bg-white px-2 pb-[env(safe-area-inset-bottom)] pt-1 sm:static sm:z-auto sm:flex-1 sm:gap-1 sm:border-0 sm:bg-transparent sm:p-0 dark:border-slate-800 dark:bg-slate-900 sm:dark:bg-transparent"
          >
            {nav.map((item) => (
              <NavItem key={item.to} to={item.to} icon={item.icon}>
                {item.label}
              </NavItem>
            ))}
          </nav>
        )}
        {session && (
          <div className="ml-auto flex items-center gap-2">
            <span className="hidden text-sm text-slate-700 md:inline dark:text-slate-300">{session.user.email}</span>
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
      <main id="main" className="mx-auto max-w-7xl px-4 pb-36 pt-6 sm:pb-10">
        <Suspense fallback={<Spinner />}>
          <Routes>
            <Route path="/login" element={<LoginPage />} />
            <Route path="/register" element={<LoginPage register />} />
            <Route path="/" element={<RequireSession><StudioPage /></RequireSession>} />
            <Route path="/jobs/:jobId" element={<RequireSession><JobPage /></RequireSession>} />
            <Route path="/batches/:batchId" element={<RequireSession><BatchPage /></RequireSession>} />
            <Route path="/pipeline-runs/:runId" element={<RequireSession><PipelineRunPage /></RequireSession>} />
            <Route path="/history" element={<RequireSession><HistoryPage /></RequireSession>} />
            <Route path="/library" element={<RequireSession><LibraryPage /></RequireSession>} />
            <Route path="/settings" element={<RequireSession><SettingsPage /></RequireSession>} />
            <Route path="/admin" element={<RequireSession><RequireAdmin><AdminPage /></RequireAdmin></RequireSession>} />
            <Route path="/admin/analytics" element={<RequireSession><RequireAdmin><AnalyticsPage /></RequireAdmin></RequireSession>} />
            {/* A share link's page: for anyone holding the link, signed in or not. */}
            <Route path="/s/:token" element={<SharedPage />} />
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
