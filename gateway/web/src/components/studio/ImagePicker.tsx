// The user's images to pick from: searchable by file name, filtered by kind, paged to the end.
// Selection lives in the uploads store, so it holds across pages, searches and filters.
import { useEffect, useId, useMemo, useState } from "react";
import type { Image } from "@/api/client";
import { messageOf } from "@/api/problem";
import { formatBytes } from "@/api/upload";
import { Button } from "@/components/ui/button";
import { Input } from "@/components/ui/field";
import { Alert, Spinner } from "@/components/ui/misc";
import { cn } from "@/lib/cn";
import { useImagePages, type KindFilter } from "@/lib/useImagePages";
import { useUploads } from "@/stores/uploads";

const KINDS: { value: KindFilter; label: string }[] = [
  { value: "all", label: "All" },
  { value: "original", label: "Uploads" },
  { value: "result", label: "Results" },
];

export function displayName(image: Image): string {
  return image.original_filename || image.filename;
}

export function ImagePicker() {
  const [text, setText] = useState("");
  const [query, setQuery] = useState("");
  const [kind, setKind] = useState<KindFilter>("all");
  const searchId = useId();
  // The search runs when typing pauses.
  useEffect(() => {
    const timer = setTimeout(() => setQuery(text), 300);
    return () => clearTimeout(timer);
  }, [text]);

  const pages = useImagePages(query, kind);
  const uploaded = useUploads((state) => state.items);
  const selected = useUploads((state) => state.selected);
  const toggle = useUploads((state) => state.toggle);
  const select = useUploads((state) => state.select);
  const rememberAll = useUploads((state) => state.rememberAll);
  useEffect(() => rememberAll(pages.images), [pages.images, rememberAll]);

  // Uploads of this visit come first, as soon as they finish, without reloading the list.
  const images = useMemo(() => {
    const needle = query.trim().toLowerCase();
    const fresh = uploaded
      .map((item) => item.image)
      .filter((image): image is Image => !!image)
      .filter((image) => kind !== "result" && (!needle || displayName(image).toLowerCase().includes(needle)))
      .reverse();
    const listed = new Set(pages.images.map((image) => image.id));
    return [...fresh.filter((image) => !listed.has(image.id)), ...pages.images];
  }, [uploaded, pages.images, query, kind]);

  return (
    <section aria-labelledby="library-heading" className="grid gap-3">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <h2 id="library-heading" className="text-base font-semibold">
          Your images
        </h2>
        <p className="flex items-center gap-2 text-sm text-slate-700 dark:text-slate-300" aria-live="polite">
          <span data-testid="selected-count">{selected.length} selected</span>
          {selected.length > 0 && (
            <Button size="sm" variant="ghost" onClick={() => select([])}>
              Clear selection
            </Button>
          )}
        </p>
      </div>
      <div className="flex flex-wrap items-center gap-2">
        <label htmlFor={searchId} className="sr-only">
          Search images by file name
        </label>
        <Input
          id={searchId}
          type="search"
          placeholder="Search by file name"
          value={text}
          onChange={(event) => setText(event.target.value)}
          className="h-9 min-w-0 flex-1 basis-40"
        />
        <fieldset className="flex rounded-md border border-slate-300 p-0.5 dark:border-slate-600">
          <legend className="sr-only">Show</legend>
          {KINDS.map((option) => (
            <label
              key={option.value}
              className={cn(
                "relative cursor-pointer rounded px-3 py-1 text-sm font-medium has-[:focus-visible]:outline has-[:focus-visible]:outline-2 has-[:focus-visible]:outline-brand-600 dark:has-[:focus-visible]:outline-brand-100",
                kind === option.value
                  ? "bg-brand-700 text-white dark:bg-brand-100 dark:text-brand-800"
                  : "text-slate-800 hover:bg-slate-100 dark:text-slate-200 dark:hover:bg-slate-800",
              )}
            >
              <input
                type="radio"
                name={`${searchId}-kind`}
                value={option.value}
                checked={kind === option.value}
                onChange={() => setKind(option.value)}
                className="absolute inset-0 h-full w-full cursor-pointer appearance-none opacity-0"
              />
              {option.label}
            </label>
          ))}
        </fieldset>
      </div>
      {pages.error ? <Alert>{messageOf(pages.error)}</Alert> : null}
      {images.length > 0 ? (
        <fieldset>
          <legend className="sr-only">Images to process</legend>
          <ul className="grid grid-cols-3 gap-2 sm:grid-cols-4 xl:grid-cols-6" data-testid="image-grid">
            {images.map((image) => (
              <Thumb key={image.id} image={image} checked={selected.includes(image.id)} onToggle={() => toggle(image.id)} />
            ))}
          </ul>
        </fieldset>
      ) : (
        !pages.loading &&
        !pages.error && (
          <p className="rounded-md border border-dashed border-slate-300 p-4 text-center text-sm text-slate-700 dark:border-slate-600 dark:text-slate-300">
            {query.trim()
              ? `No images named like “${query.trim()}”.`
              : kind === "result"
                ? "No results yet: run a workflow and they appear here."
                : "No images yet: upload one or try an example."}
          </p>
        )
      )}
      <div className="flex items-center gap-3">
        {pages.loading && <Spinner label="Loading images" />}
        {pages.more && !pages.loading && (
          <Button variant="secondary" size="sm" onClick={pages.loadMore}>
            Load more images
          </Button>
        )}
      </div>
    </section>
  );
}

function Thumb({ image, checked, onToggle }: { image: Image; checked: boolean; onToggle: () => void }) {
  const name = displayName(image);
  return (
    <li>
      <label
        className={cn(
          "group relative block cursor-pointer overflow-hidden rounded-lg border-2 bg-slate-100 dark:bg-slate-800",
          checked ? "border-brand-600 dark:border-brand-500" : "border-transparent hover:border-slate-300 dark:hover:border-slate-600",
          "has-[:focus-visible]:outline has-[:focus-visible]:outline-2 has-[:focus-visible]:outline-offset-2 has-[:focus-visible]:outline-brand-600 dark:has-[:focus-visible]:outline-brand-100",
        )}
        title={`${name} · ${image.width}×${image.height} · ${formatBytes(image.file_size)}`}
      >
        <input
          type="checkbox"
          className="absolute inset-0 z-10 h-full w-full cursor-pointer appearance-none opacity-0"
          checked={checked}
          onChange={onToggle}
          data-testid="pick"
          data-image-id={image.id}
        />
        <img
          src={image.thumbnail_url ?? image.url}
          alt=""
          loading="lazy"
          width={128}
          height={128}
          className="checkerboard aspect-square w-full object-cover"
        />
        <span
          aria-hidden="true"
          className={cn(
            "absolute right-1 top-1 flex h-6 w-6 items-center justify-center rounded-full border-2 text-xs font-bold",
            checked ? "border-white bg-brand-700 text-white" : "border-white/90 bg-black/30 text-transparent",
          )}
        >
          ✓
        </span>
        {image.kind === "result" && (
          <span className="absolute left-1 top-1 rounded bg-slate-900/80 px-1.5 py-0.5 text-[11px] font-medium text-white">Result</span>
        )}
        <span className="block truncate bg-white px-1.5 py-1 text-xs text-slate-800 dark:bg-slate-900 dark:text-slate-200">{name}</span>
      </label>
    </li>
  );
}
