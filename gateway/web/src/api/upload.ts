// Uploads go through XMLHttpRequest: fetch cannot report upload progress.
import type { Image } from "./client";
import { ApiError, parseProblem } from "./problem";

export const ACCEPTED_TYPES: Record<string, string[]> = {
  "image/jpeg": [".jpg", ".jpeg"],
  "image/png": [".png"],
  "image/webp": [".webp"],
  "image/gif": [".gif"],
  "image/tiff": [".tif", ".tiff"],
};

export const DEFAULT_MAX_BYTES = 50 * 1024 * 1024;

/** Why a file is refused before it is sent, or null when it may go. */
export function checkFile(file: { name: string; type: string; size: number }, maxBytes: number): string | null {
  const extension = file.name.includes(".") ? file.name.slice(file.name.lastIndexOf(".")).toLowerCase() : "";
  const known = file.type
    ? file.type in ACCEPTED_TYPES
    : Object.values(ACCEPTED_TYPES).some((exts) => exts.includes(extension));
  if (!known) return `${file.name}: not a supported image (JPEG, PNG, WebP, GIF or TIFF)`;
  if (file.size === 0) return `${file.name}: the file is empty`;
  if (file.size > maxBytes) return `${file.name}: larger than the ${formatBytes(maxBytes)} limit`;
  return null;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value >= 10 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

export interface UploadHandle {
  promise: Promise<Image>;
  abort(): void;
}

export function uploadFile(file: File, token: string | null, onProgress: (fraction: number) => void): UploadHandle {
  const xhr = new XMLHttpRequest();
  const promise = new Promise<Image>((resolve, reject) => {
    xhr.open("POST", "/api/images/upload");
    if (token) xhr.setRequestHeader("authorization", `Bearer ${token}`);
    xhr.responseType = "text";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => {
      if (xhr.status === 201 || xhr.status === 200) {
        onProgress(1);
        resolve(JSON.parse(xhr.responseText) as Image);
      } else {
        reject(new ApiError(xhr.status, parseProblem(xhr.responseText, xhr.status, xhr.statusText)));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, {}));
    xhr.onabort = () => reject(new DOMException("Upload cancelled", "AbortError"));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}
