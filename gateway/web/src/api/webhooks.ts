// Outgoing webhooks (`/api/webhooks`): endpoints, their signing secrets and the delivery
// log, through the generated client; and the small rules the settings section shows them by.
import { api, unwrap, type Schemas } from "./client";

export type Webhook = Schemas["WebhookBody"];
export type WebhookEventType = Schemas["WebhookEventType"];
export type WebhookDelivery = Schemas["WebhookDeliveryBody"];
export type WebhookAttempt = Schemas["WebhookAttemptBody"];

/** The event types a user may subscribe to, with what each means. */
export const EVENT_TYPES: { type: WebhookEventType; label: string }[] = [
  { type: "job.completed", label: "A job completed" },
  { type: "job.failed", label: "A job failed" },
  { type: "job.cancelled", label: "A job was cancelled" },
  { type: "batch.completed", label: "Every job of a batch finished" },
  { type: "budget.threshold_reached", label: "Spend reached a budget alert" },
];

export async function listWebhooks(): Promise<Webhook[]> {
  return unwrap(await api.GET("/api/webhooks")).webhooks;
}

export async function getWebhook(id: string): Promise<Webhook> {
  return unwrap(await api.GET("/api/webhooks/{webhook_id}", { params: { path: { webhook_id: id } } }));
}

export async function createWebhook(url: string, description: string, eventTypes: WebhookEventType[]): Promise<Webhook> {
  return unwrap(await api.POST("/api/webhooks", { body: { url, description, event_types: eventTypes } }));
}

export async function updateWebhook(id: string, change: Schemas["UpdateWebhookBody"]): Promise<Webhook> {
  return unwrap(await api.PATCH("/api/webhooks/{webhook_id}", { params: { path: { webhook_id: id } }, body: change }));
}

export async function deleteWebhook(id: string): Promise<void> {
  unwrap(await api.DELETE("/api/webhooks/{webhook_id}", { params: { path: { webhook_id: id } } }));
}

export async function rotateSecret(id: string): Promise<Webhook> {
  return unwrap(await api.POST("/api/webhooks/{webhook_id}/rotate-secret", { params: { path: { webhook_id: id } } }));
}

export async function sendTest(id: string): Promise<WebhookDelivery> {
  return unwrap(await api.POST("/api/webhooks/{webhook_id}/test", { params: { path: { webhook_id: id } } }));
}

export async function listDeliveries(id: string, pageToken: string | null = null): Promise<Schemas["WebhookDeliveryList"]> {
  return unwrap(
    await api.GET("/api/webhooks/{webhook_id}/deliveries", {
      params: { path: { webhook_id: id }, query: { page_size: 20, ...(pageToken ? { page_token: pageToken } : {}) } },
    }),
  );
}

export async function redeliver(id: string, deliveryId: string): Promise<WebhookDelivery> {
  return unwrap(
    await api.POST("/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", {
      params: { path: { webhook_id: id, delivery_id: deliveryId } },
    }),
  );
}

/** A delivery's line in the log: its state, the last attempt's answer and latency. */
export interface DeliveryView {
  tone: "success" | "error" | "pending";
  label: string;
  detail: string;
  latency: string | null;
}

export function deliveryView(delivery: WebhookDelivery): DeliveryView {
  const last = delivery.attempt_log.at(-1);
  const answer = last ? (last.response_status != null ? `HTTP ${last.response_status}` : (last.error ?? "no answer")) : "not sent yet";
  const tries = delivery.attempts === 1 ? "1 attempt" : `${delivery.attempts} attempts`;
  const latency = last ? `${last.latency_ms} ms` : null;
  switch (delivery.status) {
    case "succeeded":
      return { tone: "success", label: "Delivered", detail: `${answer} · ${tries}`, latency };
    case "failed":
      return { tone: "error", label: "Failed", detail: `${answer} · ${tries}`, latency };
    default:
      return {
        tone: "pending",
        label: delivery.attempts > 0 ? "Retrying" : "Pending",
        detail: delivery.next_attempt_at ? `${answer} · next try ${new Date(delivery.next_attempt_at).toLocaleString()}` : answer,
        latency,
      };
  }
}

/** What the endpoint's card says of its state: enabled, disabled by its owner, or disabled
 * by the platform (with the reason, which the owner fixes before enabling it again). */
export function endpointState(webhook: Webhook): { enabled: boolean; text: string } {
  if (webhook.enabled) return { enabled: true, text: "Enabled" };
  if (webhook.disabled_reason) return { enabled: false, text: `Disabled by Atelier: ${webhook.disabled_reason}` };
  return { enabled: false, text: "Disabled" };
}

/** The event types an endpoint receives, as a sentence. */
export function eventsSummary(types: WebhookEventType[]): string {
  return types.length === 0 ? "every event" : types.join(", ");
}

/** A secret with all but its prefix and last four characters hidden. */
export function maskSecret(secret: string): string {
  if (secret.length <= 12) return "whsec_••••";
  return `${secret.slice(0, 6)}${"•".repeat(12)}${secret.slice(-4)}`;
}

/** The URL as typed, checked as far as the browser can (the service checks the rest). */
export function urlProblem(raw: string): string | null {
  const value = raw.trim();
  if (!value) return "Enter the URL events are sent to.";
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return "This is not a URL.";
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return "The URL must start with https:// (or http://).";
  return null;
}
