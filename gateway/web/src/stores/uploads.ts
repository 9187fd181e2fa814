// Files being uploaded and the images uploaded this session, with which are selected.
import { create } from "zustand";
import type { Image } from "@/api/client";
import { currentToken } from "@/api/client";
import { messageOf } from "@/api/problem";
import { checkFile, uploadFile, type UploadHandle } from "@/api/upload";

export type UploadStatus = "uploading" | "done" | "failed" | "refused";

export interface UploadItem {
  key: string;
  name: string;
  size: number;
  progress: number;
  status: UploadStatus;
  error?: string;
  image?: Image;
}

interface UploadState {
  items: UploadItem[];
  /** Images to process, in the order they were picked. */
  selected: string[];
  images: Record<string, Image>;
  add: (files: File[], maxBytes: number) => Promise<void>;
  cancel: (key: string) => void;
  dismiss: (key: string) => void;
  toggle: (imageId: string) => void;
  select: (imageIds: string[]) => void;
  remember: (image: Image) => void;
  /** Keeps images seen in a listing, so a selection shows on any page. */
  rememberAll: (images: Image[]) => void;
  forget: (imageId: string) => void;
  reset: () => void;
}

const handles = new Map<string, UploadHandle>();
let counter = 0;

export const useUploads = create<UploadState>()((set, get) => {
  const patch = (key: string, change: Partial<UploadItem>) =>
    set((state) => ({ items: state.items.map((item) => (item.key === key ? { ...item, ...change } : item)) }));

  return {
    items: [],
    selected: [],
    images: {},

    async add(files, maxBytes) {
      const token = await currentToken();
      const started: Promise<void>[] = [];
      for (const file of files) {
        const key = `u${++counter}`;
        const refusal = checkFile(file, maxBytes);
        const item: UploadItem = {
          key,
          name: file.name,
          size: file.size,
          progress: 0,
          status: refusal ? "refused" : "uploading",
          ...(refusal ? { error: refusal } : {}),
        };
        set((state) => ({ items: [...state.items, item] }));
        if (refusal) continue;
        const handle = uploadFile(file, token, (progress) => patch(key, { progress }));
        handles.set(key, handle);
        started.push(
          handle.promise
            .then((image) => {
              patch(key, { status: "done", progress: 1, image });
              get().remember(image);
              set((state) => ({ selected: [...state.selected.filter((id) => id !== image.id), image.id] }));
            })
            .catch((error: unknown) => {
              const cancelled = error instanceof DOMException && error.name === "AbortError";
              patch(key, { status: "failed", error: cancelled ? "Upload cancelled" : messageOf(error) });
            })
            .finally(() => handles.delete(key)),
        );
      }
      await Promise.all(started);
    },

    cancel(key) {
      handles.get(key)?.abort();
    },

    dismiss(key) {
      set((state) => ({ items: state.items.filter((item) => item.key !== key) }));
    },

    toggle(imageId) {
      set((state) => ({
        selected: state.selected.includes(imageId)
          ? state.selected.filter((id) => id !== imageId)
          : [...state.selected, imageId],
      }));
    },

    select(imageIds) {
      set({ selected: imageIds });
    },

    remember(image) {
      set((state) => ({ images: { ...state.images, [image.id]: image } }));
    },

    rememberAll(images) {
      if (images.length === 0) return;
      set((state) => ({ images: { ...state.images, ...Object.fromEntries(images.map((image) => [image.id, image])) } }));
    },

    forget(imageId) {
      set((state) => {
        const images = Object.fromEntries(Object.entries(state.images).filter(([id]) => id !== imageId));
        return {
          images,
          selected: state.selected.filter((id) => id !== imageId),
          items: state.items.filter((item) => item.image?.id !== imageId),
        };
      });
    },

    reset() {
      for (const handle of handles.values()) handle.abort();
      set({ items: [], selected: [], images: {} });
    },
  };
});
