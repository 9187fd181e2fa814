// Live events of several jobs over one WebSocket (`GET /api/ws`, gateway/src/live.rs), for pages
// that follow many jobs at once (a batch): one SSE stream per job would soon use up the browser's
// six connections per host. Browsers cannot set headers on a WebSocket, so the access token goes
// in `?access_token=`, read afresh on every (re)connect. After a drop it reconnects and asks for
// each job's events after the last one seen, so nothing is missed or repeated.
import { currentToken } from "./client";
import type { JobEvent } from "@/lib/jobState";

export interface JobsSubscription {
  close(): void;
}

export function watchJobs(
  jobIds: string[],
  handlers: {
    onEvent(jobId: string, event: JobEvent): void;
    /** The server refused one job's stream (e.g. 404: not yours). */
    onJobError?(jobId: string, status: number, detail: string): void;
    onConnected?(connected: boolean): void;
  },
  after: Record<string, number> = {},
): JobsSubscription {
  const lastSeq: Record<string, number> = { ...after };
  let socket: WebSocket | null = null;
  let closed = false;
  let retry: ReturnType<typeof setTimeout> | undefined;
  let delay = 1000;

  const connect = async () => {
    const token = await currentToken();
    if (closed) return;
    const url = new URL("/api/ws", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (token) url.searchParams.set("access_token", token);
    const ws = new WebSocket(url);
    socket = ws;
    ws.onopen = () => {
      delay = 1000;
      handlers.onConnected?.(true);
      ws.send(JSON.stringify({ subscribe: jobIds, after: lastSeq }));
    };
    ws.onmessage = (message) => {
      let data: Record<string, unknown>;
      try {
        data = JSON.parse(String(message.data)) as Record<string, unknown>;
      } catch {
        return;
      }
      const jobId = typeof data.job_id === "string" ? data.job_id : null;
      if (!jobId) return;
      if (data.type === "error") {
        handlers.onJobError?.(jobId, Number(data.status ?? 0), typeof data.detail === "string" ? data.detail : "");
        return;
      }
      const seq = Number(data.seq ?? 0);
      if (seq <= (lastSeq[jobId] ?? 0)) return;
      lastSeq[jobId] = seq;
      handlers.onEvent(jobId, { kind: typeof data.kind === "string" ? data.kind : "event", seq, data });
    };
    ws.onclose = () => {
      handlers.onConnected?.(false);
      if (closed) return;
      retry = setTimeout(() => void connect(), delay);
      delay = Math.min(delay * 2, 15_000);
    };
  };
  void connect();
  return {
    close() {
      closed = true;
      clearTimeout(retry);
      socket?.close();
    },
  };
}
