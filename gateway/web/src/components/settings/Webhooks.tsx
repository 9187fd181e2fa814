// The settings section for outgoing webhooks: add an endpoint (URL and events), show and
// rotate its signing secret, send a test event, read the delivery log and redeliver, and
// enable again an endpoint the platform disabled (saying why it did).
import { useState } from "react";
import { ApiError, messageOf } from "@/api/problem";
import {
  EVENT_TYPES,
  createWebhook,
  deleteWebhook,
  deliveryView,
  endpointState,
  eventsSummary,
  getWebhook,
  listDeliveries,
  listWebhooks,
  maskSecret,
  redeliver,
  rotateSecret,
  sendTest,
  updateWebhook,
  urlProblem,
  type Webhook,
  type WebhookEventType,
} from "@/api/webhooks";
import { Button } from "@/components/ui/button";
import { ConfirmDialog } from "@/components/ui/dialog";
import { FieldError, Input, Label } from "@/components/ui/field";
import { Alert, Card, Spinner } from "@/components/ui/misc";
import { useAsync } from "@/lib/useAsync";

type Notice = { tone: "error" | "success" | "info"; text: string } | null;

function NewEndpoint({ onCreated }: { onCreated: (webhook: Webhook) => void }) {
  const [url, setUrl] = useState("");
  const [description, setDescription] = useState("");
  const [events, setEvents] = useState<WebhookEventType[]>([]);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);

  const toggle = (type: WebhookEventType) =>
    setEvents((current) => (current.includes(type) ? current.filter((t) => t !== type) : [...current, type]));

  const submit = async (event: { preventDefault: () => void }) => {
    event.preventDefault();
    const problem = urlProblem(url);
    if (problem) {
      setErrors({ url: problem });
      return;
    }
    setBusy(true);
    setErrors({});
    try {
      onCreated(await createWebhook(url.trim(), description, events));
      setUrl("");
      setDescription("");
      setEvents([]);
    } catch (error) {
      setErrors(error instanceof ApiError && Object.keys(error.fieldErrors).length ? error.fieldErrors : { url: messageOf(error) });
    } finally {
      setBusy(false);
    }
  };

  return (
    <form onSubmit={(event) => void submit(event)} className="grid gap-3 sm:max-w-xl" aria-label="Add a webhook endpoint">
      <div className="grid gap-1">
        <Label htmlFor="webhook-url">Endpoint URL</Label>
        <Input
          id="webhook-url"
          type="url"
          placeholder="https://example.com/atelier-events"
          value={url}
          onChange={(event) => setUrl(event.target.value)}
          aria-invalid={Boolean(errors.url)}
          aria-describedby="webhook-url-error"
          required
        />
        <FieldError id="webhook-url-error">{errors.url}</FieldError>
      </div>
      <div className="grid gap-1">
        <Label htmlFor="webhook-description">Description (optional)</Label>
        <Input id="webhook-description" maxLength={500} value={description} onChange={(event) => setDescription(event.target.value)} />
      </div>
      <fieldset className="grid gap-1">
        <legend className="text-sm font-medium">Events (none ticked: every event)</legend>
        {EVENT_TYPES.map(({ type, label }) => (
          <label key={type} className="flex items-center gap-2 text-sm">
            <input type="checkbox" checked={events.includes(type)} onChange={() => toggle(type)} />
            <code>{type}</code> <span className="text-slate-600 dark:text-slate-400">{label}</span>
          </label>
        ))}
        <FieldError id="webhook-events-error">{errors.event_types}</FieldError>
      </fieldset>
      <Button type="submit" variant="secondary" className="justify-self-start" disabled={busy}>
        Add endpoint
      </Button>
    </form>
  );
}

