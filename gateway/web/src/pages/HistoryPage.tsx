// Past jobs, newest first: filters, search, infinite scroll; open a job, delete its images.
import { useCallback, useRef, useState } from "react";
import { Link } from "react-router-dom";
import { workflows } from "@/api/catalogue";
import { api } from "@/api/client";
import { dateProblem, dayRange } from "@/api/history";
import { messageOf } from "@/api/problem";
import { getHistory, type HistoryFilters, type HistoryItem } from "@/api/users";
import { Button } from "@/components/ui/button";
import { ConfirmDialog } from "@/components/ui/dialog";
import { FieldError, Input, Label, Select } from "@/components/ui/field";
import { Alert, PageTitle, Spinner } from "@/components/ui/misc";
import { formatDuration } from "@/lib/jobState";
import { useAsync } from "@/lib/useAsync";
import { usePaged, useWhenVisible, type Page } from "@/lib/usePaged";
import { useUploads } from "@/stores/uploads";

const STATUSES = ["completed", "failed", "cancelled", "processing", "queued", "pending"];

export default function HistoryPage() {
  const catalogue = useAsync(workflows, []);
  const [filters, setFilters] = useState<HistoryFilters>({});
  const [draft, setDraft] = useState<HistoryFilters>({});
  const [dateError, setDateError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const sentinel = useRef<HTMLDivElement>(null);
  const fetchPage = useCallback(
    async (cursor: string | null): Promise<Page<HistoryItem>> => {
      const page = await getHistory(filters, cursor);
      return { items: page.items, next: page.next_page_token ?? null };
    },
    [filters],
  );
  const list = usePaged(JSON.stringify(filters), fetchPage, (item) => item.job_id);
  const { items, loading, done, error, loaded, loadMore, setItems } = list;
  useWhenVisible(sentinel, loadMore, loaded && !done && !loading && !error);
  const filtered = Object.values(filters).some(Boolean);

  const apply = (event: { preventDefault: () => void }) => {
    event.preventDefault();
    const set = Object.fromEntries(Object.entries(draft).filter(([, v]) => v)) as HistoryFilters;
    const problem = dateProblem(set.from, set.to);
    setDateError(problem);
    if (problem) return;
    setFilters({ ...set, ...dayRange(set.from, set.to) });
  };

  const clear = () => {
    setDraft({});
    setDateError(null);
    setFilters({});
  };

  const deleteImages = async (item: HistoryItem) => {
    setNotice(null);
    try {
      for (const image of [...item.result_images, item.input_image]) {
        if (!image) continue;
        const { response } = await api.DELETE("/api/images/{id}", { params: { path: { id: image.id } } });
        if (!response.ok && response.status !== 404) throw new Error(`Could not delete ${image.original_filename}`);
        useUploads.getState().forget(image.id);
      }
      setItems((current) => current.map((i) => (i.job_id === item.job_id ? { ...i, input_image: null, result_image: null, result_images: [] } : i)));
      setNotice("Images deleted.");
    } catch (err) {
      setNotice(messageOf(err));
    }
  };

  return (
    <div className="grid gap-4">
      <PageTitle>History</PageTitle>
      <form onSubmit={apply} noValidate className="grid gap-3 rounded-lg border border-slate-200 bg-white p-4 sm:grid-cols-2 lg:grid-cols-6 dark:border-slate-700 dark:bg-slate-900" role="search" aria-label="Filter history">
        <div className="grid gap-1 sm:col-span-2">
          <Label htmlFor="q">Search</Label>
          <Input id="q" type="search" value={draft.q ?? ""} onChange={(e) => setDraft({ ...draft, q: e.target.value })} placeholder="File name, workflow or prompt" />
        </div>
        <div className="grid gap-1">
          <Label htmlFor="status">Status</Label>
          <Select id="status" value={draft.status ?? ""} onChange={(e) => setDraft({ ...draft, status: e.target.value })}>
            <option value="">Any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </Select>
        </div>
        <div className="grid gap-1">
          <Label htmlFor="workflow">Workflow</Label>
          <Select id="workflow" value={draft.workflow_id ?? ""} onChange={(e) => setDraft({ ...draft, workflow_id: e.target.value })}>
            <option value="">Any</option>
            {(catalogue.data ?? []).map((w) => (
              <option key={w.id} value={w.id}>
                {w.name}
              </option>
            ))}
          </Select>
        </div>
        <div className="grid gap-1">
          <Label htmlFor="from">From</Label>
          <Input
            id="from"
            type="date"
            value={draft.from ?? ""}
            max={draft.to || undefined}
            aria-invalid={dateError ? true : undefined}
            aria-describedby={dateError ? "dates-error" : undefined}
            onChange={(e) => setDraft({ ...draft, from: e.target.value })}
          />
        </div>
        <div className="grid gap-1">
          <Label htmlFor="to">To</Label>
          <Input
            id="to"
            type="date"
            value={draft.to ?? ""}
            min={draft.from || undefined}
            aria-invalid={dateError ? true : undefined}
            aria-describedby={dateError ? "dates-error" : undefined}
            onChange={(e) => setDraft({ ...draft, to: e.target.value })}
          />
        </div>
        {dateError && (
          <div className="sm:col-span-2 lg:col-span-6" role="alert">
            <FieldError id="dates-error">{dateError}</FieldError>
          </div>
        )}
        <div className="flex gap-2 sm:col-span-2 lg:col-span-6">
          <Button type="submit">Apply filters</Button>
          <Button variant="secondary" onClick={clear}>
            Clear
          </Button>
        </div>
      </form>
      {notice && <Alert tone="info">{notice}</Alert>}
      {error ? <Alert>{messageOf(error)}</Alert> : null}
      {loaded && items.length === 0 && !loading && !error && (
        <div data-testid="history-empty" className="grid justify-items-start gap-2">
          {filtered ? (
            <>
              <p>No jobs match these filters.</p>
              <Button variant="secondary" onClick={clear}>
                Clear filters
              </Button>
            </>
          ) : (
            <p>
              No jobs yet.{" "}
              <Link to="/" className="text-brand-700 underline dark:text-brand-100">
                Start one in the studio
              </Link>
              .
            </p>
          )}
        </div>
      )}
      <ul className="grid grid-cols-1 gap-3 sm:grid-cols-2 lg:grid-cols-3" aria-label="Jobs">
        {items.map((item) => (
          <HistoryCard key={item.job_id} item={item} onDelete={() => void deleteImages(item)} />
        ))}
      </ul>
      <div ref={sentinel} />
      {loading && <Spinner label="Loading history" />}
      {!done && !loading && !error && (
        <Button variant="secondary" className="justify-self-center" onClick={loadMore}>
          Load more
        </Button>
      )}
      {error ? (
        <Button variant="secondary" className="justify-self-center" onClick={items.length === 0 ? list.reload : loadMore}>
          Try again
        </Button>
      ) : null}
    </div>
  );
}

function HistoryCard({ item, onDelete }: { item: HistoryItem; onDelete: () => void }) {
  const thumb = item.result_image?.thumbnail_url ?? item.result_image?.url ?? item.input_image?.thumbnail_url ?? item.input_image?.url;
  const created = item.created_at ? new Date(item.created_at).toLocaleString() : null;
  return (
    <li className="overflow-hidden rounded-lg border border-slate-200 bg-white dark:border-slate-700 dark:bg-slate-900" data-testid="history-item">
      {thumb ? (
        <img src={thumb} alt="" loading="lazy" width={512} height={384} className="aspect-[4/3] w-full bg-slate-100 object-cover dark:bg-slate-800" />
      ) : (
        <div className="flex aspect-[4/3] items-center justify-center bg-slate-100 text-sm text-slate-700 dark:bg-slate-800 dark:text-slate-300">No image</div>
      )}
      <div className="grid gap-1 p-3 text-sm">
        <Link to={`/jobs/${item.job_id}`} className="font-medium text-brand-700 underline dark:text-brand-100">
          {item.workflow_name}
          {created && <span className="sr-only"> job from {created}</span>}
        </Link>
        <p>
          <span className="font-medium">{item.status}</span>
          {item.processing_time_ms != null && ` · ${formatDuration(item.processing_time_ms)}`}
        </p>
        <p className="text-slate-700 dark:text-slate-300">{[created, item.input_image?.original_filename].filter(Boolean).join(" · ")}</p>
        {item.error && <p className="text-red-700 dark:text-red-300">{item.error.message}</p>}
        {(item.input_image || item.result_images.length > 0) && (
          <ConfirmDialog
            trigger={
              <Button size="sm" variant="secondary" className="mt-1 justify-self-start">
                Delete images<span className="sr-only"> of this {item.workflow_name} job</span>
              </Button>
            }
            title="Delete these images?"
            description="The original and the results of this job are deleted for good. The job stays in your history."
            confirmLabel="Delete"
            danger
            onConfirm={onDelete}
          />
        )}
      </div>
    </li>
  );
}
