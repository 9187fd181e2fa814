// The selected images, big: the one in focus fills the stage; the others wait in a strip below.
import { useState } from "react";
import type { Image } from "@/api/client";
import { formatBytes } from "@/api/upload";
import { Button } from "@/components/ui/button";
import { Spinner } from "@/components/ui/misc";
import { cn } from "@/lib/cn";
import { formatResolution } from "@/lib/estimate";
import { useUploads } from "@/stores/uploads";
import { displayName } from "./ImagePicker";

export function Stage({ empty }: { empty: React.ReactNode }) {
  const selected = useUploads((state) => state.selected);
  const known = useUploads((state) => state.images);
  const toggle = useUploads((state) => state.toggle);
  const [focusId, setFocusId] = useState<string | null>(null);
  const focus = focusId && selected.includes(focusId) ? focusId : selected.at(-1);
  const image: Image | undefined = focus ? known[focus] : undefined;

  if (selected.length === 0) {
    return (
      <div className="flex min-h-64 flex-col items-center justify-center gap-4 rounded-xl border border-slate-200 bg-white p-6 text-center shadow-sm dark:border-slate-700 dark:bg-slate-900 lg:min-h-[24rem]">
        {empty}
      </div>
    );
  }
  return (
    <figure className="grid gap-2" aria-label="Selected images">
      <div className="checkerboard flex h-[min(36vh,34rem)] sm:h-[min(52vh,34rem)] items-center justify-center overflow-hidden rounded-xl border border-slate-200 dark:border-slate-700">
        {image ? (
          <img
            src={image.url}
            alt={`Selected: ${displayName(image)}`}
            data-testid="stage-image"
            data-image-id={image.id}
            className="h-full w-full object-contain"
          />
        ) : (
          <Spinner label="Loading the image" />
        )}
      </div>
      {image && (
        <figcaption className="flex flex-wrap items-center justify-between gap-x-3 gap-y-1 text-sm text-slate-700 dark:text-slate-300">
          <span className="truncate font-medium text-slate-900 dark:text-slate-100">{displayName(image)}</span>
          <span>
            {formatResolution(image.width, image.height)} · {formatBytes(image.file_size)}
            {image.kind === "result" ? " · a result" : ""}
          </span>
        </figcaption>
      )}
      {selected.length > 1 && (
        <ul aria-label="Selected images" className="flex gap-2 overflow-x-auto pb-1">
          {selected.map((id, index) => {
            const item = known[id];
            const name = item ? displayName(item) : `image ${index + 1}`;
            return (
              <li key={id} className="relative shrink-0">
                <button
                  type="button"
                  onClick={() => setFocusId(id)}
                  aria-pressed={id === focus}
                  className={cn(
                    "block h-14 w-14 overflow-hidden rounded-md border-2 focus-visible:outline focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-brand-600 dark:focus-visible:outline-brand-100",
                    id === focus ? "border-brand-600 dark:border-brand-500" : "border-transparent",
                  )}
                >
                  {item && <img src={item.thumbnail_url ?? item.url} alt="" className="checkerboard h-full w-full object-cover" />}
                  <span className="sr-only">Show {name}</span>
                </button>
                <Button
                  size="sm"
                  variant="secondary"
                  className="absolute -right-1 -top-1 h-5 w-5 rounded-full p-0 text-xs"
                  onClick={() => toggle(id)}
                >
                  <span aria-hidden="true">×</span>
                  <span className="sr-only">Remove {name} from the selection</span>
                </Button>
              </li>
            );
          })}
        </ul>
      )}
    </figure>
  );
}
