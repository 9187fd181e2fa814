// A list read page by page (history, library). One page is read at a time, each from the cursor
// the previous one gave; a new key (other filters) starts over and drops whatever the old one
// still had in flight, so two requests can never both add the same page.
import { useCallback, useEffect, useRef, useState, type Dispatch, type RefObject, type SetStateAction } from "react";

export interface Page<T> {
  items: T[];
  next: string | null;
}

export interface Paged<T> {
  items: T[];
  setItems: Dispatch<SetStateAction<T[]>>;
  loading: boolean;
  done: boolean;
  error: unknown;
  /** Whether the first page of the current key has arrived. */
  loaded: boolean;
  loadMore: () => void;
  reload: () => void;
}

export function usePaged<T>(key: string, fetchPage: (cursor: string | null) => Promise<Page<T>>, idOf: (item: T) => string): Paged<T> {
  const [items, setItems] = useState<T[]>([]);
  const [loading, setLoading] = useState(false);
  const [loaded, setLoaded] = useState(false);
  const [done, setDone] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const generation = useRef(0);
  const inFlight = useRef<number | null>(null);
  const cursor = useRef<string | null>(null);
  const finished = useRef(false);
  const fetchRef = useRef(fetchPage);
  fetchRef.current = fetchPage;
  const idRef = useRef(idOf);
  idRef.current = idOf;

  const load = useCallback((reset: boolean) => {
    if (reset) {
      generation.current++;
      cursor.current = null;
      finished.current = false;
      setItems([]);
      setLoaded(false);
      setDone(false);
    } else if (inFlight.current !== null || finished.current) {
      // Already reading the next page, or there is none.
      return;
    }
    const id = generation.current;
    inFlight.current = id;
    setLoading(true);
    setError(null);
    fetchRef.current(cursor.current)
      .then((page) => {
        if (id !== generation.current) return;
        cursor.current = page.next;
        finished.current = !page.next;
        setDone(!page.next);
        setLoaded(true);
        setItems((current) => {
          const seen = new Set(current.map(idRef.current));
          return [...current, ...page.items.filter((item) => !seen.has(idRef.current(item)))];
        });
      })
      .catch((err: unknown) => {
        if (id === generation.current) setError(err);
      })
      .finally(() => {
        if (id === generation.current) {
          inFlight.current = null;
          setLoading(false);
        }
      });
  }, []);

  // A new key starts over; what the old one still has in flight is ignored when it lands.
  useEffect(() => load(true), [key, load]);

  const loadMore = useCallback(() => load(false), [load]);
  const reload = useCallback(() => load(true), [load]);
  return { items, setItems, loading, done, error, loaded, loadMore, reload };
}

/** Calls `onVisible` when `sentinel` scrolls into view (for infinite scrolling). */
export function useWhenVisible(sentinel: RefObject<HTMLElement | null>, onVisible: () => void, enabled: boolean): void {
  useEffect(() => {
    const node = sentinel.current;
    if (!node || !enabled) return;
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) onVisible();
    });
    observer.observe(node);
    return () => observer.disconnect();
  }, [sentinel, onVisible, enabled]);
}
