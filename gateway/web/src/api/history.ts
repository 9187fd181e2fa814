// History: the user service's /api/users/history when the server has it; otherwise built from
// the processing service's job list and the image service (same shape, fewer filters on the
// server: date and search are applied to each page here).
import { workflows } from "./catalogue";
import { api, unwrap, type Image, type Job } from "./client";
import { ApiError } from "./problem";
import { getHistory, isMissing, type HistoryFilters, type HistoryImage, type HistoryItem, type HistoryPage } from "./users";

let historyEndpoint: boolean | null = null;

async function imageOf(id: string | null | undefined): Promise<HistoryImage | null> {
  if (!id) return null;
  try {
    const image: Image = unwrap(await api.GET("/api/images/{id}", { params: { path: { id } } }));
    return {
      id: image.id,
      filename: image.original_filename || image.filename,
      width: image.width,
      height: image.height,
      url: image.url,
      thumbnail_url: image.thumbnail_url ?? null,
    };
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

/** The date inputs' days (YYYY-MM-DD, local time) as the instants the API filters by:
 * `from` the start of its day, `to` the start of the next (exclusive), both RFC 3339. */
export function dayRange(from: string | undefined, to: string | undefined): { from?: string; to?: string } {
  const start = (day: string) => new Date(`${day}T00:00:00`);
  const range: { from?: string; to?: string } = {};
  if (from) range.from = start(from).toISOString();
  if (to) {
    const end = start(to);
    end.setDate(end.getDate() + 1);
    range.to = end.toISOString();
  }
  return range;
}

/** Why the date inputs' days (YYYY-MM-DD) cannot be used, or null. */
export function dateProblem(from: string | undefined, to: string | undefined): string | null {
  if (from && to && from > to) return "The From date is after the To date. Choose a From date on or before the To date.";
  return null;
}

export function matchesFilters(item: HistoryItem, filters: HistoryFilters): boolean {
  const created = Date.parse(item.created_at);
  if (filters.from && created < Date.parse(filters.from)) return false;
  if (filters.to && created >= Date.parse(filters.to)) return false;
  if (filters.q) {
    const q = filters.q.toLowerCase();
    const haystack = [item.workflow_name, item.workflow_id, item.job_id, item.input_image?.filename ?? "", JSON.stringify(item.parameters)]
      .join(" ")
      .toLowerCase();
    if (!haystack.includes(q)) return false;
  }
  return true;
}

async function fromJobs(filters: HistoryFilters, cursor: string | null, pageSize: number): Promise<HistoryPage> {
  const query: Record<string, string | number> = { page_size: pageSize };
  if (cursor) query.page_token = cursor;
  if (filters.status) query.status = filters.status;
  if (filters.workflow_id) query.workflow_id = filters.workflow_id;
  const page = unwrap(await api.GET("/api/processing/jobs", { params: { query } }));
  const names = new Map((await workflows().catch(() => [])).map((w) => [w.id, w.name]));
  const items = await Promise.all(
    page.jobs.map(async (job: Job): Promise<HistoryItem> => {
      const [input_image, result_image] = await Promise.all([imageOf(job.image_id), imageOf(job.result_image_id)]);
      return {
        job_id: job.job_id,
        status: job.status,
        workflow_id: job.workflow_id,
        workflow_name: names.get(job.workflow_id) ?? job.workflow_id,
        parameters: job.parameters as HistoryItem["parameters"],
        created_at: job.created_at ?? "",
        completed_at: job.completed_at ?? null,
        processing_time_ms: job.processing_time_ms ?? null,
        error: job.error ?? null,
        input_image,
        result_image,
      };
    }),
  );
  return { items: items.filter((item) => matchesFilters(item, filters)), next_cursor: page.next_page_token ?? null };
}

export async function historyPage(filters: HistoryFilters, cursor: string | null, pageSize = 24): Promise<HistoryPage> {
  if (historyEndpoint !== false) {
    try {
      const page = await getHistory(filters, cursor, pageSize);
      historyEndpoint = true;
      return page;
    } catch (error) {
      if (isMissing(error)) {
        historyEndpoint = false;
      } else if (!(historyEndpoint === null && error instanceof TypeError)) {
        throw error;
      }
      // Offline before the server was ever asked: the job list may be in the offline cache.
    }
  }
  return fromJobs(filters, cursor, pageSize);
}

export function errorText(error: HistoryItem["error"]): string | null {
  if (!error) return null;
  return typeof error === "string" ? error : error.message;
}
