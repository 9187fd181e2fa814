// Drop, pick or paste images; each file uploads with its own progress bar.
import { useEffect } from "react";
import { useDropzone } from "react-dropzone";
import { formatBytes } from "@/api/upload";
import { Button } from "@/components/ui/button";
import { Progress } from "@/components/ui/misc";
import { cn } from "@/lib/cn";
import { useUploads } from "@/stores/uploads";

export function Uploader({ maxBytes }: { maxBytes: number }) {
  const items = useUploads((state) => state.items);
  const add = useUploads((state) => state.add);
  const cancel = useUploads((state) => state.cancel);
  const dismiss = useUploads((state) => state.dismiss);
  // The drop area is a plain region; a real button opens the file picker (keyboard users).
  const { getRootProps, getInputProps, isDragActive, open } = useDropzone({
    onDrop: (files) => void add(files, maxBytes),
    multiple: true,
    noClick: true,
    noKeyboard: true,
  });

  useEffect(() => {
    const onPaste = (event: ClipboardEvent) => {
      const files = [...(event.clipboardData?.files ?? [])];
      if (files.length) {
        event.preventDefault();
        void add(files, maxBytes);
      }
    };
    window.addEventListener("paste", onPaste);
    return () => window.removeEventListener("paste", onPaste);
  }, [add, maxBytes]);

  return (
    <div className="grid gap-3">
      <div
        {...getRootProps({ role: "group", "aria-labelledby": "upload-title", "aria-describedby": "upload-hint" })}
        className={cn(
          "flex flex-col items-center gap-3 rounded-lg border-2 border-dashed border-slate-400 bg-white px-4 py-3 text-center sm:flex-row sm:text-left dark:border-slate-500 dark:bg-slate-900",
          isDragActive && "border-brand-600 bg-brand-50 dark:bg-slate-800",
        )}
      >
        <input {...getInputProps({ "aria-label": "Choose images to upload" })} data-testid="file-input" />
        <svg aria-hidden="true" viewBox="0 0 24 24" className="hidden h-8 w-8 shrink-0 text-slate-500 sm:block dark:text-slate-400" fill="none" stroke="currentColor" strokeWidth="1.5" strokeLinecap="round" strokeLinejoin="round">
          <path d="M12 16V4m0 0L7 9m5-5 5 5M4 16v3a1 1 0 0 0 1 1h14a1 1 0 0 0 1-1v-3" />
        </svg>
        <div className="min-w-0 flex-1">
          <p id="upload-title" className="font-medium">
            {isDragActive ? "Drop to upload" : "Drop images here"}
          </p>
          <p id="upload-hint" className="text-sm text-slate-700 dark:text-slate-300">
            JPEG, PNG, WebP, GIF or TIFF, up to {formatBytes(maxBytes)} each. You can also paste an image.
          </p>
        </div>
        <Button variant="secondary" onClick={open}>
          Choose files
        </Button>
      </div>
      {items.length > 0 && (
        <ul aria-label="Uploads" className="grid gap-2">
          {items.map((item) => (
            <li key={item.key} className="rounded-md border border-slate-200 bg-white px-3 py-2 text-sm dark:border-slate-700 dark:bg-slate-900">
              <div className="flex items-center justify-between gap-2">
                <span className="truncate font-medium">{item.name}</span>
                <span className="flex shrink-0 items-center gap-3 text-slate-700 dark:text-slate-300">
                  {formatBytes(item.size)}
                  {item.status === "done" && <span className="text-emerald-800 dark:text-emerald-300">Uploaded</span>}
                </span>
              </div>
              {item.status === "uploading" && (
                <div className="mt-2 flex items-center gap-2">
                  <Progress value={item.progress} label={`Uploading ${item.name}`} />
                  <span className="w-10 text-right tabular-nums">{Math.round(item.progress * 100)}%</span>
                  <Button size="sm" variant="ghost" onClick={() => cancel(item.key)}>
                    Cancel<span className="sr-only"> upload of {item.name}</span>
                  </Button>
                </div>
              )}
              {(item.status === "failed" || item.status === "refused") && (
                <div className="mt-1 flex items-start justify-between gap-2">
                  <p role="alert" className="text-red-700 dark:text-red-300">
                    {item.error}
                  </p>
                  <Button size="sm" variant="ghost" onClick={() => dismiss(item.key)}>
                    Dismiss<span className="sr-only"> {item.name}</span>
                  </Button>
                </div>
              )}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
