// Workflow cards, grouped by category: name, what it does, and its price when fal publishes one.
import { byCategory, categoryName } from "@/api/catalogue";
import type { Workflow } from "@/api/client";
import { cn } from "@/lib/cn";
import { priceLabel } from "@/lib/estimate";

const CATEGORY_ICONS: Record<string, string> = {
  upscale: "M4 14v6h6M20 10V4h-6M4 20l7-7M20 4l-7 7",
  "background-removal": "M4 4h6v6H4zM14 14h6v6h-6zM14 4h6v6h-6",
  "image-to-image": "M12 3l1.8 4.7L18.5 9l-4.7 1.8L12 15.5l-1.8-4.7L5.5 9l4.7-1.3zM5 17l.9 2.1L8 20l-2.1.9L5 23l-.9-2.1L2 20l2.1-.9z",
  utility: "M14.7 6.3a4 4 0 0 0-5.4 5.4L3 18l3 3 6.3-6.3a4 4 0 0 0 5.4-5.4l-2.6 2.6-2.4-.6-.6-2.4z",
};

export function WorkflowPicker({ list, value, onChange }: { list: Workflow[]; value: string | undefined; onChange: (id: string) => void }) {
  return (
    <div className="grid gap-4">
      {byCategory(list).map(([category, group]) => (
        <fieldset key={category}>
          <legend className="mb-2 flex items-center gap-1.5 text-xs font-semibold uppercase tracking-wide text-slate-700 dark:text-slate-300">
            <svg aria-hidden="true" viewBox="0 0 24 24" className="h-4 w-4" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" strokeLinejoin="round">
              <path d={CATEGORY_ICONS[category] ?? "M4 4h16v16H4z"} />
            </svg>
            {categoryName(category)}
          </legend>
          <div className="grid grid-cols-2 gap-2">
            {group.map((w) => {
              const checked = value === w.id;
              const price = priceLabel(w);
              return (
                <label
                  key={w.id}
                  className={cn(
                    "relative flex min-w-0 cursor-pointer flex-col gap-1 overflow-hidden break-words rounded-lg border px-3 py-2.5 transition-colors",
                    "has-[:focus-visible]:outline has-[:focus-visible]:outline-2 has-[:focus-visible]:outline-offset-2 has-[:focus-visible]:outline-brand-600 dark:has-[:focus-visible]:outline-brand-100",
                    checked
                      ? "border-brand-600 bg-brand-50 ring-1 ring-brand-600 dark:border-brand-500 dark:bg-slate-800 dark:ring-brand-500"
                      : "border-slate-200 bg-white hover:border-slate-400 dark:border-slate-700 dark:bg-slate-900 dark:hover:border-slate-500",
                  )}
                >
                  {/* The real radio covers the card, transparent: the card is what is seen and clicked. */}
                  <input
                    type="radio"
                    name="workflow"
                    value={w.id}
                    checked={checked}
                    onChange={() => onChange(w.id)}
                    className="absolute inset-0 h-full w-full cursor-pointer appearance-none rounded-lg opacity-0"
                  />
                  <span className="text-sm font-semibold text-slate-900 dark:text-slate-50">{w.name}</span>
                  <span className="line-clamp-2 text-xs text-slate-700 dark:text-slate-300">{w.description}</span>
                  {price && (
                    <span className="mt-auto justify-self-start pt-1 text-xs font-medium text-slate-800 dark:text-slate-200">
                      <span className="sr-only">Price: </span>
                      {price}
                    </span>
                  )}
                </label>
              );
            })}
          </div>
        </fieldset>
      ))}
    </div>
  );
}
