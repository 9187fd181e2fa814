import { describe, expect, it } from "vitest";
import { deliveryView, endpointState, eventsSummary, maskSecret, urlProblem, type Webhook, type WebhookDelivery } from "./webhooks";

const delivery = (change: Partial<WebhookDelivery>): WebhookDelivery => ({
  id: "d1",
  webhook_id: "w1",
  message_id: "msg_1",
  event_type: "job.completed",
  status: "pending",
  attempts: 0,
  next_attempt_at: null,
  created_at: "2026-12-01T10:00:00Z",
  request_body: "{}",
  attempt_log: [],
  ...change,
});

const webhook = (change: Partial<Webhook>): Webhook => ({
  id: "w1",
  url: "https://example.com/hook",
  description: "",
  event_types: [],
  enabled: true,
  disabled_reason: null,
  disabled_at: null,
  secret: null,
  previous_secret_expires_at: null,
  created_at: null,
  updated_at: null,
  ...change,
});

describe("webhook deliveries", () => {
  it("show the last answer, the attempts and the latency", () => {
    const done = deliveryView(
      delivery({
        status: "succeeded",
        attempts: 2,
        attempt_log: [
          { number: 1, at: null, response_status: 500, response_body: "oops", latency_ms: 12, error: null },
          { number: 2, at: null, response_status: 204, response_body: null, latency_ms: 40, error: null },
        ],
      }),
    );
    expect(done).toEqual({ tone: "success", label: "Delivered", detail: "HTTP 204 · 2 attempts", latency: "40 ms" });
    const failed = deliveryView(
      delivery({
        status: "failed",
        attempts: 1,
        attempt_log: [{ number: 1, at: null, response_status: null, response_body: null, latency_ms: 15000, error: "timed out after 15 s" }],
      }),
    );
    expect(failed.tone).toBe("error");
    expect(failed.detail).toBe("timed out after 15 s · 1 attempt");
  });

  it("tell a first try from a retry", () => {
    expect(deliveryView(delivery({})).label).toBe("Pending");
    const retrying = deliveryView(
      delivery({
        attempts: 1,
        next_attempt_at: "2026-12-01T10:05:00Z",
        attempt_log: [{ number: 1, at: null, response_status: 502, response_body: null, latency_ms: 3, error: null }],
      }),
    );
    expect(retrying.label).toBe("Retrying");
    expect(retrying.detail).toContain("HTTP 502 · next try");
  });
});

describe("webhook endpoints", () => {
  it("say why the platform disabled them", () => {
    expect(endpointState(webhook({}))).toEqual({ enabled: true, text: "Enabled" });
    expect(endpointState(webhook({ enabled: false }))).toEqual({ enabled: false, text: "Disabled" });
    expect(endpointState(webhook({ enabled: false, disabled_reason: "5 deliveries in a row failed every attempt" })).text).toBe(
      "Disabled by Atelier: 5 deliveries in a row failed every attempt",
    );
  });

  it("summarise events, mask secrets and check URLs", () => {
    expect(eventsSummary([])).toBe("every event");
    expect(eventsSummary(["job.completed", "batch.completed"])).toBe("job.completed, batch.completed");
    expect(maskSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).toBe("whsec_••••••••••••LaSw");
    expect(urlProblem("")).toMatch(/Enter/);
    expect(urlProblem("example.com/hook")).toBe("This is not a URL.");
    expect(urlProblem("ftp://example.com")).toMatch(/https/);
    expect(urlProblem(" https://example.com/hook ")).toBeNull();
  });
});
