// Pipelines (`/api/pipelines`, `/api/pipeline-runs`) through the generated client, and a run's
// live events over SSE (resumed with Last-Event-ID, as job events are).
import { EventStreamContentType, fetchEventSource } from "@microsoft/fetch-event-source";
import { api, currentToken, idempotencyKey, unwrap, type Schemas } from "./client";
import { errorFromResponse } from "./problem";

export type Pipeline = Schemas["PipelineBody"];
export type PipelineStep = Schemas["PipelineStepBody"];
export type PipelineRun = Schemas["PipelineRunBody"];
export type PipelineRunStep = Schemas["PipelineRunStepBody"];
export type PipelineRunEvent = Schemas["PipelineRunEventBody"];
export type PipelineViolation = Schemas["PipelineViolation"];

export async function listPipelines(): Promise<Pipeline[]> {
  return unwrap(await api.GET("/api/pipelines")).pipelines;
}

export async function createPipeline(name: string, steps: PipelineStep[]): Promise<Pipeline> {
  return unwrap(await api.POST("/api/pipelines", { body: { name, steps } }));
}

export async function updatePipeline(id: string, change: Schemas["UpdatePipelineBody"]): Promise<Pipeline> {
  return unwrap(await api.PATCH("/api/pipelines/{pipeline_id}", { params: { path: { pipeline_id: id } }, body: change }));
}

export async function deletePipeline(id: string): Promise<void> {
  unwrap(await api.DELETE("/api/pipelines/{pipeline_id}", { params: { path: { pipeline_id: id } } }));
}

export async function validatePipeline(steps: PipelineStep[]): Promise<PipelineViolation[]> {
  return unwrap(await api.POST("/api/pipelines/validate", { body: { steps } })).violations;
}

/** Runs a saved pipeline or the steps given on each image; one run per image. */
export async function startRuns(source: { pipelineId: string } | { steps: PipelineStep[] }, imageIds: string[]): Promise<PipelineRun[]> {
  const body = "pipelineId" in source ? { pipeline_id: source.pipelineId, image_ids: imageIds } : { steps: source.steps, image_ids: imageIds };
  return unwrap(await api.POST("/api/pipeline-runs", { body, params: { header: { "Idempotency-Key": idempotencyKey() } } })).runs;
}

export async function getRun(id: string): Promise<PipelineRun> {
  return unwrap(await api.GET("/api/pipeline-runs/{run_id}", { params: { path: { run_id: id } } }));
}

export async function cancelRun(id: string): Promise<PipelineRun> {
  return unwrap(await api.POST("/api/pipeline-runs/{run_id}/cancel", { params: { path: { run_id: id } } }));
}

export async function retryRun(id: string): Promise<PipelineRun> {
  return unwrap(await api.POST("/api/pipeline-runs/{run_id}/retry", { params: { path: { run_id: id } } }));
}

export function isFinal(run: PipelineRun): boolean {
  return run.status !== "running";
}

class Fatal extends Error {}

/** Follows run `runId`: `onRun` gets the run after every event, until it is final (then
 * `onEnd`). Reconnects send the last stored event's id, so no step change is missed. */
export function watchRun(runId: string, handlers: { onRun(run: PipelineRun): void; onEnd(): void; onError(error: unknown): void }): { close(): void } {
  const controller = new AbortController();
  let ended = false;
  void fetchEventSource(`/api/pipeline-runs/${encodeURIComponent(runId)}/events`, {
    signal: controller.signal,
    openWhenHidden: true,
    async fetch(input, init) {
      const token = await currentToken();
      const headers = new Headers(init?.headers);
      if (token) headers.set("authorization", `Bearer ${token}`);
      return fetch(input, { ...init, headers });
    },
    async onopen(response) {
      if (response.ok && response.headers.get("content-type")?.startsWith(EventStreamContentType)) return;
      const error = await errorFromResponse(response);
      if (response.status >= 400 && response.status < 500 && response.status !== 429) throw new Fatal(error.message, { cause: error });
      throw error;
    },
    onmessage(message) {
      if (!message.data) return;
      try {
        const event = JSON.parse(message.data) as PipelineRunEvent;
        if (event.run) handlers.onRun(event.run);
      } catch {
        // a malformed event is skipped
      }
    },
    onclose() {
      ended = true;
      handlers.onEnd();
      throw new Fatal("stream ended");
    },
    onerror(error) {
      if (error instanceof Fatal) {
        if (!ended) handlers.onError(error.cause ?? error);
        throw error;
      }
      return 2000;
    },
  }).catch(() => undefined);
  return { close: () => controller.abort() };
}
