// A finished job's outputs: the one chosen compared with the original, and, when the job made
// several (FLUX's num_images, BiRefNet's mask), a grid of all of them, each viewable,
// downloadable under its own name and usable as the next input, plus "Download all" as a ZIP.
import { useState } from "react";
import { Link } from "react-router-dom";
import { api, type Image, type Schemas } from "@/api/client";
import { errorFromResponse, messageOf } from "@/api/problem";
import { formatBytes } from "@/api/upload";
import { CHECKER, Compare } from "@/components/Compare";
import { ShareDialog } from "@/components/ShareDialog";
import { Button } from "@/components/ui/button";
import { Alert } from "@/components/ui/misc";
import { cn } from "@/lib/cn";
import { saveDownload } from "@/lib/saveStream";

export type Output = Schemas["JobOutputBody"];

/** "Mask", or "Image 2" among several images. */
export function outputLabel(output: Output, outputs: Output[]): string {
  if (output.role === "mask") return "Mask";
  const images = outputs.filter((o) => o.role !== "mask");
  return images.length > 1 ? `Image ${images.indexOf(output) + 1}` : "Image";
}

export function JobOutputs({
  jobId,
  workflowId,
  outputs,
  input,
  workflowName,
}: {
  jobId: string;
  workflowId: string;
  outputs: Output[];
  input: Image | null | undefined;
  workflowName: string;
}) {
  const [shownIndex, setShownIndex] = useState(0);
  const [zipping, setZipping] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const shown = outputs[shownIndex] ?? outputs[0];
  if (!shown) return null;
  const inputName = input ? input.original_filename || input.filename : "original";
  const several = outputs.length > 1;

  const downloadAll = async () => {
    setError(null);
    setZipping(true);
    try {
      const stem = inputName.replace(/\.[^.]+$/, "");
      // Streamed to disk where the browser can: full-size results add up.
      await saveDownload(
        async () => {
          const { response } = await api.GET("/api/processing/{job_id}/download", { params: { path: { job_id: jobId } }, parseAs: "stream" });
          if (!response.ok) throw await errorFromResponse(response);
          return response;
        },
        `${stem}_${workflowId}.zip`,
        { description: "ZIP archive", mime: "application/zip", extension: ".zip" },
      );
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setZipping(false);
    }
  };

  const label = outputLabel(shown, outputs);
  return (
    <section aria-labelledby="result-heading" className="grid gap-3">
      <div className="flex flex-wrap items-center gap-2">
        <h2 id="result-heading" className="mr-auto text-lg font-semibold">
          {several ? `Results (${outputs.length})` : "Result"}
        </h2>
        {several && (
          // Enabled once the original is known (`undefined` while it loads), so the ZIP is named after it.
          <Button variant="secondary" onClick={() => void downloadAll()} disabled={zipping || input === undefined} data-testid="download-all">
            {zipping ? "Preparing ZIP…" : "Download all (ZIP)"}
          </Button>
        )}
      </div>
      {error && <Alert>{error}</Alert>}
      <Compare
        key={shown.image_id}
        before={input?.url ?? null}
        beforeAlt={`Original: ${inputName}`}
        after={shown.url}
        afterAlt={`${label} from ${workflowName}: ${shown.filename}`}
        label={several ? `${label} compared with the original` : "Result compared with the original"}
      />
      <div className="flex flex-wrap gap-2">
        <Button asChild>
          <a href={shown.url} download={shown.filename} data-testid="download-result">
            Download {several ? label.toLowerCase() : "result"}
          </a>
        </Button>
        <Button variant="secondary" asChild>
          <Link to={`/?image=${encodeURIComponent(shown.image_id)}`}>Use as input</Link>
        </Button>
        <ShareDialog key={shown.image_id} imageId={shown.image_id} canCompare={Boolean(input)} label={several ? `Share ${label.toLowerCase()}` : "Share"} />
        {input && (
          <Button variant="secondary" asChild>
            <a href={input.url} download={inputName}>
              Download original
            </a>
          </Button>
        )}
      </div>
      {several && (
        <ul className="grid grid-cols-2 gap-3 sm:grid-cols-3 md:grid-cols-4 lg:grid-cols-5" aria-label="Outputs">
          {outputs.map((output, index) => {
            const name = outputLabel(output, outputs);
            const current = output === shown;
            return (
              <li
                key={output.image_id}
                data-testid="output"
                data-role={output.role}
                className={cn(
                  "overflow-hidden rounded-lg border bg-white dark:bg-slate-900",
                  current ? "border-brand-600 ring-2 ring-brand-600 dark:border-brand-500 dark:ring-brand-500" : "border-slate-200 dark:border-slate-700",
                )}
              >
                <button
                  type="button"
                  className="block w-full focus-visible:outline focus-visible:outline-2 focus-visible:outline-offset-[-2px] focus-visible:outline-brand-600 dark:focus-visible:outline-brand-100"
                  onClick={() => setShownIndex(index)}
                  aria-pressed={current}
                >
                  <span className="flex aspect-square w-full items-center justify-center bg-slate-100 p-2 dark:bg-slate-800">
                    <img
                      src={output.thumbnail_url ?? output.url}
                      alt=""
                      loading="lazy"
                      width={output.width}
                      height={output.height}
                      className={cn("h-auto max-h-full w-auto max-w-full", CHECKER)}
                    />
                  </span>
                  <span className="sr-only">View {name}</span>
                </button>
                <div className="grid gap-1 p-2 text-xs">
                  <p className="flex items-center gap-2 font-medium">
                    {name}
                    {output.role === "mask" && <span className="rounded bg-slate-200 px-1.5 py-0.5 text-[0.7rem] uppercase tracking-wide text-slate-800 dark:bg-slate-700 dark:text-slate-100">mask</span>}
                  </p>
                  <p className="truncate text-slate-700 dark:text-slate-300" title={output.filename}>
                    {output.filename}
                  </p>
                  <p className="text-slate-700 dark:text-slate-300">
                    {output.width}×{output.height} · {formatBytes(output.file_size)}
                  </p>
                  <div className="mt-1 flex flex-wrap gap-1">
                    <Button size="sm" variant="secondary" asChild>
                      <a href={output.url} download={output.filename} data-testid="output-download">
                        Download<span className="sr-only"> {name}</span>
                      </a>
                    </Button>
                    <Button size="sm" variant="secondary" asChild>
                      <Link to={`/?image=${encodeURIComponent(output.image_id)}`}>
                        Use as input<span className="sr-only"> ({name})</span>
                      </Link>
                    </Button>
                  </div>
                </div>
              </li>
            );
          })}
        </ul>
      )}
    </section>
  );
}
