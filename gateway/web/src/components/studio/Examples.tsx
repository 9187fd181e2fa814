// Example images shipped with the app (public/examples/, made by scripts/make-examples.mjs): one
// click uploads one through the normal upload API, so everything after is as for the user's own.
import { useState } from "react";
import { messageOf } from "@/api/problem";
import { useUploads } from "@/stores/uploads";

export const EXAMPLES = [
  { file: "mountain-lake.jpg", type: "image/jpeg", label: "Mountain lake", note: "JPEG landscape" },
  { file: "still-life.jpg", type: "image/jpeg", label: "Still life", note: "JPEG, a subject to cut out" },
  { file: "apple-cutout.png", type: "image/png", label: "Apple cut-out", note: "PNG with transparency" },
] as const;

export function Examples({ maxBytes }: { maxBytes: number }) {
  const add = useUploads((state) => state.add);
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const use = async (example: (typeof EXAMPLES)[number]) => {
    setBusy(example.file);
    setError(null);
    try {
      const response = await fetch(`/examples/${example.file}`);
      if (!response.ok) throw new Error(`The example could not be loaded (${response.status})`);
      const blob = await response.blob();
      await add([new File([blob], example.file, { type: example.type })], maxBytes);
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(null);
    }
  };
  return (
    <div className="grid min-w-0 grid-cols-1 gap-2">
      <p id="examples-title" className="text-sm font-medium text-slate-800 dark:text-slate-200">
        No photo at hand? Try an example:
      </p>
      {/* relative: the buttons' sr-only text is absolutely placed, and must be clipped by this strip, not widen the page. */}
      <ul aria-labelledby="examples-title" className="relative flex gap-2 overflow-x-auto pb-1">
        {EXAMPLES.map((example) => (
          <li key={example.file} className="shrink-0">
            <button
              type="button"
              onClick={() => void use(example)}
              disabled={busy !== null}
              className="group flex w-44 items-center gap-2 rounded-lg border border-slate-200 bg-white p-1.5 text-left hover:border-brand-600 focus-visible:outline focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-brand-600 disabled:opacity-60 dark:border-slate-700 dark:bg-slate-900 dark:hover:border-brand-500 dark:focus-visible:outline-brand-100"
            >
              <img src={`/examples/${example.file}`} alt="" width={40} height={40} className="checkerboard h-10 w-10 shrink-0 rounded object-cover" />
              <span className="min-w-0">
                <span className="block truncate text-xs font-semibold text-slate-900 dark:text-slate-100">
                  <span className="sr-only">Use the example </span>
                  {example.label}
                </span>
                <span className="block truncate text-[11px] text-slate-700 dark:text-slate-300">{busy === example.file ? "Adding…" : example.note}</span>
              </span>
            </button>
          </li>
        ))}
      </ul>
      {error && (
        <p role="alert" className="text-sm text-red-700 dark:text-red-300">
          {error}
        </p>
      )}
    </div>
  );
}
