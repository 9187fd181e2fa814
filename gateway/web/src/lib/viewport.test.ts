import { describe, expect, it } from "vitest";
import { clampView, fitView, zoomAt } from "./viewport";

describe("image viewer geometry", () => {
  it("fits a large image whole, centred", () => {
    expect(fitView({ width: 4000, height: 3000 }, { width: 800, height: 600 })).toEqual({ scale: 0.2, x: 0, y: 0 });
    const portrait = fitView({ width: 1000, height: 3000 }, { width: 800, height: 600 });
    expect(portrait.scale).toBe(0.2);
    expect(portrait.x).toBe(300);
    expect(portrait.y).toBe(0);
  });

  it("never enlarges a small image to fit", () => {
    expect(fitView({ width: 40, height: 30 }, { width: 800, height: 600 })).toEqual({ scale: 1, x: 380, y: 285 });
  });

  it("zooms around a point and keeps the image covering the viewport", () => {
    const fitted = fitView({ width: 1600, height: 1200 }, { width: 800, height: 600 });
    const zoomed = zoomAt(fitted, { width: 1600, height: 1200 }, { width: 800, height: 600 }, 1, { x: 400, y: 300 });
    expect(zoomed).toEqual({ scale: 1, x: -400, y: -300 });
    // Panned past the edge: held at the edge.
    expect(clampView({ scale: 1, x: 100, y: -5000 }, { width: 1600, height: 1200 }, { width: 800, height: 600 })).toEqual({ scale: 1, x: 0, y: -600 });
  });
});
