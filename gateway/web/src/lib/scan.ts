import type { Image } from "@/api/client";

/** What an image's malware scan says, in words: by whom and when, or that none ran. */
export function scanLabel(image: Pick<Image, "scan_status" | "scanner" | "scanned_at">, locale?: string): string {
  if (image.scan_status !== "clean") return "Malware scan: not scanned on this server";
  const by = image.scanner ? ` (${image.scanner})` : "";
  const when = image.scanned_at ? `, ${new Date(image.scanned_at).toLocaleString(locale)}` : "";
  return `Malware scan: clean${by}${when}`;
}
