// Every image of the user, uploads and results: a grid read page by page, filtered by kind and
// searched by file name, a lightbox (arrow keys, Escape), multi-select (download as a ZIP,
// delete), and "use as input" to send any image to the studio.
import * as DialogPrimitive from "@radix-ui/react-dialog";
import { useCallback, useEffect, useRef, useState, type KeyboardEvent } from "react";
import { Link } from "react-router-dom";
import { api, unwrap, type Image } from "@/api/client";
import { messageOf } from "@/api/problem";
import { formatBytes } from "@/api/upload";
import { CHECKER, Compare } from "@/components/Compare";
import { Button } from "@/components/ui/button";
import { ConfirmDialog } from "@/components/ui/dialog";
import { Input, Label } from "@/components/ui/field";
import { Alert, PageTitle, Spinner } from "@/components/ui/misc";
import { cn } from "@/lib/cn";
import { downloadZip } from "@/lib/download";
import { scanLabel } from "@/lib/scan";
import { usePaged, useWhenVisible, type Page } from "@/lib/usePaged";
import { useUploads } from "@/stores/uploads";

type Kind = "" | "original" | "result";
const KINDS: { value: Kind; label: string }[] = [
  { value: "", label: "All" },
  { value: "original", label: "Originals" },
  { value: "result", label: "Results" },
];

/** The name a download of `image` gets: the uploaded name, or for a result the one the server
 * gives it (`<original>_<workflow>[_<n>].<ext>`). */
export function downloadName(image: Image): string {
  return image.original_filename || image.filename;
}

async function imagesPage(query: { q: string; kind: Kind }, cursor: string | null): Promise<Page<Image>> {
  const params: Record<string, string | number> = { page_size: 48 };
  if (query.q) params.q = query.q;
  if (query.kind) params.kind = query.kind;
  if (cursor) params.page_token = cursor;
  const page = unwrap(await api.GET("/api/images", { params: { query: params } }));
  return { items: page.images, next: page.next_page_token ?? null };
}

