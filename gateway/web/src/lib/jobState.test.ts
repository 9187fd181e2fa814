import { describe, expect, it } from "vitest";
import type { Job } from "@/api/client";
import { applyEvent, elapsedMs, formatDuration, isTerminal, liveFrom, phaseOf, withStatus } from "./jobState";

const job: Job = {
  job_id: "j1",
  status: "pending",
  workflow_id: "esrgan-upscale",
  image_id: "i1",
  parameters: {},
  logs: [],
  outputs: [],
  created_at: "2026-01-01T00:00:00Z",
};

describe("live job state", () => {
  it("follows status, queue position, progress and logs, ignoring replays", () => {
    let state = liveFrom(job);
    state = applyEvent(state, { kind: "status", seq: 1, data: { status: "queued", queue_position: 2 } });
    expect(state.job).toMatchObject({ status: "queued", queue_position: 2 });
    state = applyEvent(state, { kind: "status", seq: 2, data: { status: "processing", at: "2026-01-01T00:00:01Z" } });
    expect(state.job.queue_position).toBeNull();
    expect(state.job.started_at).toBe("2026-01-01T00:00:01Z");
    state = applyEvent(state, { kind: "log", seq: 3, data: { logs: [{ level: "info", message: "step 1", timestamp: "2026-01-01T00:00:01Z" }, { level: "info", message: "step 2" }] } });
    state = applyEvent(state, { kind: "progress", seq: 4, data: { progress: 0.5 } });
    const replay = applyEvent(state, { kind: "log", seq: 3, data: { logs: [{ message: "step 1" }] } });
    expect(replay).toBe(state);
    state = applyEvent(state, { kind: "status", seq: 5, data: { status: "completed", result_image_id: "r1", at: "2026-01-01T00:00:03Z" } });
    expect(state.logs).toEqual(["step 1", "step 2"]);
    expect(state.job).toMatchObject({ status: "completed", result_image_id: "r1", progress: 1, completed_at: "2026-01-01T00:00:03Z" });
    expect(state.lastSeq).toBe(5);
    expect(isTerminal(state.job.status)).toBe(true);
    expect(elapsedMs(state.job, Date.parse("2030-01-01T00:00:00Z"))).toBe(3000);
  });

  it("does not repeat the status's log lines when the stream replays them from the start", () => {
    // The status, read while the job runs, lists two lines; the stream then replays every event.
    let state = liveFrom({ ...job, status: "processing", logs: ["step 1", "step 2"] });
    expect(state.logs).toEqual(["step 1", "step 2"]);
    state = applyEvent(state, { kind: "status", seq: 1, data: { status: "queued" } });
    state = applyEvent(state, { kind: "log", seq: 2, data: { logs: [{ message: "step 1" }, { message: "step 2" }] } });
    state = applyEvent(state, { kind: "log", seq: 3, data: { logs: [{ message: "step 3" }] } });
    expect(state.logs).toEqual(["step 1", "step 2", "step 3"]);
    state = applyEvent(state, { kind: "status", seq: 4, data: { status: "completed" } });
    // The final status read lists the same lines: the count stays.
    const final = withStatus(state, { ...job, status: "completed", logs: ["step 1", "step 2", "step 3"] });
    expect(final.logs).toEqual(["step 1", "step 2", "step 3"]);
    expect(final.lastSeq).toBe(4);
    // A page that never streamed takes the status's lines.
    expect(withStatus(null, { ...job, status: "failed", logs: ["x"] }).logs).toEqual(["x"]);
  });

  it("shows a place in the queue while waiting, a fraction only while running", () => {
    expect(phaseOf({ ...job, status: "queued", queue_position: 2, progress: null })).toEqual({ phase: "waiting", position: 3, fraction: null });
    expect(phaseOf({ ...job, status: "submitted", queue_position: null })).toEqual({ phase: "waiting", position: null, fraction: null });
    expect(phaseOf({ ...job, status: "processing", progress: 0.4 })).toEqual({ phase: "running", position: null, fraction: 0.4 });
    expect(phaseOf({ ...job, status: "processing", progress: null }).fraction).toBeNull();
    expect(phaseOf({ ...job, status: "completed", progress: 1 }).phase).toBe("done");
  });

  it("keeps the error of a failed job", () => {
    const state = applyEvent(liveFrom(job), { kind: "status", seq: 1, data: { status: "failed", error: { code: "fal_error", message: "boom", retryable: true } } });
    expect(state.job.error).toEqual({ code: "fal_error", message: "boom", retryable: true });
  });

  it("formats durations", () => {
    expect(formatDuration(1234)).toBe("1.2 s");
    expect(formatDuration(125_000)).toBe("2 min 5 s");
  });
});
