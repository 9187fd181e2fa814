// The geometry of the image viewer: a scale and an offset of the image inside a viewport.

export interface Size {
  width: number;
  height: number;
}

/** The image drawn `scale` times its pixel size, its top-left corner at (x, y) in the viewport. */
export interface View {
  scale: number;
  x: number;
  y: number;
}

/** The whole image in the viewport, never enlarged past its own pixels, centred. */
export function fitView(image: Size, viewport: Size): View {
  const scale = Math.min(1, viewport.width / image.width, viewport.height / image.height);
  return clampView({ scale, x: 0, y: 0 }, image, viewport);
}

/** Keeps the image where it can be seen: centred along an axis where it is smaller than the
 * viewport, else with no gap at either edge. */
export function clampView(view: View, image: Size, viewport: Size): View {
  const axis = (offset: number, length: number, room: number) => (length <= room ? (room - length) / 2 : Math.min(0, Math.max(room - length, offset)));
  return {
    scale: view.scale,
    x: axis(view.x, image.width * view.scale, viewport.width),
    y: axis(view.y, image.height * view.scale, viewport.height),
  };
}

/** Zooms to `scale`, keeping the image point under `at` (viewport coordinates) where it is. */
export function zoomAt(view: View, image: Size, viewport: Size, scale: number, at: { x: number; y: number }): View {
  const ix = (at.x - view.x) / view.scale;
  const iy = (at.y - view.y) / view.scale;
  return clampView({ scale, x: at.x - ix * scale, y: at.y - iy * scale }, image, viewport);
}
