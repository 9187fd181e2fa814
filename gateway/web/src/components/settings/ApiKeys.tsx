// The settings section for API keys: create one (name, scopes, optional expiry) and see it once,
// list the keys (prefix, name, scopes, created, last used), revoke one after a confirmation.
import { useState } from "react";
import { createKey, keyRequest, keyState, listKeys, revokeKey, SCOPE_GROUPS, when, type ApiKey } from "@/api/keys";
import { ApiError, messageOf } from "@/api/problem";
import { Button } from "@/components/ui/button";
import { ConfirmDialog } from "@/components/ui/dialog";
import { FieldError, Input, Label } from "@/components/ui/field";
import { Alert, Card, Spinner } from "@/components/ui/misc";
import { useAsync } from "@/lib/useAsync";

/** The key just created, shown this once with a copy button. */
function NewKey({ apiKey, onDone }: { apiKey: ApiKey; onDone: () => void }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    if (!apiKey.key) return;
    await navigator.clipboard.writeText(apiKey.key);
    setCopied(true);
  };
  return (
    <div className="grid gap-2 rounded-md border border-amber-400 bg-amber-50 p-3 dark:bg-amber-950">
      <p className="text-sm font-medium">Copy the key “{apiKey.name}” now: it is not shown again.</p>
      <div className="flex flex-wrap items-center gap-2">
        <code className="break-all rounded bg-white px-2 py-1 text-sm dark:bg-slate-900" data-testid="new-api-key">
          {apiKey.key}
        </code>
        <Button variant="secondary" onClick={() => void copy()}>
          {copied ? "Copied" : "Copy"}
        </Button>
        <Button variant="secondary" onClick={onDone}>
          Done
        </Button>
      </div>
      <p className="text-xs text-slate-700 dark:text-slate-300">
        Send it as <code>Authorization: Bearer …</code>. Anyone holding it can act for you within its scopes: keep it secret, and revoke it if it
        leaks.
      </p>
    </div>
  );
}