export default function LibraryPage() {
  const [kind, setKind] = useState<Kind>("");
  const [search, setSearch] = useState("");
  const [q, setQ] = useState("");
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [open, setOpen] = useState<number | null>(null);
  const [notice, setNotice] = useState<{ tone: "info" | "error"; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const sentinel = useRef<HTMLDivElement>(null);

  const fetchPage = useCallback((cursor: string | null) => imagesPage({ q, kind }, cursor), [q, kind]);
  const list = usePaged(`${kind}\u0000${q}`, fetchPage, (image) => image.id);
  const { items, loading, loaded, done, error, loadMore, setItems } = list;
  useWhenVisible(sentinel, loadMore, loaded && !done && !loading && !error);

  // Another filter: the selection was of images no longer listed.
  useEffect(() => setSelected(new Set()), [q, kind]);

  const submit = (event: { preventDefault: () => void }) => {
    event.preventDefault();
    setQ(search.trim());
  };

  const toggle = (id: string) =>
    setSelected((current) => {
      const next = new Set(current);
      if (next.has(id)) next.delete(id);
      else next.add(id);
      return next;
    });
  const allSelected = items.length > 0 && items.every((image) => selected.has(image.id));
  const chosen = items.filter((image) => selected.has(image.id));

  const downloadSelected = async () => {
    setNotice(null);
    setBusy(true);
    try {
      if (chosen.length === 1 && chosen[0]) {
        const link = document.createElement("a");
        link.href = chosen[0].url;
        link.download = downloadName(chosen[0]);
        link.click();
      } else {
        await downloadZip(
          chosen.map((image) => ({ url: image.url, name: downloadName(image) })),
          `atelier-${chosen.length}-images.zip`,
        );
      }
    } catch (err) {
      setNotice({ tone: "error", text: messageOf(err) });
    } finally {
      setBusy(false);
    }
  };

  const deleteSelected = async () => {
    setNotice(null);
    setBusy(true);
    const gone = new Set<string>();
    const failed: string[] = [];
    for (const image of chosen) {
      const { response } = await api.DELETE("/api/images/{id}", { params: { path: { id: image.id } } });
      if (response.ok || response.status === 404) {
        gone.add(image.id);
        useUploads.getState().forget(image.id);
      } else {
        failed.push(downloadName(image));
      }
    }
    setItems((current) => current.filter((image) => !gone.has(image.id)));
    setSelected((current) => new Set([...current].filter((id) => !gone.has(id))));
    setBusy(false);
    setNotice(
      failed.length
        ? { tone: "error", text: `Could not delete ${failed.join(", ")}.` }
        : { tone: "info", text: `${gone.size} ${gone.size === 1 ? "image" : "images"} deleted.` },
    );
  };

  const filtered = Boolean(q || kind);
  const current = open !== null ? items[open] : undefined;

  return (
    <div className="grid gap-4">
      <PageTitle>Library</PageTitle>
      <div className="flex flex-wrap items-end gap-3 rounded-lg border border-slate-200 bg-white p-4 dark:border-slate-700 dark:bg-slate-900">
        {/* Native radios: arrow keys move between them, one tab stop. */}
        <fieldset className="inline-flex rounded-md border border-slate-300 p-0.5 dark:border-slate-600">
          <legend className="sr-only">Show</legend>
          {KINDS.map((option) => (
            <label
              key={option.value}
              className={cn(
                "relative flex h-9 cursor-pointer items-center rounded px-4 text-sm font-medium has-[:focus-visible]:outline has-[:focus-visible]:outline-2 has-[:focus-visible]:outline-brand-600 dark:has-[:focus-visible]:outline-brand-100",
                kind === option.value
                  ? "bg-brand-700 text-white dark:bg-brand-100 dark:text-brand-800"
                  : "text-slate-800 hover:bg-slate-100 dark:text-slate-200 dark:hover:bg-slate-800",
              )}
            >
              <input
                type="radio"
                name="library-kind"
                value={option.value}
                checked={kind === option.value}
                onChange={() => setKind(option.value)}
                className="absolute inset-0 h-full w-full cursor-pointer appearance-none opacity-0"
              />
              {option.label}
            </label>
          ))}
        </fieldset>
        <form onSubmit={submit} role="search" aria-label="Search the library" className="flex min-w-0 flex-1 items-end gap-2">
          <div className="grid min-w-0 flex-1 gap-1">
            <Label htmlFor="library-q">Search by file name</Label>
            <Input id="library-q" type="search" value={search} onChange={(e) => setSearch(e.target.value)} placeholder="e.g. holiday.jpg" />
          </div>
          <Button type="submit">Search</Button>
        </form>
      </div>

      <div className="sticky top-0 z-10 flex flex-wrap items-center gap-2 rounded-lg border border-slate-200 bg-white/95 px-4 py-2 backdrop-blur dark:border-slate-700 dark:bg-slate-900/95" data-testid="selection-bar">
        <label className="flex items-center gap-2 text-sm">
          <input
            type="checkbox"
            className="h-4 w-4 accent-brand-700"
            checked={allSelected}
            disabled={items.length === 0}
            onChange={() => setSelected(allSelected ? new Set() : new Set(items.map((image) => image.id)))}
          />
          Select all shown
        </label>
        <span className="text-sm text-slate-700 dark:text-slate-300" aria-live="polite" data-testid="selected-count">
          {selected.size} selected
        </span>
        <div className="ml-auto flex flex-wrap gap-2">
          <Button size="sm" variant="secondary" disabled={chosen.length === 0 || busy} onClick={() => void downloadSelected()}>
            Download selected
          </Button>
          <ConfirmDialog
            trigger={
              <Button size="sm" variant="danger" disabled={chosen.length === 0 || busy}>
                Delete selected
              </Button>
            }
            title={`Delete ${chosen.length} ${chosen.length === 1 ? "image" : "images"}?`}
            description="They are deleted for good, with their previews. Jobs that used them stay in your history."
            confirmLabel="Delete"
            cancelLabel="Keep them"
            danger
            onConfirm={deleteSelected}
          />
        </div>
      </div>

      {notice && <Alert tone={notice.tone}>{notice.text}</Alert>}
      {error ? <Alert>{messageOf(error)}</Alert> : null}
      {loaded && items.length === 0 && !loading && !error && (
        <div data-testid="library-empty" className="grid justify-items-start gap-2">
          {filtered ? (
            <>
              <p>No images match.</p>
              <Button
                variant="secondary"
                onClick={() => {
                  setSearch("");
                  setQ("");
                  setKind("");
                }}
              >
                Clear filters
              </Button>
            </>
          ) : (
            <p>
              Your library is empty.{" "}
              <Link to="/" className="text-brand-700 underline dark:text-brand-100">
                Upload images in the studio
              </Link>
              .
            </p>
          )}
        </div>
      )}

      <ul className="grid grid-cols-2 gap-3 sm:grid-cols-3 lg:grid-cols-4 xl:grid-cols-5" aria-label="Images">
        {items.map((image, index) => (
          <Tile key={image.id} image={image} selected={selected.has(image.id)} onToggle={() => toggle(image.id)} onOpen={() => setOpen(index)} />
        ))}
      </ul>
      <div ref={sentinel} />
      {loading && <Spinner label="Loading images" />}
      {loaded && !done && !loading && !error && (
        <Button variant="secondary" className="justify-self-center" onClick={loadMore}>
          Load more
        </Button>
      )}
      {error ? (
        <Button variant="secondary" className="justify-self-center" onClick={items.length === 0 ? list.reload : loadMore}>
          Try again
        </Button>
      ) : null}

      <Lightbox
        image={current}
        position={open === null ? "" : `${open + 1} of ${items.length}${done ? "" : "+"}`}
        onClose={() => setOpen(null)}
        onPrevious={open !== null && open > 0 ? () => setOpen(open - 1) : undefined}
        onNext={
          open !== null && (open < items.length - 1 || !done)
            ? () => {
                if (open < items.length - 1) setOpen(open + 1);
                else loadMore();
              }
            : undefined
        }
      />
    </div>
  );
}

function Tile({ image, selected, onToggle, onOpen }: { image: Image; selected: boolean; onToggle: () => void; onOpen: () => void }) {
  const name = downloadName(image);
  return (
    <li
      className={cn(
        "group relative overflow-hidden rounded-lg border bg-white dark:bg-slate-900",
        selected ? "border-brand-600 ring-2 ring-brand-600 dark:border-brand-500 dark:ring-brand-500" : "border-slate-200 dark:border-slate-700",
      )}
      data-testid="library-item"
      data-kind={image.kind}
    >
      <button type="button" onClick={onOpen} className="block w-full focus-visible:outline focus-visible:outline-2 focus-visible:outline-offset-[-2px] focus-visible:outline-brand-600 dark:focus-visible:outline-brand-100">
        <img
          src={image.thumbnail_url ?? image.url}
          alt=""
          loading="lazy"
          width={512}
          height={384}
          className={cn("aspect-[4/3] w-full object-cover", CHECKER)}
        />
        <span className="sr-only">Open {name}</span>
      </button>
      <label className="absolute left-2 top-2 flex h-8 w-8 cursor-pointer items-center justify-center rounded-md bg-white/90 shadow dark:bg-slate-900/90">
        <input type="checkbox" className="h-4 w-4 accent-brand-700" checked={selected} onChange={onToggle} />
        <span className="sr-only">Select {name}</span>
      </label>
      <div className="grid gap-0.5 p-2 text-xs">
        <p className="truncate font-medium" title={name}>
          {name}
        </p>
        <p className="text-slate-700 dark:text-slate-300">
          {image.kind === "result" ? "Result" : "Original"} · {image.width}×{image.height}
        </p>
      </div>
    </li>
  );
}

function Lightbox({
  image,
  position,
  onClose,
  onPrevious,
  onNext,
}: {
  image: Image | undefined;
  position: string;
  onClose: () => void;
  onPrevious: (() => void) | undefined;
  onNext: (() => void) | undefined;
}) {
  const onKeyDown = (event: KeyboardEvent) => {
    // The viewer uses the arrow keys to pan when it has the focus.
    if (event.defaultPrevented) return;
    if (event.key === "ArrowLeft" && onPrevious) {
      event.preventDefault();
      onPrevious();
    } else if (event.key === "ArrowRight" && onNext) {
      event.preventDefault();
      onNext();
    }
  };
  const name = image ? downloadName(image) : "";
  return (
    <DialogPrimitive.Root open={image !== undefined} onOpenChange={(next) => !next && onClose()}>
      <DialogPrimitive.Portal>
        <DialogPrimitive.Overlay className="fixed inset-0 z-40 bg-black/70" />
        <DialogPrimitive.Content
          onKeyDown={onKeyDown}
          className="fixed inset-2 z-50 grid grid-rows-[auto_1fr_auto] gap-3 overflow-auto rounded-lg bg-white p-4 shadow-xl sm:inset-6 dark:bg-slate-900"
          data-testid="lightbox"
        >
          {image && (
            <>
              <div className="flex flex-wrap items-start gap-2">
                <div className="min-w-0 flex-1">
                  <DialogPrimitive.Title className="truncate text-lg font-semibold text-slate-900 dark:text-slate-50">{name}</DialogPrimitive.Title>
                  <DialogPrimitive.Description className="text-sm text-slate-700 dark:text-slate-300" data-testid="lightbox-info">
                    {image.kind === "result" ? "Result" : "Original"} · {image.width}×{image.height} px · {formatBytes(image.file_size)}
                    {image.created_at ? ` · ${new Date(image.created_at).toLocaleString()}` : ""} · {position}
                    <span className="block" data-testid="lightbox-scan">
                      {scanLabel(image)}
                    </span>
                  </DialogPrimitive.Description>
                </div>
                <DialogPrimitive.Close asChild>
                  <Button variant="secondary" size="sm">
                    Close
                  </Button>
                </DialogPrimitive.Close>
              </div>
              <div className="min-h-0">
                <Compare key={image.id} after={image.url} afterAlt={name} label={name} fill />
              </div>
              <div className="flex flex-wrap items-center gap-2">
                <Button variant="secondary" size="sm" disabled={!onPrevious} onClick={onPrevious} aria-label="Previous image">
                  ← Previous
                </Button>
                <Button variant="secondary" size="sm" disabled={!onNext} onClick={onNext} aria-label="Next image">
                  Next →
                </Button>
                <div className="ml-auto flex flex-wrap gap-2">
                  <Button size="sm" variant="secondary" asChild>
                    <a href={image.url} download={name} data-testid="lightbox-download">
                      Download
                    </a>
                  </Button>
                  <Button size="sm" asChild>
                    <Link to={`/?image=${encodeURIComponent(image.id)}`}>Use as input</Link>
                  </Button>
                </div>
              </div>
            </>
          )}
        </DialogPrimitive.Content>
      </DialogPrimitive.Portal>
    </DialogPrimitive.Root>
  );
}