function Deliveries({ webhookId, notify }: { webhookId: string; notify: (notice: Notice) => void }) {
  const log = useAsync(() => listDeliveries(webhookId), [webhookId]);
  const again = async (deliveryId: string) => {
    try {
      await redeliver(webhookId, deliveryId);
      notify({ tone: "info", text: "Sent again." });
      log.reload();
    } catch (error) {
      notify({ tone: "error", text: messageOf(error) });
    }
  };
  if (log.loading && !log.data) return <Spinner label="Loading deliveries" />;
  if (log.error) return <Alert>{messageOf(log.error)}</Alert>;
  const deliveries = log.data?.deliveries ?? [];
  return (
    <div className="grid gap-2">
      <div className="flex items-center justify-between">
        <h4 className="text-sm font-semibold">Deliveries</h4>
        <Button size="sm" variant="ghost" onClick={log.reload}>
          Refresh
        </Button>
      </div>
      {deliveries.length === 0 ? (
        <p className="text-sm text-slate-600 dark:text-slate-400">Nothing sent yet.</p>
      ) : (
        <ul className="grid gap-1 text-sm">
          {deliveries.map((delivery) => {
            const view = deliveryView(delivery);
            const colour =
              view.tone === "success" ? "text-green-700 dark:text-green-400" : view.tone === "error" ? "text-red-700 dark:text-red-400" : "text-amber-700 dark:text-amber-400";
            return (
              <li key={delivery.id} className="flex flex-wrap items-center gap-2 border-b border-slate-200 py-1 dark:border-slate-700">
                <span className={`font-medium ${colour}`}>{view.label}</span>
                <code>{delivery.event_type}</code>
                <span className="text-slate-600 dark:text-slate-400">{view.detail}</span>
                {view.latency && <span className="tabular-nums text-slate-500">{view.latency}</span>}
                <details className="w-full">
                  <summary className="cursor-pointer text-xs text-slate-500">{delivery.message_id}</summary>
                  <pre className="max-h-48 overflow-auto whitespace-pre-wrap break-all text-xs">{delivery.request_body}</pre>
                  {delivery.attempt_log.map((attempt) => (
                    <p key={attempt.number} className="text-xs">
                      #{attempt.number} {attempt.at ? new Date(attempt.at).toLocaleString() : ""} ·{" "}
                      {attempt.response_status != null ? `HTTP ${attempt.response_status}` : attempt.error} · {attempt.latency_ms} ms
                      {attempt.response_body ? ` · ${attempt.response_body.slice(0, 200)}` : ""}
                    </p>
                  ))}
                </details>
                <Button size="sm" variant="ghost" onClick={() => void again(delivery.id)}>
                  Redeliver
                </Button>
              </li>
            );
          })}
        </ul>
      )}
    </div>
  );
}

