// Before/after with a draggable (and keyboard-operable) divider, and zoom.
import { useState } from "react";
import { ReactCompareSlider, ReactCompareSliderImage } from "react-compare-slider";
import { Button } from "@/components/ui/button";

const ZOOMS = [1, 2, 4] as const;

export function Compare({ before, after, beforeAlt, afterAlt }: { before: string; after: string; beforeAlt: string; afterAlt: string }) {
  const [zoom, setZoom] = useState<(typeof ZOOMS)[number]>(1);
  return (
    <div className="grid gap-2">
      <div className="flex items-center gap-2" role="group" aria-label="Zoom">
        <span className="text-sm text-slate-700 dark:text-slate-300">Zoom</span>
        {ZOOMS.map((z) => (
          <Button key={z} size="sm" variant={z === zoom ? "default" : "secondary"} aria-pressed={z === zoom} onClick={() => setZoom(z)}>
            {z}×
          </Button>
        ))}
      </div>
      <div
        className="max-h-[70vh] overflow-auto rounded-lg border border-slate-200 bg-[repeating-conic-gradient(#e2e8f0_0%_25%,#fff_0%_50%)] bg-[length:20px_20px] dark:border-slate-700"
        data-testid="compare"
        // The zoomed image scrolls: make the scroll area reachable by keyboard.
        tabIndex={zoom > 1 ? 0 : -1}
        aria-label={zoom > 1 ? "Zoomed comparison, scroll to pan" : undefined}
        role={zoom > 1 ? "region" : undefined}
      >
        <div className={zoom === 1 ? "w-full" : zoom === 2 ? "w-[200%]" : "w-[400%]"}>
          <ReactCompareSlider
            itemOne={<ReactCompareSliderImage src={before} alt={beforeAlt} />}
            itemTwo={<ReactCompareSliderImage src={after} alt={afterAlt} />}
          />
        </div>
      </div>
      <p className="text-xs text-slate-700 dark:text-slate-300">Drag the divider, or focus it and use the arrow keys. Left: before, right: after.</p>
    </div>
  );
}
