import { api, unwrap, type Workflow } from "./client";

let cached: Promise<Workflow[]> | null = null;

/** The catalogue, fetched once per page load. */
export function workflows(): Promise<Workflow[]> {
  cached ??= api
    .GET("/api/workflows")
    .then((result) => unwrap(result).workflows)
    .catch((error: unknown) => {
      cached = null;
      throw error;
    });
  return cached;
}

export const CATEGORY_NAMES: Record<string, string> = {
  upscale: "Upscale",
  "background-removal": "Background removal",
  "image-to-image": "Image to image",
  utility: "Utilities",
};

export function categoryName(category: string): string {
  return CATEGORY_NAMES[category] ?? category.replace(/-/g, " ").replace(/^./, (c) => c.toUpperCase());
}

/** Workflows by category, in catalogue order. */
export function byCategory(list: Workflow[]): [string, Workflow[]][] {
  const groups = new Map<string, Workflow[]>();
  for (const workflow of list) {
    const group = groups.get(workflow.category) ?? [];
    group.push(workflow);
    groups.set(workflow.category, group);
  }
  return [...groups.entries()];
}
