// The lenet-digits preprocessing (wasmforge/resources/models.toml): a drawing
// becomes an 8x8 image of integers 0..16 as in sklearn's load_digits (UCI
// optdigits: the digit scaled into a 32x32 binary bitmap, then the "on" pixels
// counted in each 4x4 block), and the model's input is pixel / 16.

export const BITMAP = 32; // optdigits' normalised bitmap
export const SIDE = 8; // the model's image: BITMAP / 4

/**
 * The ink of `canvas` (dark strokes on a transparent or white background) as
 * a 32x32 bitmap: the drawing's bounding box scaled to fill it (keeping the
 * aspect ratio, centred), as the optdigits forms were normalised.
 */
export function bitmap(canvas) {
  const { width, height } = canvas;
  const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  const ink = (x, y) => {
    const k = 4 * (y * width + x);
    const darkness = 1 - (pixels[k] + pixels[k + 1] + pixels[k + 2]) / (3 * 255);
    return (pixels[k + 3] / 255) * darkness;
  };
  let [x0, y0, x1, y1] = [width, height, -1, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (ink(x, y) > 0.5) [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x), Math.max(y1, y)];
    }
  }
  const bits = new Uint8Array(BITMAP * BITMAP);
  if (x1 < 0) return bits; // nothing drawn
  const size = Math.max(x1 - x0 + 1, y1 - y0 + 1);
  const left = x0 - (size - (x1 - x0 + 1)) / 2;
  const top = y0 - (size - (y1 - y0 + 1)) / 2;
  // Each bitmap cell is on when most of the canvas area it covers is ink.
  for (let by = 0; by < BITMAP; by++) {
    for (let bx = 0; bx < BITMAP; bx++) {
      let on = 0;
      let all = 0;
      for (let sy = 0; sy < 4; sy++) {
        for (let sx = 0; sx < 4; sx++) {
          const x = Math.floor(left + ((bx + (sx + 0.5) / 4) * size) / BITMAP);
          const y = Math.floor(top + ((by + (sy + 0.5) / 4) * size) / BITMAP);
          all += 1;
          if (x >= 0 && y >= 0 && x < width && y < height && ink(x, y) > 0.5) on += 1;
        }
      }
      bits[by * BITMAP + bx] = on * 2 >= all ? 1 : 0;
    }
  }
  return bits;
}

/** The 8x8 image of integers 0..16: "on" bits counted in each 4x4 block. */
export function digitImage(bits) {
  const image = new Array(SIDE * SIDE).fill(0);
  for (let y = 0; y < BITMAP; y++) {
    for (let x = 0; x < BITMAP; x++) image[Math.floor(y / 4) * SIDE + Math.floor(x / 4)] += bits[y * BITMAP + x];
  }
  return image;
}

/** The model's input: pixel / 16 as float32, shape [1, 1, 8, 8]. */
export function modelInput(image) {
  return Float32Array.from(image, (p) => p / 16);
}