function CreateForm({ onCreated }: { onCreated: (key: ApiKey) => void }) {
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<ReadonlySet<string>>(new Set());
  const [expiresOn, setExpiresOn] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [failure, setFailure] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const toggle = (scope: string, on: boolean) => {
    const next = new Set(scopes);
    if (on) next.add(scope);
    else next.delete(scope);
    setScopes(next);
  };

  const submit = async (event: { preventDefault: () => void }) => {
    event.preventDefault();
    setFailure(null);
    const request = keyRequest({ name, scopes, expiresOn });
    if ("errors" in request) {
      setErrors(request.errors);
      return;
    }
    setErrors({});
    setBusy(true);
    try {
      onCreated(await createKey(request.body));
      setName("");
      setScopes(new Set());
      setExpiresOn("");
    } catch (error) {
      if (error instanceof ApiError) {
        const fields: Record<string, string> = { ...error.fieldErrors };
        // `scopes[2]`: shown under the scopes as a whole.
        const scope = Object.entries(fields).find(([field]) => field.startsWith("scopes["));
        if (scope) fields.scopes = scope[1];
        setErrors(fields);
      }
      setFailure(messageOf(error));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form onSubmit={(event) => void submit(event)} className="grid gap-3" aria-label="Create an API key">
      {failure && <Alert>{failure}</Alert>}
      <div className="grid gap-1 sm:max-w-md">
        <Label htmlFor="api-key-name">Name</Label>
        <Input
          id="api-key-name"
          value={name}
          maxLength={100}
          placeholder="e.g. nightly upscaler"
          onChange={(event) => setName(event.target.value)}
          aria-invalid={Boolean(errors.name)}
          aria-describedby="api-key-name-error"
        />
        <FieldError id="api-key-name-error">{errors.name}</FieldError>
      </div>
      <fieldset className="grid gap-2" aria-describedby="api-key-scopes-error">
        <legend className="text-sm font-medium">Scopes</legend>
        <div className="grid gap-3 sm:grid-cols-2">
          {SCOPE_GROUPS.map((group) => (
            <div key={group.label} className="grid gap-1">
              <span className="text-sm font-medium">{group.label}</span>
              {group.scopes.map(({ scope, label }) => (
                <label key={scope} className="flex items-center gap-2 text-sm">
                  <input type="checkbox" checked={scopes.has(scope)} onChange={(event) => toggle(scope, event.target.checked)} />
                  <span>
                    {label} <code className="text-xs text-slate-600 dark:text-slate-400">{scope}</code>
                  </span>
                </label>
              ))}
            </div>
          ))}
        </div>
        <FieldError id="api-key-scopes-error">{errors.scopes}</FieldError>
      </fieldset>
      <div className="grid gap-1 sm:max-w-xs">
        <Label htmlFor="api-key-expiry">Expires (optional)</Label>
        <Input
          id="api-key-expiry"
          type="date"
          value={expiresOn}
          onChange={(event) => setExpiresOn(event.target.value)}
          aria-invalid={Boolean(errors.expires_at)}
          aria-describedby="api-key-expiry-error"
        />
        <FieldError id="api-key-expiry-error">{errors.expires_at}</FieldError>
      </div>
      <Button type="submit" className="justify-self-start" disabled={busy}>
        Create key
      </Button>
    </form>
  );
}

export function ApiKeys() {
  const keys = useAsync(listKeys, []);
  const [created, setCreated] = useState<ApiKey | null>(null);
  const [failure, setFailure] = useState<string | null>(null);

  const revoke = async (key: ApiKey) => {
    setFailure(null);
    try {
      await revokeKey(key.id);
      keys.reload();
    } catch (error) {
      setFailure(messageOf(error));
    }
  };

  return (
    <Card className="grid gap-4">
      <h2 className="text-lg font-semibold">API keys</h2>
      <p className="text-sm text-slate-700 dark:text-slate-300">Keys let programs use Atelier for you, limited to the scopes you choose.</p>
      {created && <NewKey apiKey={created} onDone={() => setCreated(null)} />}
      <CreateForm
        onCreated={(key) => {
          setCreated(key);
          keys.reload();
        }}
      />
      {failure && <Alert>{failure}</Alert>}
      {keys.loading && !keys.data && <Spinner label="Loading your API keys" />}
      {keys.error ? <Alert>{messageOf(keys.error)}</Alert> : null}
      {keys.data && keys.data.length === 0 && <p className="text-sm">No keys yet.</p>}
      {keys.data && keys.data.length > 0 && (
        <ul className="grid gap-2" aria-label="Your API keys">
          {keys.data.map((key) => {
            const state = keyState(key);
            return (
              <li key={key.id} className="flex flex-wrap items-center justify-between gap-2 rounded-md border border-slate-200 p-3 dark:border-slate-700">
                <div className="grid gap-1 text-sm">
                  <span>
                    <span className="font-medium">{key.name}</span> <code>{key.prefix}…</code>
                    {state !== "active" && <span className="ml-2 rounded bg-slate-200 px-1 text-xs dark:bg-slate-700">{state}</span>}
                  </span>
                  <span className="text-xs text-slate-700 dark:text-slate-300">{key.scopes.join(", ")}</span>
                  <span className="text-xs text-slate-700 dark:text-slate-300">
                    Created {when(key.created_at, "—")} · last used {when(key.last_used_at, "never")}
                    {key.expires_at && ` · expires ${when(key.expires_at, "")}`}
                  </span>
                </div>
                {state === "active" && (
                  <ConfirmDialog
                    trigger={<Button variant="danger">Revoke</Button>}
                    title={`Revoke “${key.name}”?`}
                    description="Programs using this key stop working within seconds. This cannot be undone."
                    confirmLabel="Revoke key"
                    danger
                    onConfirm={() => revoke(key)}
                  />
                )}
              </li>
            );
          })}
        </ul>
      )}
    </Card>
  );
}