function EndpointCard({ webhook, onChanged, notify }: { webhook: Webhook; onChanged: () => void; notify: (notice: Notice) => void }) {
  const [secret, setSecret] = useState<string | null>(webhook.secret ?? null);
  const [shown, setShown] = useState(false);
  const [logKey, setLogKey] = useState(0);
  const state = endpointState(webhook);

  const act = async (action: () => Promise<unknown>, done: string) => {
    try {
      await action();
      notify({ tone: "success", text: done });
      onChanged();
    } catch (error) {
      notify({ tone: "error", text: messageOf(error) });
    }
  };
  const reveal = async () => {
    if (!secret) setSecret((await getWebhook(webhook.id)).secret ?? null);
    setShown((value) => !value);
  };
  const rotate = async () => {
    const rotated = await rotateSecret(webhook.id);
    setSecret(rotated.secret ?? null);
    setShown(true);
  };

  return (
    <li className="grid gap-2 rounded-md border border-slate-200 p-3 dark:border-slate-700">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <div className="grid">
          <span className="break-all font-medium">{webhook.url}</span>
          {webhook.description && <span className="text-sm text-slate-600 dark:text-slate-400">{webhook.description}</span>}
          <span className="text-sm">Events: {eventsSummary(webhook.event_types)}</span>
        </div>
        <span className={state.enabled ? "text-sm text-green-700 dark:text-green-400" : "text-sm text-red-700 dark:text-red-400"}>{state.enabled ? "Enabled" : "Disabled"}</span>
      </div>
      {!state.enabled && (
        <Alert tone={webhook.disabled_reason ? "error" : "info"}>
          {state.text}
          {webhook.disabled_at ? ` (${new Date(webhook.disabled_at).toLocaleString()})` : ""}
        </Alert>
      )}
      <div className="flex flex-wrap items-center gap-2 text-sm">
        <span>Signing secret:</span>
        <code className="break-all">{secret && shown ? secret : maskSecret(secret ?? "")}</code>
        <Button size="sm" variant="ghost" onClick={() => void reveal().catch((error: unknown) => notify({ tone: "error", text: messageOf(error) }))}>
          {shown ? "Hide" : "Show"}
        </Button>
        <ConfirmDialog
          trigger={<Button size="sm" variant="ghost">Rotate</Button>}
          title="Rotate the signing secret?"
          description="A new secret signs deliveries from now on. The current one keeps signing them too for 24 hours, so your receiver can switch over."
          confirmLabel="Rotate secret"
          onConfirm={() => act(rotate, "Secret rotated; the previous one stays valid for 24 hours.")}
        />
      </div>
      <div className="flex flex-wrap gap-2">
        <Button
          size="sm"
          variant="secondary"
          onClick={() =>
            void act(async () => {
              await sendTest(webhook.id);
              setLogKey((key) => key + 1);
            }, "Test event sent.")
          }
        >
          Send test event
        </Button>
        {state.enabled ? (
          <Button size="sm" variant="secondary" onClick={() => void act(() => updateWebhook(webhook.id, { enabled: false }), "Endpoint disabled.")}>
            Disable
          </Button>
        ) : (
          <Button size="sm" variant="secondary" onClick={() => void act(() => updateWebhook(webhook.id, { enabled: true }), "Endpoint enabled again.")}>
            Enable again
          </Button>
        )}
        <ConfirmDialog
          trigger={<Button size="sm" variant="danger">Delete</Button>}
          title="Delete this endpoint?"
          description="Nothing more is sent to it, and its delivery log is deleted."
          confirmLabel="Delete endpoint"
          danger
          onConfirm={() => act(() => deleteWebhook(webhook.id), "Endpoint deleted.")}
        />
      </div>
      <Deliveries key={logKey} webhookId={webhook.id} notify={notify} />
    </li>
  );
}

export default function Webhooks() {
  const list = useAsync(listWebhooks, []);
  const [notice, setNotice] = useState<Notice>(null);
  const [created, setCreated] = useState<Webhook | null>(null);

  return (
    <Card className="grid gap-4">
      <h2 className="text-lg font-semibold">Webhooks</h2>
      <p className="text-sm text-slate-600 dark:text-slate-400">
        Atelier POSTs an event to your endpoints when a job completes, fails or is cancelled, and when a batch finishes. Requests are signed as{" "}
        <a className="underline" href="https://www.standardwebhooks.com/" target="_blank" rel="noreferrer">
          Standard Webhooks
        </a>{" "}
        sign them (<code>webhook-id</code>, <code>webhook-timestamp</code>, <code>webhook-signature</code>); failed deliveries are retried for about a day.
      </p>
      {notice && <Alert tone={notice.tone}>{notice.text}</Alert>}
      {created?.secret && (
        <Alert tone="success">
          Endpoint added. Its signing secret: <code className="break-all">{created.secret}</code>
        </Alert>
      )}
      {list.loading && !list.data ? (
        <Spinner label="Loading webhooks" />
      ) : list.error ? (
        <Alert>{messageOf(list.error)}</Alert>
      ) : (
        <ul className="grid gap-3">
          {(list.data ?? []).map((webhook) => (
            <EndpointCard key={`${webhook.id}-${webhook.updated_at ?? ""}`} webhook={webhook} onChanged={list.reload} notify={setNotice} />
          ))}
        </ul>
      )}
      <NewEndpoint
        onCreated={(webhook) => {
          setCreated(webhook);
          setNotice(null);
          list.reload();
        }}
      />
    </Card>
  );
}
