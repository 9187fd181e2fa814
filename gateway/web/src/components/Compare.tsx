// Before/after viewer: the result fitted to the screen (never enlarged past its own pixels until
// zoomed), a divider to compare with the original, zoom (buttons, wheel, pinch, keyboard) and pan
// (drag, keyboard). Transparent pixels show a checkerboard, never the original underneath.
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState, type KeyboardEvent, type PointerEvent } from "react";
import { Button } from "@/components/ui/button";
import { cn } from "@/lib/cn";
import { clampView, fitView, zoomAt, type Size, type View } from "@/lib/viewport";

/** The checkerboard behind images that may be transparent. */
export const CHECKER =
  "bg-[repeating-conic-gradient(#cbd5e1_0%_25%,#f8fafc_0%_50%)] bg-[length:16px_16px] dark:bg-[repeating-conic-gradient(#334155_0%_25%,#1e293b_0%_50%)]";

const MAX_SCALE = 16;
const STEP = 1.5;
const PAN_STEP = 60;

export function Compare({
  before,
  after,
  beforeAlt,
  afterAlt,
  label = "Comparison",
  fill = false,
}: {
  /** Without an original, the viewer shows the one image (zoom and pan still work). */
  before?: string | null;
  after: string;
  beforeAlt?: string;
  afterAlt: string;
  label?: string;
  /** Take the whole height offered (a lightbox) instead of the fitted image's. */
  fill?: boolean;
}) {
  const frame = useRef<HTMLDivElement>(null);
  const viewportRef = useRef<HTMLDivElement>(null);
  const [natural, setNatural] = useState<Size | null>(null);
  const [box, setBox] = useState<Size>({ width: 0, height: 0 });
  const [view, setView] = useState<View | null>(null);
  const [fitted, setFitted] = useState(true);
  const [split, setSplit] = useState(0.5);
  const pointers = useRef(new Map<number, { x: number; y: number }>());
  const gesture = useRef<{ mode: "pan" | "split"; last: { x: number; y: number }; distance: number } | null>(null);

  // The frame's width and the screen's height give the viewport: as tall as the fitted image,
  // at most 70% of the screen, at least enough to work in.
  useLayoutEffect(() => {
    const node = frame.current;
    if (!node) return;
    const measure = () => setBox({ width: node.clientWidth, height: Math.round(window.innerHeight * (fill ? 0.62 : 0.7)) });
    measure();
    const observer = new ResizeObserver(measure);
    observer.observe(node);
    window.addEventListener("resize", measure);
    return () => {
      observer.disconnect();
      window.removeEventListener("resize", measure);
    };
  }, [fill]);

  const viewport: Size | null = useMemo(
    () =>
      natural && box.width > 0
        ? {
            width: box.width,
            height: fill
              ? box.height
              : Math.max(Math.min(160, box.height), Math.min(box.height, Math.round(natural.height * Math.min(1, box.width / natural.width, box.height / natural.height)))),
          }
        : null,
    [natural, box.width, box.height, fill],
  );

  // Fitted until the user zooms; fitted again on "Fit" (and kept fitted when the frame resizes).
  useEffect(() => {
    if (!natural || !viewport) return;
    if (fitted || !view) setView(fitView(natural, viewport));
    else setView((current) => (current ? clampView(current, natural, viewport) : current));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [natural, viewport?.width, viewport?.height, fitted]);

  // A new result starts fitted again.
  useEffect(() => {
    setNatural(null);
    setFitted(true);
    setView(null);
  }, [after]);

  const fit = natural && viewport ? fitView(natural, viewport).scale : 1;
  const zoomTo = useCallback(
    (scale: number, at?: { x: number; y: number }) => {
      if (!natural || !viewport || !view) return;
      const target = Math.min(MAX_SCALE, Math.max(fit, scale));
      setFitted(false);
      setView(zoomAt(view, natural, viewport, target, at ?? { x: viewport.width / 2, y: viewport.height / 2 }));
    },
    [natural, viewport, view, fit],
  );
  const pan = (dx: number, dy: number) => {
    if (!natural || !viewport || !view) return;
    setView(clampView({ ...view, x: view.x + dx, y: view.y + dy }, natural, viewport));
  };

  // The wheel zooms around the pointer; the listener is not passive, so the page does not scroll.
  useEffect(() => {
    const node = viewportRef.current;
    if (!node) return;
    const onWheel = (event: WheelEvent) => {
      if (!view) return;
      event.preventDefault();
      const rect = node.getBoundingClientRect();
      zoomTo(view.scale * Math.exp(-event.deltaY * 0.0015), { x: event.clientX - rect.left, y: event.clientY - rect.top });
    };
    node.addEventListener("wheel", onWheel, { passive: false });
    return () => node.removeEventListener("wheel", onWheel);
  }, [view, zoomTo]);

  const zoomed = Boolean(natural && view && viewport && (natural.width * view.scale > viewport.width + 0.5 || natural.height * view.scale > viewport.height + 0.5));

  const local = (event: PointerEvent) => {
    const rect = viewportRef.current?.getBoundingClientRect();
    return { x: event.clientX - (rect?.left ?? 0), y: event.clientY - (rect?.top ?? 0) };
  };

  const onPointerDown = (event: PointerEvent<HTMLDivElement>) => {
    if (event.button !== 0 && event.pointerType === "mouse") return;
    const point = local(event);
    pointers.current.set(event.pointerId, point);
    event.currentTarget.setPointerCapture(event.pointerId);
    const onHandle = (event.target as HTMLElement).closest("[data-divider]") !== null;
    const mode = onHandle || (!zoomed && before) ? "split" : "pan";
    gesture.current = { mode, last: point, distance: pinchDistance() };
    if (mode === "split" && !onHandle && viewport) setSplit(clamp01(point.x / viewport.width));
  };

  const pinchDistance = () => {
    const [a, b] = [...pointers.current.values()];
    return a && b ? Math.hypot(a.x - b.x, a.y - b.y) : 0;
  };

  const onPointerMove = (event: PointerEvent<HTMLDivElement>) => {
    if (!pointers.current.has(event.pointerId) || !gesture.current || !view) return;
    const point = local(event);
    pointers.current.set(event.pointerId, point);
    if (pointers.current.size >= 2) {
      // Pinch: zoom by the change of distance around the fingers' midpoint.
      const distance = pinchDistance();
      const [a, b] = [...pointers.current.values()];
      if (gesture.current.distance > 0 && distance > 0 && a && b) {
        zoomTo(view.scale * (distance / gesture.current.distance), { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 });
      }
      gesture.current = { mode: "pan", last: point, distance };
      return;
    }
    if (gesture.current.mode === "split") {
      if (viewport) setSplit(clamp01(point.x / viewport.width));
    } else {
      pan(point.x - gesture.current.last.x, point.y - gesture.current.last.y);
    }
    gesture.current.last = point;
  };

  const onPointerUp = (event: PointerEvent<HTMLDivElement>) => {
    pointers.current.delete(event.pointerId);
    if (pointers.current.size === 0) gesture.current = null;
    else if (gesture.current) gesture.current.distance = pinchDistance();
  };

  const onKeyDown = (event: KeyboardEvent<HTMLDivElement>) => {
    if (!view) return;
    const keys: Record<string, () => void> = {
      "+": () => zoomTo(view.scale * STEP),
      "=": () => zoomTo(view.scale * STEP),
      "-": () => zoomTo(view.scale / STEP),
      "0": () => setFitted(true),
      "1": () => zoomTo(1),
      ArrowLeft: () => pan(PAN_STEP, 0),
      ArrowRight: () => pan(-PAN_STEP, 0),
      ArrowUp: () => pan(0, PAN_STEP),
      ArrowDown: () => pan(0, -PAN_STEP),
    };
    const action = keys[event.key];
    if (!action || event.altKey || event.ctrlKey || event.metaKey) return;
    event.preventDefault();
    action();
  };

  const onDividerKey = (event: KeyboardEvent<HTMLDivElement>) => {
    const moves: Record<string, (s: number) => number> = {
      ArrowLeft: (s) => s - 0.05,
      ArrowRight: (s) => s + 0.05,
      Home: () => 0,
      End: () => 1,
      PageDown: (s) => s - 0.25,
      PageUp: (s) => s + 0.25,
    };
    const move = moves[event.key];
    if (!move) return;
    event.preventDefault();
    event.stopPropagation();
    setSplit((s) => clamp01(move(s)));
  };

  const percent = view ? Math.round(view.scale * 100) : null;
  const stage = natural && view ? { width: natural.width * view.scale, height: natural.height * view.scale } : null;
  const splitX = viewport ? split * viewport.width : 0;
  const clipLeft = view ? Math.max(0, splitX - view.x) : 0;

  return (
    <div className="grid gap-2">
      <div className="flex flex-wrap items-center gap-2" role="toolbar" aria-label="Zoom">
        <Button size="sm" variant="secondary" onClick={() => view && zoomTo(view.scale / STEP)} disabled={!view || view.scale <= fit + 1e-6} aria-label="Zoom out">
          −
        </Button>
        <span className="min-w-[4.5rem] text-center text-sm tabular-nums text-slate-800 dark:text-slate-200" data-testid="zoom-level" aria-live="polite">
          {percent === null ? "…" : fitted ? `Fit (${percent}%)` : `${percent}%`}
        </span>
        <Button size="sm" variant="secondary" onClick={() => view && zoomTo(view.scale * STEP)} disabled={!view || view.scale >= MAX_SCALE - 1e-6} aria-label="Zoom in">
          +
        </Button>
        <Button size="sm" variant={fitted ? "default" : "secondary"} aria-pressed={fitted} onClick={() => setFitted(true)}>
          Fit
        </Button>
        <Button size="sm" variant={!fitted && view?.scale === 1 ? "default" : "secondary"} aria-pressed={!fitted && view?.scale === 1} onClick={() => zoomTo(1)}>
          100%
        </Button>
        {natural && (
          <span className="text-xs text-slate-700 dark:text-slate-300" data-testid="natural-size">
            {natural.width}×{natural.height} px
          </span>
        )}
      </div>
      <div ref={frame} className="w-full">
        {/* The viewer takes the keyboard (zoom, pan) as an application does; it is labelled and
            its keys are listed below it. */}
        {/* eslint-disable-next-line jsx-a11y/no-noninteractive-element-interactions */}
        <div
          ref={viewportRef}
          // eslint-disable-next-line jsx-a11y/no-noninteractive-tabindex
          tabIndex={0}
          onKeyDown={onKeyDown}
          role="application"
          aria-label={`${label}: + and − zoom, 0 fits, arrow keys pan`}
          aria-roledescription="image viewer"
          data-testid="compare"
          data-fitted={fitted}
          className={cn(
            "relative select-none overflow-hidden rounded-lg bg-slate-100 ring-1 ring-slate-200 dark:ring-slate-700 outline-none focus-visible:outline focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-brand-600 dark:bg-slate-900 dark:focus-visible:outline-brand-100",
            zoomed ? "cursor-grab touch-none active:cursor-grabbing" : "touch-pan-y",
            before && !zoomed && "cursor-ew-resize",
          )}
          style={{ height: viewport ? `${viewport.height}px` : "20rem" }}
          onPointerDown={onPointerDown}
          onPointerMove={onPointerMove}
          onPointerUp={onPointerUp}
          onPointerCancel={onPointerUp}
        >
          <div
            className="absolute left-0 top-0"
            data-testid="compare-stage"
            style={stage && view ? { width: `${stage.width}px`, height: `${stage.height}px`, transform: `translate(${view.x}px, ${view.y}px)` } : { visibility: "hidden" }}
          >
            {before && (
              <img
                src={before}
                alt={beforeAlt ?? "Original"}
                draggable={false}
                className={cn("absolute inset-0 h-full w-full object-contain", CHECKER)}
                data-testid="compare-before"
              />
            )}
            <div className={cn("absolute inset-0", CHECKER)} style={before ? { clipPath: `inset(0 0 0 ${clipLeft}px)` } : undefined} data-testid="compare-after-layer">
              <img
                src={after}
                alt={afterAlt}
                draggable={false}
                className="h-full w-full object-contain"
                data-testid="compare-after"
                onLoad={(event) => setNatural({ width: event.currentTarget.naturalWidth, height: event.currentTarget.naturalHeight })}
              />
            </div>
          </div>
          {before && viewport && (
            <div
              data-divider
              role="slider"
              tabIndex={0}
              aria-label="Divider: original on the left, result on the right"
              aria-valuemin={0}
              aria-valuemax={100}
              aria-valuenow={Math.round(split * 100)}
              aria-valuetext={`${Math.round(split * 100)}% original`}
              aria-orientation="horizontal"
              onKeyDown={onDividerKey}
              className="group absolute inset-y-0 z-10 -ml-4 flex w-8 cursor-ew-resize touch-none justify-center outline-none"
              style={{ left: `${splitX}px` }}
            >
              <span aria-hidden="true" className="h-full w-0.5 bg-white shadow-[0_0_0_1px_rgba(15,23,42,0.6)]" />
              <span
                aria-hidden="true"
                className="absolute top-1/2 flex h-8 w-8 -translate-y-1/2 items-center justify-center rounded-full border-2 border-white bg-slate-900/80 text-xs font-bold text-white shadow group-focus-visible:outline group-focus-visible:outline-2 group-focus-visible:outline-offset-2 group-focus-visible:outline-brand-600 dark:group-focus-visible:outline-brand-100"
              >
                ⇔
              </span>
            </div>
          )}
          {before && stage && view && viewport && (
            // The labels sit on the image's own corners, inside the viewport.
            <>
              <span
                aria-hidden="true"
                className="pointer-events-none absolute rounded bg-slate-900/75 px-2 py-0.5 text-xs font-medium text-white"
                style={{ left: `${Math.max(0, view.x) + 8}px`, top: `${Math.max(0, view.y) + 8}px` }}
              >
                Original
              </span>
              <span
                aria-hidden="true"
                className="pointer-events-none absolute rounded bg-slate-900/75 px-2 py-0.5 text-xs font-medium text-white"
                style={{ right: `${Math.max(0, viewport.width - (view.x + stage.width)) + 8}px`, top: `${Math.max(0, view.y) + 8}px` }}
              >
                Result
              </span>
            </>
          )}
        </div>
      </div>
      <p className="text-xs text-slate-700 dark:text-slate-300">
        {before ? "Drag the divider (or focus it and use the arrow keys) to compare. " : ""}
        Scroll or pinch to zoom, drag to pan; on the keyboard + and − zoom, 0 fits, arrows pan.
      </p>
    </div>
  );
}

function clamp01(value: number): number {
  return Math.min(1, Math.max(0, value));
}
