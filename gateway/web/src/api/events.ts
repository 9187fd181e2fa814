// Live job events over SSE. EventSource cannot send an Authorization header and the gateway
// takes tokens only there, so this reads the stream with fetch (@microsoft/fetch-event-source),
// reconnecting by itself with Last-Event-ID; the token is read afresh on every (re)connect.
import { EventStreamContentType, fetchEventSource } from "@microsoft/fetch-event-source";
import { currentToken } from "./client";
import { errorFromResponse } from "./problem";
import type { JobEvent } from "@/lib/jobState";

class Fatal extends Error {}

export interface Subscription {
  close(): void;
}

/** Follows job `jobId`'s events after `afterSeq` (0: every event from the first, a replay). */
export function watchJob(
  jobId: string,
  afterSeq: number,
  handlers: {
    onEvent(event: JobEvent): void;
    /** The stream ended (the job finished): no reconnect. */
    onEnd(): void;
    onError(error: unknown): void;
    onConnected?(connected: boolean): void;
  },
): Subscription {
  const controller = new AbortController();
  let ended = false;
  void fetchEventSource(`/api/processing/${encodeURIComponent(jobId)}/events`, {
    signal: controller.signal,
    openWhenHidden: true,
    // Reconnects send the last id seen by themselves; the first request starts where the page is.
    headers: afterSeq > 0 ? { "last-event-id": String(afterSeq) } : {},
    async fetch(input, init) {
      const token = await currentToken();
      const headers = new Headers(init?.headers);
      if (token) headers.set("authorization", `Bearer ${token}`);
      return fetch(input, { ...init, headers });
    },
    async onopen(response) {
      if (response.ok && response.headers.get("content-type")?.startsWith(EventStreamContentType)) {
        handlers.onConnected?.(true);
        return;
      }
      const error = await errorFromResponse(response);
      // 4xx other than rate limits will not get better by retrying.
      if (response.status >= 400 && response.status < 500 && response.status !== 429) throw new Fatal(error.message, { cause: error });
      throw error;
    },
    onmessage(message) {
      if (!message.data) return;
      try {
        const data = JSON.parse(message.data) as Record<string, unknown>;
        const seq = Number(message.id || data.seq || 0);
        handlers.onEvent({ kind: message.event || "event", seq, data });
      } catch {
        // a malformed event is skipped
      }
    },
    onclose() {
      // The server ends the stream once the job has finished.
      ended = true;
      handlers.onConnected?.(false);
      handlers.onEnd();
      throw new Fatal("stream ended");
    },
    onerror(error) {
      handlers.onConnected?.(false);
      if (error instanceof Fatal) {
        if (!ended) handlers.onError(error.cause ?? error);
        throw error;
      }
      // Retry in 2 s; Last-Event-ID is sent so nothing is missed.
      return 2000;
    },
  }).catch(() => undefined);
  return { close: () => controller.abort() };
}
