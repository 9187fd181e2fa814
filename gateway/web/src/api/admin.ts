// The administrators' REST endpoints (`/api/admin/*`), through the generated client: the
// workflow catalogue, users, the queue and its dead letters, fal, and the audit log.
import { api, currentToken, unwrap, type Schemas } from "./client";
import { ApiError } from "./problem";
import type { JsonValue } from "@/lib/schemaForm";

export type AdminWorkflow = Schemas["AdminWorkflowBody"];
export type AdminUser = Schemas["AdminUserBody"];
export type QueueState = Schemas["QueueStateBody"];
export type DeadLetter = Schemas["DeadLetterBody"];
export type FalState = Schemas["FalStateBody"];
export type FailureReport = Schemas["FailureReport"];
export type AuditEvent = Schemas["AuditEventBody"];

export async function listWorkflows(): Promise<AdminWorkflow[]> {
  return unwrap(await api.GET("/api/admin/workflows")).workflows;
}

export interface WorkflowChange {
  name?: string;
  description?: string;
  category?: string;
  defaults?: Record<string, JsonValue>;
  active?: boolean;
  pinned?: boolean;
}

/** Changes `workflow`, based on the version it was read at (`If-Match`). */
export async function updateWorkflow(workflow: AdminWorkflow, change: WorkflowChange): Promise<AdminWorkflow> {
  return unwrap(
    await api.PATCH("/api/admin/workflows/{id}", {
      params: { path: { id: workflow.id }, header: { "If-Match": `"${workflow.version}"` } },
      body: change,
    }),
  );
}

export interface NewWorkflow {
  id: string;
  fal_endpoint: string;
  name: string;
  category: string;
  description?: string;
  active?: boolean;
}

export async function addWorkflow(body: NewWorkflow): Promise<AdminWorkflow> {
  return unwrap(await api.POST("/api/admin/workflows", { body }));
}

export async function listUsers(q: string, pageToken?: string): Promise<Schemas["AdminUserPage"]> {
  return unwrap(await api.GET("/api/admin/users", { params: { query: { q: q || undefined, page_token: pageToken } } }));
}

export async function updateUser(id: string, change: { tier?: string; role?: string }): Promise<AdminUser> {
  return unwrap(await api.PATCH("/api/admin/users/{id}", { params: { path: { id } }, body: change }));
}

export async function queueState(): Promise<QueueState> {
  return unwrap(await api.GET("/api/admin/queue"));
}

export async function deadLetters(): Promise<DeadLetter[]> {
  return unwrap(await api.GET("/api/admin/dead-letters", { params: { query: { limit: 100 } } })).dead_letters;
}

export async function retryDeadLetter(jobId: string): Promise<void> {
  unwrap(await api.POST("/api/admin/dead-letters/{job_id}/retry", { params: { path: { job_id: jobId } } }));
}

export async function discardDeadLetter(jobId: string, reason: string): Promise<void> {
  unwrap(await api.POST("/api/admin/dead-letters/{job_id}/discard", { params: { path: { job_id: jobId } }, body: { reason } }));
}

export async function falState(): Promise<FalState> {
  return unwrap(await api.GET("/api/admin/fal"));
}

export async function failures(): Promise<FailureReport> {
  return unwrap(await api.GET("/api/admin/failures"));
}

export interface AuditFilters {
  action?: string;
  actor_user_id?: string;
  subject_user_id?: string;
}

export async function auditEvents(filters: AuditFilters, pageToken?: string): Promise<Schemas["AuditEventPage"]> {
  const query = {
    action: filters.action || undefined,
    actor_user_id: filters.actor_user_id || undefined,
    subject_user_id: filters.subject_user_id || undefined,
    page_token: pageToken,
  };
  return unwrap(await api.GET("/api/admin/audit-events", { params: { query } }));
}

/** The export URL's query for `filters`. */
export function auditExportQuery(filters: AuditFilters): string {
  const query = new URLSearchParams();
  for (const key of ["action", "actor_user_id", "subject_user_id"] as const) {
    const value = filters[key];
    if (value) query.set(key, value);
  }
  const text = query.toString();
  return text ? `?${text}` : "";
}

/** Downloads the audit log matching `filters` as JSON lines. */
export async function exportAudit(filters: AuditFilters): Promise<Blob> {
  const token = await currentToken();
  const response = await fetch(`/api/admin/audit-events/export${auditExportQuery(filters)}`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  if (!response.ok) throw new ApiError(response.status, {});
  return response.blob();
}

/** One workflow's figures over a window (the analytics endpoint). */
export interface WorkflowStats {
  workflow_id: string;
  jobs: number;
  succeeded: number;
  failed: number;
  success_rate: number | null;
  p50_ms: number | null;
  p95_ms: number | null;
  cost: number | null;
}

/** Per-workflow success rate, latency and cost over the last 30 days, by workflow id; `null`
 * when the platform has no analytics (the endpoint answers 404). */
export async function workflowStats(now: Date = new Date()): Promise<Map<string, WorkflowStats> | null> {
  const to = now.toISOString();
  const from = new Date(now.getTime() - 30 * 24 * 3600 * 1000).toISOString();
  const token = await currentToken();
  const response = await fetch(`/api/admin/analytics/workflows?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  if (response.status === 404) return null;
  if (!response.ok) throw new ApiError(response.status, {});
  const body = (await response.json()) as { workflows?: WorkflowStats[] };
  return new Map((body.workflows ?? []).map((row) => [row.workflow_id, row]));
}

/** A figure for display: "—" when it is unknown. */
export function figure(value: number | null | undefined, format: (n: number) => string): string {
  return value === null || value === undefined || Number.isNaN(value) ? "—" : format(value);
}
