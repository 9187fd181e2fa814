// RFC 9457 problem documents, as the gateway sends every error, turned into one error type.

export interface ProblemField {
  field: string;
  pointer?: string;
  detail: string;
}

export interface ProblemDocument {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  errors?: ProblemField[];
  request_id?: string;
  /** Quota refusals: which limit, and when it resets. */
  limit?: string;
  resets_at?: string;
  allowed?: number;
  used?: number;
  requested?: number;
  tier?: string;
}

/** A failed API call: its status and, when the server sent one, its problem document. */
export class ApiError extends Error {
  readonly status: number;
  readonly problem: ProblemDocument;

  constructor(status: number, problem: ProblemDocument) {
    super(describeProblem(status, problem));
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
  }

  /** Field name → message, for inline form errors. */
  get fieldErrors(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const e of this.problem.errors ?? []) {
      const name = fieldName(e);
      if (name && !(name in out)) out[name] = e.detail;
    }
    return out;
  }

  get isQuota(): boolean {
    return (this.status === 429 || this.status === 403 || this.status === 413) && typeof this.problem.limit === "string";
  }
}

/** `#/strength`, `/strength` or `parameters.strength` → `strength`. */
export function fieldName(e: ProblemField): string {
  const raw = e.pointer && e.pointer !== "#" ? e.pointer : e.field;
  const parts = raw.replace(/^#/, "").split(/[/.]/).filter(Boolean);
  return parts[parts.length - 1] ?? raw;
}

const LIMIT_NAMES: Record<string, string> = {
  jobs_per_day: "daily job limit",
  concurrent_jobs: "limit of jobs running at once",
  storage_bytes: "storage limit",
  max_file_size_bytes: "file size limit",
};

/** One sentence a person can read. */
export function describeProblem(status: number, problem: ProblemDocument): string {
  if (problem.limit === "max_file_size_bytes" && typeof problem.allowed === "number") {
    return `This file is larger than your plan allows (${formatLimit(problem.allowed)}).`;
  }
  if (problem.limit) {
    const name = LIMIT_NAMES[problem.limit] ?? problem.limit.replace(/_/g, " ");
    const when = problem.resets_at ? ` It resets ${new Date(problem.resets_at).toLocaleString()}.` : "";
    return `You have reached your ${name}.${when}`;
  }
  const detail = problem.detail?.trim();
  const fields = (problem.errors ?? []).map((e) => `${fieldName(e)}: ${e.detail}`);
  if (detail && fields.length) return `${capitalise(detail)} (${fields.join("; ")})`;
  if (detail) return capitalise(detail);
  if (fields.length) return fields.join("; ");
  if (status === 0) return "The server cannot be reached. Check your connection.";
  return problem.title ?? `Request failed (${status})`;
}

function formatLimit(bytes: number): string {
  const mib = bytes / (1024 * 1024);
  return mib >= 1 ? `${Number.isInteger(mib) ? mib : mib.toFixed(1)} MB` : `${Math.ceil(bytes / 1024)} KB`;
}

function capitalise(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** Builds an ApiError from a response, whatever its body. */
export async function errorFromResponse(response: Response): Promise<ApiError> {
  return new ApiError(response.status, await readProblem(response));
}

export async function readProblem(response: Response): Promise<ProblemDocument> {
  const text = await response.text().catch(() => "");
  return parseProblem(text, response.status, response.statusText);
}

export function parseProblem(text: string, status: number, statusText = ""): ProblemDocument {
  if (text) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === "object") return parsed;
    } catch {
      // not JSON: fall through
    }
  }
  return { status, title: statusText || `HTTP ${status}` };
}

/** Any thrown value as a message. */
export function messageOf(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof TypeError) return "The server cannot be reached. Check your connection.";
  if (error instanceof Error) return error.message;
  return String(error);
}
