// Saving files: one by its URL with a given name, or several as one ZIP made in the browser
// (images are compressed already, so they are stored, not deflated again).
import { zipSync } from "fflate";

/** Saves `blob` as `name` through a temporary link. */
export function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** `name` made unique among `taken` (`photo.png`, `photo (2).png`, ...); records it. */
export function uniqueName(name: string, taken: Set<string>): string {
  const dot = name.lastIndexOf(".");
  const stem = dot > 0 ? name.slice(0, dot) : name;
  const ext = dot > 0 ? name.slice(dot) : "";
  let candidate = name;
  for (let n = 2; taken.has(candidate.toLowerCase()); n++) candidate = `${stem} (${n})${ext}`;
  taken.add(candidate.toLowerCase());
  return candidate;
}

/** Fetches every file and saves them as one ZIP named `zipName`. */
export async function downloadZip(files: { url: string; name: string }[], zipName: string, signal?: AbortSignal): Promise<void> {
  const taken = new Set<string>();
  const entries: Record<string, [Uint8Array, { level: 0 }]> = {};
  for (const file of files) {
    const response = await fetch(file.url, signal ? { signal } : {});
    if (!response.ok) throw new Error(`${file.name} could not be read (${response.status})`);
    entries[uniqueName(file.name, taken)] = [new Uint8Array(await response.arrayBuffer()), { level: 0 }];
  }
  saveBlob(new Blob([zipSync(entries)], { type: "application/zip" }), zipName);
}
