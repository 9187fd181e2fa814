// Profile, usage against the plan's limits, preferences, API keys, sessions and the account.
import { useState } from "react";
import { useNavigate } from "react-router-dom";
import { workflows } from "@/api/catalogue";
import { ApiError, messageOf } from "@/api/problem";
import { formatBytes } from "@/api/upload";
import { changePassword, deleteAccount, getProfile, logoutEverywhere, updateProfile, type Theme } from "@/api/users";
import { getMySpend } from "@/api/spend";
import { ApiKeys } from "@/components/settings/ApiKeys";
import { ShareLinks } from "@/components/settings/ShareLinks";
import Webhooks from "@/components/settings/Webhooks";
import { SpendCard } from "@/components/spend/SpendCard";
import { Button } from "@/components/ui/button";
import { ConfirmDialog } from "@/components/ui/dialog";
import { FieldError, Input, Label, Select } from "@/components/ui/field";
import { Alert, Card, PageTitle, Progress, Spinner, Switch } from "@/components/ui/misc";
import { useAsync } from "@/lib/useAsync";
import { usageView } from "@/lib/usage";
import { useAuth } from "@/stores/auth";
import { useSettings } from "@/stores/settings";
import { useUploads } from "@/stores/uploads";

function Usage({ label, used, limit, format }: { label: string; used: number; limit: number | null | undefined; format?: (n: number) => string }) {
  const { text, fraction } = usageView(used, limit, format);
  return (
    <div className="grid gap-1">
      <div className="flex justify-between text-sm">
        <span>{label}</span>
        <span className="tabular-nums">{text}</span>
      </div>
      {fraction !== null && <Progress value={fraction} label={`${label}: ${text}`} />}
    </div>
  );
}

/** The password change: the current password, then the new one; this session stays signed in. */
function PasswordForm({ onDone }: { onDone: (message: { tone: "error" | "success"; text: string }) => void }) {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);

  const submit = async (event: { preventDefault: () => void }) => {
    event.preventDefault();
    const session = useAuth.getState().session;
    if (!session) return;
    setBusy(true);
    setErrors({});
    try {
      await changePassword(current, next, session.refreshToken);
      // Access tokens issued before the change stop working: get a new one now.
      await useAuth.getState().refresh();
      setCurrent("");
      setNext("");
      onDone({ tone: "success", text: "Password changed. Your other sessions were signed out." });
    } catch (error) {
      if (error instanceof ApiError) {
        setErrors(error.status === 403 ? { current_password: "This is not your current password." } : error.fieldErrors);
      }
      onDone({ tone: "error", text: messageOf(error) });
    } finally {
      setBusy(false);
    }
  };

  return (
    <form onSubmit={(event) => void submit(event)} className="grid gap-3 sm:max-w-md">
      <div className="grid gap-1">
        <Label htmlFor="current-password">Current password</Label>
        <Input
          id="current-password"
          type="password"
          autoComplete="current-password"
          value={current}
          onChange={(event) => setCurrent(event.target.value)}
          aria-invalid={Boolean(errors.current_password)}
          aria-describedby="current-password-error"
          required
        />
        <FieldError id="current-password-error">{errors.current_password}</FieldError>
      </div>
      <div className="grid gap-1">
        <Label htmlFor="new-password">New password</Label>
        <Input
          id="new-password"
          type="password"
          autoComplete="new-password"
          minLength={10}
          maxLength={256}
          value={next}
          onChange={(event) => setNext(event.target.value)}
          aria-invalid={Boolean(errors.new_password)}
          aria-describedby="new-password-error"
          required
        />
        <FieldError id="new-password-error">{errors.new_password}</FieldError>
      </div>
      <Button type="submit" variant="secondary" className="justify-self-start" disabled={busy}>
        Change password
      </Button>
    </form>
  );
}

