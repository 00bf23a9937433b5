// The pruning heat map: one row per attention layer (forward order, top to bottom), one
// column per UNet forward (denoising step); the colour is the share of that layer's
// heads pruned at that step, grey marks measuring steps (every head computed to measure
// its entropy). The same colours as `fovea generate --prune-map`, so the two read alike.

const STOPS = [
  [30, 30, 90], // nothing pruned: dark blue
  [30, 150, 140], // half: teal
  [250, 230, 40], // everything: yellow
];
const MEASURING = "rgb(128, 128, 128)";

/** The colour of a pruned share in [0, 1], as a CSS rgb() string. */
export function shareColour(share) {
  const x = Math.min(Math.max(share, 0), 1) * 2;
  const i = x >= 2 ? 1 : Math.floor(x);
  const t = x >= 2 ? 1 : x - i;
  const c = STOPS[i].map((a, k) => Math.round(a + (STOPS[i + 1][k] - a) * t));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/** A CSS gradient of the scale, for the legend. */
export function legendGradient() {
  return `linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map(shareColour).join(", ")})`;
}

/**
 * Per cell: {step, layer, share, active, heads} for every applying forward, plus the
 * grid size. `report` is `summary.prune` from engine.generate.
 */
export function cells(report) {
  const rows = Math.max(report.layers.length, 1);
  let cols = Math.max(report.forwards, 1);
  const out = [];
  for (const [step, layer, active, heads] of report.entries) {
    cols = Math.max(cols, step + 1);
    out.push({ step, layer, active, heads, share: heads > 0 ? (heads - active) / heads : 0 });
  }
  return { rows, cols, cells: out };
}

/**
 * Draws `report` into `canvas`, sized to fit `maxWidth` CSS pixels, sharp on high-DPI
 * screens: a gutter of layer labels (index and self / cross) on the left, step numbers
 * along the bottom when the cells are wide enough. Returns the layout for hit-testing.
 */
export function drawHeatMap(canvas, report, maxWidth) {
  const grid = cells(report);
  const gutter = 58;
  const cell = Math.max(4, Math.min(28, Math.floor((maxWidth - gutter) / grid.cols)));
  const cellH = 14;
  const footer = cell >= 14 ? 14 : 0;
  const w = gutter + grid.cols * cell;
  const h = grid.rows * cellH + footer;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "10px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillStyle = getComputedStyle(canvas).color || "#666";
  report.layers.forEach((l, i) => {
    ctx.fillText(`${i} ${l.kind}`, 2, i * cellH + cellH / 2);
  });
  if (footer) {
    ctx.textAlign = "center";
    for (let s = 0; s < grid.cols; s++) ctx.fillText(String(s + 1), gutter + s * cell + cell / 2, grid.rows * cellH + footer / 2 + 1);
  }
  ctx.fillStyle = MEASURING;
  ctx.fillRect(gutter, 0, grid.cols * cell, grid.rows * cellH);
  // A 1px gap between cells keeps neighbouring steps and layers apart.
  const gap = cell >= 6 ? 1 : 0;
  for (const c of grid.cells) {
    ctx.fillStyle = shareColour(c.share);
    ctx.fillRect(gutter + c.step * cell, c.layer * cellH, cell - gap, cellH - 1);
  }
  return { cell, cellH, gutter, ...grid };
}

/** A sentence about the cell under (x, y) CSS pixels, for the tooltip. */
export function describeCell(layout, report, x, y) {
  const step = Math.floor((x - layout.gutter) / layout.cell);
  const layer = Math.floor(y / layout.cellH);
  const info = report.layers[layer];
  if (!info || step < 0 || step >= layout.cols) return "";
  const what = `layer ${layer} (${info.kind}-attention, ${info.heads} heads, ${info.nQ}×${info.nK})`;
  const c = layout.cells.find((e) => e.step === step && e.layer === layer);
  if (!c) return `step ${step + 1}, ${what}: measuring, every head computed`;
  return `step ${step + 1}, ${what}: ${Math.round(100 * c.share)}% of heads pruned (${c.heads - c.active} of ${c.heads})`;
}
