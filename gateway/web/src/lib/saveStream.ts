// Saving a file the API sends only with the bearer token (so a plain link cannot fetch it).
//
// Where the browser has the File System Access API (Chromium), the response body is piped
// straight into the file the user picks: a batch's ZIP can be gigabytes of full-size results,
// and this never holds more than a chunk in memory. The picker must open while the click's user
// activation lasts, so it opens before the request is sent. Elsewhere (Firefox, Safari) the
// response is read into a Blob and saved through a download link: the whole file passes through
// memory, which is the only way those browsers allow without a service worker relaying the
// stream.
import { saveBlob } from "./download";

interface SaveFilePickerOptions {
  suggestedName?: string;
  types?: { description: string; accept: Record<string, string[]> }[];
}
type SaveFilePicker = (options: SaveFilePickerOptions) => Promise<FileSystemFileHandle>;

/** The file name of a Content-Disposition header (RFC 6266, `filename*` preferred). */
export function filenameFromDisposition(header: string | null): string | null {
  if (!header) return null;
  const extended = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(header);
  if (extended?.[1]) {
    try {
      return decodeURIComponent(extended[1].trim());
    } catch {
      // fall through to the plain name
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;]+)/.exec(header);
  const name = (plain?.[1] ?? plain?.[2])?.trim();
  return name ? name : null;
}

export type SaveOutcome = "saved" | "cancelled";

export async function saveDownload(
  fetchResponse: () => Promise<Response>,
  suggestedName: string,
  type: { description: string; mime: string; extension: string },
): Promise<SaveOutcome> {
  const picker = (window as Window & { showSaveFilePicker?: SaveFilePicker }).showSaveFilePicker;
  if (typeof picker === "function") {
    let handle: FileSystemFileHandle;
    try {
      handle = await picker({ suggestedName, types: [{ description: type.description, accept: { [type.mime]: [type.extension] } }] });
    } catch (error) {
      if (error instanceof DOMException && error.name === "AbortError") return "cancelled";
      throw error;
    }
    const response = await fetchResponse();
    if (!response.body) throw new Error("The download is empty.");
    const writable = await handle.createWritable();
    await response.body.pipeTo(writable);
    return "saved";
  }
  const response = await fetchResponse();
  saveBlob(await response.blob(), filenameFromDisposition(response.headers.get("content-disposition")) ?? suggestedName);
  return "saved";
}