export default function SettingsPage() {
  const profile = useAsync(getProfile, []);
  const spend = useAsync(getMySpend, []);
  const catalogue = useAsync(workflows, []);
  const settings = useSettings((state) => state.settings);
  const synced = useSettings((state) => state.synced);
  const update = useSettings((state) => state.update);
  const drop = useAuth((state) => state.drop);
  const signOut = useAuth((state) => state.signOut);
  const navigate = useNavigate();
  const [name, setName] = useState<string | null>(null);
  const [message, setMessage] = useState<{ tone: "error" | "success" | "info"; text: string } | null>(null);

  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  const save = async (change: Parameters<typeof update>[0]) => {
    setMessage(null);
    setFieldErrors({});
    try {
      await update(change);
      setMessage({ tone: "success", text: "Settings saved." });
    } catch (error) {
      setMessage({ tone: "error", text: messageOf(error) });
      if (error instanceof ApiError) setFieldErrors(error.fieldErrors);
    }
  };

  const saveName = async (event: { preventDefault: () => void }) => {
    event.preventDefault();
    if (name === null) return;
    try {
      await updateProfile(name);
      profile.reload();
      setMessage({ tone: "success", text: "Display name saved." });
    } catch (error) {
      setMessage({ tone: "error", text: messageOf(error) });
    }
  };

  const everywhere = async () => {
    try {
      await logoutEverywhere();
      useUploads.getState().reset();
      drop("You were signed out on every device.");
    } catch (error) {
      setMessage({ tone: "error", text: messageOf(error) });
    }
  };

  const removeAccount = async () => {
    try {
      await deleteAccount();
      useUploads.getState().reset();
      drop("Your account was deleted.");
      void navigate("/login");
    } catch (error) {
      setMessage({ tone: "error", text: messageOf(error) });
    }
  };

  const p = profile.data;
  const limits = p?.limits;

  return (
    <div className="grid gap-4">
      <PageTitle>Settings</PageTitle>
      {message && <Alert tone={message.tone}>{message.text}</Alert>}

      <Card className="grid gap-4">
        <h2 className="text-lg font-semibold">Profile and usage</h2>
        {profile.loading && !p && <Spinner label="Loading your profile" />}
        {profile.error ? <Alert>{messageOf(profile.error)}</Alert> : null}
        {p && (
          <>
            <p className="text-sm">
              {p.email} · <span className="font-medium capitalize">{p.subscription_tier}</span> plan
              {p.created_at && ` · member since ${new Date(p.created_at).toLocaleDateString()}`}
            </p>
            <form onSubmit={(event) => void saveName(event)} className="flex flex-wrap items-end gap-2">
              <div className="grid flex-1 gap-1">
                <Label htmlFor="display-name">Display name</Label>
                <Input id="display-name" value={name ?? p.display_name} onChange={(event) => setName(event.target.value)} maxLength={100} />
              </div>
              <Button type="submit" variant="secondary">
                Save name
              </Button>
            </form>
            <div className="grid gap-3">
              <Usage label="Jobs today" used={p.usage.jobs_today} limit={p.limits.jobs_per_day} />
              <Usage label="Jobs running" used={p.usage.active_jobs} limit={p.limits.concurrent_jobs} />
              <Usage label="Storage" used={p.usage.storage_bytes} limit={p.limits.storage_bytes} format={formatBytes} />
              <p className="text-sm text-slate-700 dark:text-slate-300">
                {[
                  `${p.usage.image_count} images`,
                  p.limits.max_file_size_bytes == null ? "no plan limit on file size" : `files up to ${formatBytes(p.limits.max_file_size_bytes)}`,
                  p.usage.jobs_reset_at && `daily jobs reset ${new Date(p.usage.jobs_reset_at).toLocaleString()}`,
                ]
                  .filter(Boolean)
                  .join(" · ")}
              </p>
            </div>
          </>
        )}
      </Card>

      <SpendCard spend={spend.data} error={spend.error ? messageOf(spend.error) : null} />

      <Card className="grid gap-4">
        <h2 className="text-lg font-semibold">Preferences</h2>
        {!synced && (
          <p className="text-sm text-slate-700 dark:text-slate-300">Saved on this device only: your settings could not be read from the server.</p>
        )}
        <div className="grid gap-1 sm:max-w-xs">
          <Label htmlFor="theme">Theme</Label>
          <Select id="theme" value={settings.theme} onChange={(event) => void save({ theme: event.target.value as Theme })}>
            <option value="system">Same as the system</option>
            <option value="light">Light</option>
            <option value="dark">Dark</option>
          </Select>
        </div>
        <div className="grid gap-1 sm:max-w-xs">
          <Label htmlFor="default-workflow">Default workflow</Label>
          <Select
            id="default-workflow"
            value={settings.default_workflow_id ?? ""}
            onChange={(event) => void save({ default_workflow_id: event.target.value || null })}
          >
            <option value="">The first in the catalogue</option>
            {(catalogue.data ?? []).map((w) => (
              <option key={w.id} value={w.id}>
                {w.name}
              </option>
            ))}
          </Select>
        </div>
        <div className="grid gap-1 sm:max-w-xs">
          <Label htmlFor="retention">Keep images for (days)</Label>
          <Input
            id="retention"
            type="number"
            min={1}
            max={limits?.max_retention_days ?? undefined}
            placeholder="Plan default"
            aria-describedby={fieldErrors.retention_days ? "retention-hint retention-error" : "retention-hint"}
            aria-invalid={fieldErrors.retention_days ? true : undefined}
            defaultValue={settings.retention_days ?? ""}
            onBlur={(event) => {
              const value = event.target.value.trim();
              const days = value === "" ? null : Number.parseInt(value, 10);
              if (days !== settings.retention_days) void save({ retention_days: days });
            }}
          />
          <FieldError id="retention-error">{fieldErrors.retention_days}</FieldError>
          <p id="retention-hint" className="text-xs text-slate-700 dark:text-slate-300">
            {limits?.max_retention_days != null ? `Empty: the plan's default. At most ${limits.max_retention_days} days on your plan.` : "Empty: the plan's default."}
          </p>
        </div>
        <div className="grid gap-2">
          <div className="flex items-center gap-3">
            <Switch
              id="notify-completed"
              checked={settings.notifications.job_completed}
              onCheckedChange={(checked) => void save({ notifications: { ...settings.notifications, job_completed: checked } })}
            />
            <Label htmlFor="notify-completed">Notify me when a job completes</Label>
          </div>
          <div className="flex items-center gap-3">
            <Switch
              id="notify-failed"
              checked={settings.notifications.job_failed}
              onCheckedChange={(checked) => void save({ notifications: { ...settings.notifications, job_failed: checked } })}
            />
            <Label htmlFor="notify-failed">Notify me when a job fails</Label>
          </div>
        </div>
        {Object.keys(settings.workflow_defaults).length > 0 && (
          <Button
            variant="secondary"
            className="justify-self-start"
            onClick={() => void save({ workflow_defaults: {} })}
          >
            Forget remembered parameters
          </Button>
        )}
      </Card>

      <ShareLinks />

      <ApiKeys />

      <Webhooks />

      <Card className="grid gap-3">
        <h2 className="text-lg font-semibold">Sessions and account</h2>
        <PasswordForm onDone={setMessage} />
        <div className="flex flex-wrap gap-2">
          <Button variant="secondary" onClick={() => void signOut()}>
            Sign out
          </Button>
          <ConfirmDialog
            trigger={<Button variant="secondary">Sign out everywhere</Button>}
            title="Sign out on every device?"
            description="Every session of your account ends, this one included."
            confirmLabel="Sign out everywhere"
            onConfirm={everywhere}
          />
          <ConfirmDialog
            trigger={<Button variant="danger">Delete account</Button>}
            title="Delete your account?"
            description="Your images, results, history and settings are deleted for good. This cannot be undone."
            confirmLabel="Delete my account"
            danger
            onConfirm={removeAccount}
          />
        </div>
      </Card>
    </div>
  );
}

