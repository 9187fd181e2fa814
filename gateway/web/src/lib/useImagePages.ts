// Every image of the user, a page at a time: the list the server filters by file name and kind,
// newest first, with "load more" following `next_page_token` to the end.
import { useCallback, useEffect, useRef, useState } from "react";
import { api, unwrap, type Image } from "@/api/client";

export type KindFilter = "all" | "original" | "result";

export interface ImagePages {
  images: Image[];
  /** More pages to load. */
  more: boolean;
  loading: boolean;
  error: unknown;
  loadMore: () => void;
  reload: () => void;
}

export const PAGE_SIZE = 24;

export function useImagePages(q: string, kind: KindFilter): ImagePages {
  const [images, setImages] = useState<Image[]>([]);
  const [next, setNext] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  // The latest query wins: a slow answer to an older search never overwrites a newer one.
  const generation = useRef(0);

  const fetchPage = useCallback(
    async (token: string | null, gen: number, append: boolean) => {
      setLoading(true);
      try {
        const query: { page_size: number; page_token?: string; q?: string; kind?: "original" | "result" } = { page_size: PAGE_SIZE };
        if (token) query.page_token = token;
        if (q.trim()) query.q = q.trim();
        if (kind !== "all") query.kind = kind;
        const page = unwrap(await api.GET("/api/images", { params: { query } }));
        if (gen !== generation.current) return;
        setImages((current) => {
          if (!append) return page.images;
          const seen = new Set(current.map((image) => image.id));
          return [...current, ...page.images.filter((image) => !seen.has(image.id))];
        });
        setNext(page.next_page_token ?? null);
        setError(null);
      } catch (err) {
        if (gen === generation.current) setError(err);
      } finally {
        if (gen === generation.current) setLoading(false);
      }
    },
    [q, kind],
  );

  useEffect(() => {
    const gen = ++generation.current;
    void fetchPage(null, gen, false);
  }, [fetchPage, tick]);

  const loadMore = useCallback(() => {
    if (next) void fetchPage(next, generation.current, true);
  }, [fetchPage, next]);
  const reload = useCallback(() => setTick((t) => t + 1), []);

  return { images, more: next !== null, loading, error, loadMore, reload };
}
