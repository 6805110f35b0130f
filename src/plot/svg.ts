// Charts for `sparsek plot` and `sparsek demo` (SPEC.md sections 7 and 8), written as SVG text by
// hand: loss curves of several runs on one chart, and the causal selection pattern of each layer
// and KV head as a grid of small heatmaps.
// Not here: rasterising (png.ts), writing files (index.ts), or reading run folders (the CLI).
//
// Text is set in the generic 'sans-serif' family; widths are estimated (no font metrics here), so
// layout leaves slack. Every string from the caller goes through escapeXml.

import { ArgumentError, ShapeError } from '../core/errors.js';
import { checkInt } from '../core/check.js';

// Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies. Yellow
// (#F0E442) is last because it is hard to see on white.
const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];
const INK = '#222222'; // text and axes
const MUTED = '#555555'; // tick labels, notes
const GRID = '#e5e5e5';
const FONT = 'sans-serif';
// Advance widths in em, rounded up from DejaVu Sans (what resvg finds on most Linux machines);
// Liberation Sans and Arial are narrower, so the estimate errs towards too much room.
const CHAR_EM = 0.62;
const NARROW = new Set("il.,:;|!'`");
const SEMI = new Set('fjrt -/()[]{}"');
const WIDE = new Set('mwMW@%');

// ---------------------------------------------------------------------------------------------
// Shared helpers

/** Escapes text for XML content and attribute values, and replaces characters XML 1.0 forbids. */
export function escapeXml(s: string): string {
  return String(s)
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '\uFFFD')
    .replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

/** Coordinates rounded to 0.01 px: enough for any screen, and keeps the files small. */
function r2(x: number): number {
  return Math.round(x * 100) / 100;
}

function textWidth(s: string, fontSize: number): number {
  let em = 0;
  for (const ch of s) {
    if (NARROW.has(ch)) em += 0.3;
    else if (SEMI.has(ch)) em += 0.42;
    else if (WIDE.has(ch)) em += 0.98;
    else if (ch >= 'A' && ch <= 'Z') em += 0.74;
    else if (ch.charCodeAt(0) > 0x2e7f) em += 1; // CJK and other full-width scripts
    else em += CHAR_EM;
  }
  return em * fontSize;
}

function text(
  x: number,
  y: number,
  s: string,
  attrs: { size: number; anchor?: 'start' | 'middle' | 'end'; fill?: string; weight?: 'bold'; rotate?: boolean; cls?: string },
): string {
  const anchor = attrs.anchor ?? 'start';
  const rot = attrs.rotate ? ` transform="rotate(-90 ${r2(x)} ${r2(y)})"` : '';
  const weight = attrs.weight ? ` font-weight="${attrs.weight}"` : '';
  const cls = attrs.cls ? ` class="${attrs.cls}"` : '';
  return (
    `<text${cls} x="${r2(x)}" y="${r2(y)}" font-size="${attrs.size}" text-anchor="${anchor}"` +
    ` fill="${attrs.fill ?? INK}"${weight}${rot}>${escapeXml(s)}</text>`
  );
}

function svgOpen(width: number, height: number): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="${FONT}">\n` +
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>\n`
  );
}

/**
 * Ticks at multiples of 1, 2 or 5 times a power of ten, about `target` of them, whose first and
 * last values bracket [lo, hi]. Returns the tick values and their spacing (at least minStep, which
 * should itself be a 1-2-5 value: 1 keeps integer axes such as steps free of fractional ticks).
 */
export function niceTicks(lo: number, hi: number, target: number, minStep = 0): { ticks: number[]; step: number } {
  if (!(hi > lo)) throw new ArgumentError('niceTicks range', 'lo < hi, both finite', [lo, hi]);
  const raw = (hi - lo) / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = Math.max(minStep, (norm <= 1.5 ? 1 : norm <= 3 ? 2 : norm <= 7 ? 5 : 10) * mag);
  // Multiples of step computed from integers, so 0.1 * 3 prints as 0.3, not 0.30000000000000004.
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  const digits = Math.max(0, -Math.floor(Math.log10(step)) + 1);
  const ticks: number[] = [];
  for (let m = first; m <= last; m++) ticks.push(Number((m * step).toFixed(Math.min(20, digits))));
  return { ticks, step };
}

/**
 * Ticks for a log axis: the 1-2-5 (or, inside one decade, 1..9) multiples of powers of ten, the
 * first at or below lo and the last at or above hi. lo must be > 0.
 */
export function logTicks(lo: number, hi: number): number[] {
  if (!(lo > 0 && hi >= lo)) throw new ArgumentError('logTicks range', '0 < lo <= hi, both finite', [lo, hi]);
  const d0 = Math.floor(Math.log10(lo));
  const d1 = Math.ceil(Math.log10(hi));
  const decades = Math.log10(hi) - Math.log10(lo);
  const mantissas = decades <= 1 ? [1, 2, 3, 4, 5, 6, 7, 8, 9] : decades <= 3 ? [1, 2, 5] : [1];
  const every = Math.max(1, Math.ceil((d1 - d0) / 8)); // at most ~8 labelled decades
  const all: number[] = [];
  for (let d = d0; d <= d1; d++) {
    if (mantissas.length === 1 && (d - d0) % every !== 0 && d !== d1) continue;
    for (const m of mantissas) all.push(Number((m * 10 ** d).toPrecision(12)));
  }
  // Keep the ticks inside [lo, hi] plus one on each side, so the axis brackets the data.
  let a = 0;
  while (a + 1 < all.length && all[a + 1] <= lo) a++;
  let b = all.length - 1;
  while (b - 1 >= 0 && all[b - 1] >= hi) b--;
  return all.slice(a, b + 1);
}

/**
 * Tick label: no trailing float noise; thousands as "k" and millions as "M" when the axis reaches
 * 10k (1M) and its step is round in those units. `axisMax` is the largest |tick| of the axis, so
 * one axis never mixes "5000" and "10k".
 */
export function formatTick(v: number, step: number, axisMax = Math.abs(v)): string {
  if (v === 0) return '0';
  if (step >= 1e6 && axisMax >= 1e7) return `${trim(v / 1e6, step / 1e6)}M`;
  if (step >= 1e3 && axisMax >= 1e4) return `${trim(v / 1e3, step / 1e3)}k`;
  return trim(v, step);
}

function trim(v: number, step: number): string {
  const digits = Math.max(0, Math.min(12, -Math.floor(Math.log10(step) + 1e-9)));
  return Number(v.toFixed(digits)).toString();
}

/** s, or its longest prefix that fits in maxW px with an ellipsis. */
function fitText(s: string, fontSize: number, maxW: number): string {
  if (textWidth(s, fontSize) <= maxW) return s;
  let n = s.length - 1;
  while (n > 1 && textWidth(s.slice(0, n) + '…', fontSize) > maxW) n--;
  return s.slice(0, n) + '…';
}

function formatLogTick(v: number): string {
  if (v >= 1e6) return `${Number((v / 1e6).toPrecision(6))}M`;
  if (v >= 1e4) return `${Number((v / 1e3).toPrecision(6))}k`;
  return Number(v.toPrecision(6)).toString();
}

// ---------------------------------------------------------------------------------------------
// Loss curves

export interface LossSeries {
  name: string;
  points: { step: number; loss: number }[];
  /** Dashed line, e.g. for validation loss next to a solid training loss. */
  dashed?: boolean;
  /** Series with the same group share a colour (e.g. one run's training and validation curves). */
  group?: string;
}

export interface LossChartOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  width?: number;
  height?: number;
  logY?: boolean;
  /** A log x axis, e.g. for sequence lengths that double. */
  logX?: boolean;
}

/**
 * A line chart of loss against step, several series on one chart, with a legend.
 * Non-finite points (and, with logY or logX, points <= 0 on that axis) are skipped, break the line, and are noted
 * under the chart. Throws ArgumentError when there is no series, a series has no points, or no
 * point at all is plottable.
 *
 *     lossChart([{ name: 'train', points: [{ step: 0, loss: 5 }, { step: 100, loss: 3 }] },
 *                { name: 'val', points: [{ step: 100, loss: 3.2 }], dashed: true }], { title: 'demo' })
 */
export function lossChart(series: LossSeries[], opts: LossChartOptions = {}): string {
  if (!Array.isArray(series) || series.length === 0) {
    throw new ArgumentError('series', 'a non-empty array of { name, points }', series);
  }
  const width = checkInt('opts.width', opts.width ?? 800, 200, 20000);
  const height = checkInt('opts.height', opts.height ?? 480, 150, 20000);
  const xLabel = opts.xLabel ?? 'step';
  const yLabel = opts.yLabel ?? 'loss';
  const logY = opts.logY === true;
  const logX = opts.logX === true;

  // 1. Clean the data: sort by step, split into runs of plottable points, count what was skipped.
  interface Prepared { name: string; colour: string; dashed: boolean; segments: { step: number; loss: number }[][]; skipped: number }
  const groups = new Map<string, number>();
  const prepared: Prepared[] = series.map((s, si) => {
    if (s === null || typeof s !== 'object' || typeof s.name !== 'string') {
      throw new ArgumentError(`series[${si}].name`, 'a string', s?.name);
    }
    if (!Array.isArray(s.points) || s.points.length === 0) {
      throw new ArgumentError(`series[${si}].points`, `a non-empty array of { step, loss } (series "${s.name}")`, s.points);
    }
    const key = s.group ?? s.name;
    if (!groups.has(key)) groups.set(key, groups.size);
    const colour = PALETTE[groups.get(key)! % PALETTE.length];
    const pts = s.points.map((p, i) => ({ step: p?.step, loss: p?.loss, i }));
    pts.sort((a, b) => (Number.isFinite(a.step) && Number.isFinite(b.step) ? a.step - b.step : 0) || a.i - b.i);
    const segments: { step: number; loss: number }[][] = [];
    let current: { step: number; loss: number }[] = [];
    let skipped = 0;
    for (const p of pts) {
      const ok = typeof p.step === 'number' && typeof p.loss === 'number' && Number.isFinite(p.step) &&
        Number.isFinite(p.loss) && (!logY || p.loss > 0) && (!logX || p.step > 0);
      if (ok) {
        current.push({ step: p.step, loss: p.loss });
      } else {
        skipped++;
        if (current.length > 0) segments.push(current);
        current = [];
      }
    }
    if (current.length > 0) segments.push(current);
    return { name: s.name, colour, dashed: s.dashed === true, segments, skipped };
  });

  let xMin = Infinity, xMax = -Infinity, yMin = Infinity, yMax = -Infinity;
  let integerSteps = true;
  for (const s of prepared) {
    for (const seg of s.segments) {
      for (const p of seg) {
        integerSteps &&= Number.isInteger(p.step);
        xMin = Math.min(xMin, p.step); xMax = Math.max(xMax, p.step);
        yMin = Math.min(yMin, p.loss); yMax = Math.max(yMax, p.loss);
      }
    }
  }
  if (xMin > xMax) {
    const what = logY || logX ? 'finite, positive (log axes)' : 'finite';
    throw new ArgumentError('series', `at least one point with ${what} step and loss`, 'none');
  }

  // 2. Axes. A single step or a single loss value still needs a range to draw on.
  if (xMin === xMax) {
    if (logX) { xMin /= 2; xMax *= 2; } else { xMin -= 1; xMax += 1; }
  }
  let yTicks: number[];
  let yStep = 1;
  if (logY) {
    if (yMin === yMax) { yMin /= 1.5; yMax *= 1.5; }
    yTicks = logTicks(yMin, yMax);
  } else {
    if (yMin === yMax) { const pad = Math.abs(yMin) * 0.1 || 1; yMin -= pad; yMax += pad; }
    ({ ticks: yTicks, step: yStep } = niceTicks(yMin, yMax, Math.max(3, Math.round(height / 70))));
  }
  const yMaxAbs = Math.max(...yTicks.map(Math.abs));
  const yLabels = yTicks.map((v) => (logY ? formatLogTick(v) : formatTick(v, yStep, yMaxAbs)));

  // 3. Layout: title on top, y tick labels and the y label on the left, legend on the right,
  // x tick labels, x label and the notes about skipped points below.
  const notes: string[] = [];
  const withSkips = prepared.filter((s) => s.skipped > 0);
  for (const s of withSkips.slice(0, 3)) {
    const what = logY || logX ? 'non-finite or non-positive' : 'non-finite';
    notes.push(`${s.skipped} ${what} point${s.skipped === 1 ? '' : 's'} skipped in "${s.name}"`);
  }
  if (withSkips.length > 3) notes.push(`and skipped points in ${withSkips.length - 3} more series`);

  const tickSize = 12, labelSize = 13, titleSize = 16, legendSize = 12, noteSize = 11;
  const maxLegendW = width * 0.32;
  const legendNames = prepared.map((s) => fitText(s.name, legendSize, maxLegendW));
  const legendW = 34 + Math.max(...legendNames.map((n) => textWidth(n, legendSize))) + 16;
  const top = opts.title ? 48 : 20;
  const left = 18 + labelSize + 10 + Math.max(...yLabels.map((s) => textWidth(s, tickSize))) + 8;
  const right = legendW + 24;
  const bottom = 8 + tickSize + 12 + labelSize + 12 + notes.length * (noteSize + 5);
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  if (plotW < 80 || plotH < 60) {
    throw new ArgumentError('opts.width/height', 'room for a plot area after the labels and legend', `${width}x${height}`);
  }

  const x0 = left, y0 = top, x1 = left + plotW, y1 = top + plotH;
  const { ticks: xTicks, step: xStep } = logX
    ? { ticks: logTicks(xMin, xMax), step: 1 }
    : niceTicks(xMin, xMax, Math.max(2, Math.round(plotW / 100)), integerSteps ? 1 : 0);
  const xLo = xTicks[0], xHi = xTicks[xTicks.length - 1];
  const yLo = yTicks[0], yHi = yTicks[yTicks.length - 1];
  const px = logX
    ? (v: number) => x0 + ((Math.log10(v) - Math.log10(xLo)) / (Math.log10(xHi) - Math.log10(xLo))) * plotW
    : (v: number) => x0 + ((v - xLo) / (xHi - xLo)) * plotW;
  const py = logY
    ? (v: number) => y1 - ((Math.log10(v) - Math.log10(yLo)) / (Math.log10(yHi) - Math.log10(yLo))) * plotH
    : (v: number) => y1 - ((v - yLo) / (yHi - yLo)) * plotH;

  const out: string[] = [svgOpen(width, height)];
  if (opts.title) {
    // Centred over the plot area, but moved left if it would run off the right edge.
    const half = textWidth(opts.title, titleSize) * 0.55; // bold is about 10% wider
    const cx = Math.max(half + 10, Math.min(x0 + plotW / 2, width - half - 10));
    out.push(text(cx, 30, opts.title, { size: titleSize, anchor: 'middle', weight: 'bold', cls: 'title' }));
  }

  // 4. Grid and axes.
  out.push('<g class="grid" stroke="' + GRID + '" stroke-width="1">');
  for (const v of xTicks) out.push(`<line x1="${r2(px(v))}" y1="${y0}" x2="${r2(px(v))}" y2="${y1}"/>`);
  for (const v of yTicks) out.push(`<line x1="${x0}" y1="${r2(py(v))}" x2="${x1}" y2="${r2(py(v))}"/>`);
  out.push('</g>');
  out.push(`<rect class="frame" x="${x0}" y="${y0}" width="${plotW}" height="${plotH}" fill="none" stroke="#999999" stroke-width="1"/>`);
  const xMaxAbs = Math.max(...xTicks.map(Math.abs));
  out.push(`<g class="x-ticks">`);
  xTicks.forEach((v) => {
    out.push(`<line x1="${r2(px(v))}" y1="${y1}" x2="${r2(px(v))}" y2="${y1 + 5}" stroke="${INK}"/>`);
    out.push(text(px(v), y1 + 8 + tickSize, logX ? formatLogTick(v) : formatTick(v, xStep, xMaxAbs), { size: tickSize, anchor: 'middle', fill: MUTED }));
  });
  out.push('</g>');
  out.push(`<g class="y-ticks">`);
  yTicks.forEach((v, i) => {
    out.push(`<line x1="${x0 - 5}" y1="${r2(py(v))}" x2="${x0}" y2="${r2(py(v))}" stroke="${INK}"/>`);
    out.push(text(x0 - 8, py(v) + tickSize * 0.35, yLabels[i], { size: tickSize, anchor: 'end', fill: MUTED, cls: 'y-tick' }));
  });
  out.push('</g>');
  out.push(text(x0 + plotW / 2, y1 + 8 + tickSize + 12 + labelSize, xLabel, { size: labelSize, anchor: 'middle', cls: 'x-label' }));
  out.push(text(18 + labelSize * 0.8, y0 + plotH / 2, yLabel, { size: labelSize, anchor: 'middle', rotate: true, cls: 'y-label' }));

  // 5. One path per series (a gap at each skipped point); isolated points get a dot, since a
  // one-point path draws nothing.
  out.push('<g class="series" fill="none" stroke-width="2" stroke-linejoin="round" stroke-linecap="round">');
  prepared.forEach((s, si) => {
    const d = s.segments
      .map((seg) => seg.map((p, i) => `${i === 0 ? 'M' : 'L'}${r2(px(p.step))} ${r2(py(p.loss))}`).join(' '))
      .join(' ');
    const dash = s.dashed ? ' stroke-dasharray="7 5"' : '';
    out.push(`<path class="series-line" data-series="${si}" d="${d}" stroke="${s.colour}"${dash}/>`);
    for (const seg of s.segments) {
      if (seg.length === 1) out.push(`<circle cx="${r2(px(seg[0].step))}" cy="${r2(py(seg[0].loss))}" r="3.5" fill="${s.colour}" stroke="none"/>`);
    }
  });
  out.push('</g>');

  // 6. Legend, to the right of the plot area.
  const lx = x1 + 20, ly = y0 + 4;
  const rowH = legendSize + 10;
  out.push(`<g class="legend">`);
  out.push(`<rect x="${lx}" y="${ly}" width="${r2(legendW)}" height="${prepared.length * rowH + 10}" fill="#ffffff" stroke="#cccccc" rx="3"/>`);
  prepared.forEach((s, si) => {
    const cy = ly + 5 + si * rowH + rowH / 2;
    const dash = s.dashed ? ' stroke-dasharray="7 5"' : '';
    out.push(`<g class="legend-entry">`);
    if (s.name !== legendNames[si]) out.push(`<title>${escapeXml(s.name)}</title>`);
    out.push(`<line x1="${lx + 8}" y1="${r2(cy)}" x2="${lx + 30}" y2="${r2(cy)}" stroke="${s.colour}" stroke-width="2.5"${dash}/>`);
    out.push(text(lx + 36, cy + legendSize * 0.35, legendNames[si], { size: legendSize, cls: 'legend-label' }));
    out.push('</g>');
  });
  out.push('</g>');

  // 7. Notes about skipped points.
  notes.forEach((n, i) => {
    const y = y1 + 8 + tickSize + 12 + labelSize + 12 + (i + 1) * (noteSize + 5) - 4;
    out.push(text(x0, y, fitText(`note: ${n}`, noteSize, width - x0 - 10), { size: noteSize, fill: MUTED, cls: 'note' }));
  });
  out.push('</svg>\n');
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Selection maps

export interface SelectionPanel {
  /** e.g. "layer 0 · head 1" */
  title: string;
  /** sequence length */
  T: number;
  /** rows[i]: the key positions selected for query i (each in [0, i], no repeats); length T */
  rows: ArrayLike<number>[];
  /** local window W of SPEC section 3; its cells are drawn in a lighter colour */
  window?: number;
}

export interface SelectionMapOptions {
  title?: string;
  /** Longest side drawn cell by cell; longer sequences are binned into this many bins. */
  cellLimit?: number;
  /** Panels per row (default: all in one row up to 4, else about a square grid). */
  columns?: number;
}

const SEL_COLOUR = '#0b3d91';
const WIN_COLOUR = '#E69F00';
const CAUSAL_BG = '#f2f2f2';
const WIN_OPACITY = 0.55;

/** Shade of a binned cell. A bin with one selected pair in hundreds would vanish at its true
 * shade; a floor of 0.2 keeps every selection visible while full bins stay clearly darker. */
function binnedOpacity(fraction: number): number {
  return r2(0.2 + 0.8 * fraction);
}

/**
 * A grid of heatmaps, one per panel (layer / KV head): query i down, key position j across.
 * Selected cells are dark, window cells light, and the causal upper triangle (j > i) is blank.
 * When T > cellLimit, positions are binned into cellLimit bins per axis and each bin is shaded
 * by the fraction of its causal (i, j) pairs that are selected (or in the window).
 *
 *     selectionMap([{ title: 'layer 0 · head 0', T: 3, rows: [[], [], [0]] }], { title: 'Sel_i' })
 */
export function selectionMap(maps: SelectionPanel[], opts: SelectionMapOptions = {}): string {
  if (!Array.isArray(maps) || maps.length === 0) {
    throw new ArgumentError('maps', 'a non-empty array of { title, T, rows }', maps);
  }
  const cellLimit = checkInt('opts.cellLimit', opts.cellLimit ?? 256, 1);
  const n = maps.length;
  const columns = checkInt('opts.columns', opts.columns ?? (n <= 4 ? n : Math.ceil(Math.sqrt(n))), 1);
  const cols = Math.min(columns, n);
  const rowsOfPanels = Math.ceil(n / cols);

  // Panel geometry: a square heatmap with its title above and tick labels on two sides.
  const S = n === 1 ? 400 : n <= 4 ? 280 : 210;
  const tickSize = 10, titleSize = 13, labelSize = 12;
  const padL = 58, padT = 30, padB = 52, padR = 18;
  const cellW = padL + S + padR, cellH = padT + S + padB;

  const panels = maps.map((m, mi) => binPanel(m, mi, cellLimit));
  const binned = panels.find((p) => p.N < p.T);

  // Legend: what dark and light mean; when a panel is binned, a second line with the shade scale.
  const legend: { colour: string; opacity: number; label: string }[] = [{ colour: SEL_COLOUR, opacity: 1, label: 'selected key' }];
  if (panels.some((p) => p.hasWindow)) legend.push({ colour: WIN_COLOUR, opacity: WIN_OPACITY, label: 'local window' });
  legend.push({ colour: CAUSAL_BG, opacity: 1, label: 'causal, not attended' });
  const binNote = binned ? `fraction of the bin selected (T = ${binned.T} drawn as ${binned.N} × ${binned.N} bins)` : '';
  const legendW = Math.max(
    legend.reduce((w, e) => w + 20 + textWidth(e.label, 12) + 18, 0),
    binned ? 142 + textWidth(binNote, 12) : 0,
  );
  const ly = (opts.title ? 40 : 12) + 10;
  const headerH = ly + (binned ? 50 : 28);
  const width = Math.ceil(Math.max(cols * cellW + 20, legendW + 40, 360));
  const height = headerH + rowsOfPanels * cellH + 12;

  const out: string[] = [svgOpen(width, height)];
  if (opts.title) out.push(text(width / 2, 28, opts.title, { size: 16, anchor: 'middle', weight: 'bold', cls: 'title' }));
  out.push('<g class="legend">');
  let lx = 20;
  for (const e of legend) {
    const op = e.opacity < 1 ? ` fill-opacity="${e.opacity}"` : '';
    out.push(`<rect x="${lx}" y="${ly}" width="14" height="14" fill="${e.colour}"${op} stroke="#888888" stroke-width="0.5"/>`);
    out.push(text(lx + 20, ly + 11, e.label, { size: 12 }));
    lx += 20 + textWidth(e.label, 12) + 18;
  }
  if (binned) {
    // The shade scale first (fixed width), then the note, so no text width estimate sits between.
    const y = ly + 22;
    out.push(text(20, y + 11, '0', { size: 11, fill: MUTED }));
    let x = 31;
    for (const f of [0.05, 0.25, 0.5, 0.75, 1]) {
      out.push(`<rect x="${x}" y="${y}" width="18" height="14" fill="${SEL_COLOUR}" fill-opacity="${binnedOpacity(f)}" stroke="#888888" stroke-width="0.5"/>`);
      x += 20;
    }
    out.push(text(x + 2, y + 11, '1', { size: 11, fill: MUTED }));
    out.push(text(x + 18, y + 11, binNote, { size: 12, fill: MUTED, cls: 'note' }));
  }
  out.push('</g>');

  panels.forEach((p, mi) => {
    const col = mi % cols, row = Math.floor(mi / cols);
    const gx = 10 + col * cellW + padL;
    const gy = headerH + row * cellH + padT;
    const c = S / p.N; // px per cell (or bin)
    out.push(`<g class="panel" data-panel="${mi}">`);
    out.push(text(gx + S / 2, gy - 10, maps[mi].title, { size: titleSize, anchor: 'middle', weight: 'bold', cls: 'panel-title' }));

    // The causal lower triangle (diagonal included) as a staircase, so the blank upper triangle
    // reads as "not allowed" rather than "not selected".
    const stair: string[] = [`M${gx} ${gy}`];
    for (let b = 0; b < p.N; b++) stair.push(`H${r2(gx + (b + 1) * c)} V${r2(gy + (b + 1) * c)}`);
    stair.push(`H${gx} Z`);
    out.push(`<path class="causal" d="${stair.join(' ')}" fill="${CAUSAL_BG}"/>`);

    // Cells in cell units: rect x = key (bin) index, y = query (bin) index, height = rows in a
    // vertical run of equal shade. Selections persist down the rows (SPEC section 3's
    // monotonicity), so vertical runs keep the rect count near the number of distinct keys.
    const t = `translate(${gx} ${gy}) scale(${r2(c * 1e4) / 1e4})`;
    out.push(`<g class="window-cells" transform="${t}" fill="${WIN_COLOUR}" shape-rendering="crispEdges">`);
    pushRuns(out, p.win, p.N, 'win', (level) => r2(WIN_OPACITY * level / LEVELS));
    out.push('</g>');
    out.push(`<g class="selected-cells" transform="${t}" fill="${SEL_COLOUR}" shape-rendering="crispEdges">`);
    pushRuns(out, p.sel, p.N, 'sel', (level) => (p.N < p.T ? binnedOpacity(level / LEVELS) : 1));
    out.push('</g>');
    out.push(`<rect class="frame" x="${gx}" y="${gy}" width="${S}" height="${S}" fill="none" stroke="#999999" stroke-width="1"/>`);

    // Ticks in positions (not bins): position v sits at the middle of its cell.
    const { ticks, step } = p.T > 1 ? niceTicks(0, p.T - 1, 4) : { ticks: [0], step: 1 };
    const pos = (v: number) => ((v + 0.5) / p.T) * S;
    for (const v of ticks) {
      if (v > p.T - 1) continue;
      const label = formatTick(v, step, ticks[ticks.length - 1]);
      out.push(`<line x1="${r2(gx + pos(v))}" y1="${gy + S}" x2="${r2(gx + pos(v))}" y2="${gy + S + 4}" stroke="${INK}"/>`);
      out.push(text(gx + pos(v), gy + S + 6 + tickSize, label, { size: tickSize, anchor: 'middle', fill: MUTED }));
      out.push(`<line x1="${gx - 4}" y1="${r2(gy + pos(v))}" x2="${gx}" y2="${r2(gy + pos(v))}" stroke="${INK}"/>`);
      out.push(text(gx - 6, gy + pos(v) + tickSize * 0.35, label, { size: tickSize, anchor: 'end', fill: MUTED }));
    }
    // Axis names on the outer panels only: the bottom one of each column, and the first column.
    if (mi + cols >= n) {
      out.push(text(gx + S / 2, gy + S + 6 + tickSize + 8 + labelSize, 'key position j', { size: labelSize, anchor: 'middle', cls: 'x-label' }));
    }
    if (col === 0) out.push(text(gx - 40, gy + S / 2, 'query i', { size: labelSize, anchor: 'middle', rotate: true, cls: 'y-label' }));
    out.push('</g>');
  });
  out.push('</svg>\n');
  return out.join('\n');
}

// Shade levels per bin: 0 = empty, LEVELS = every causal pair of the bin.
const LEVELS = 20;

interface BinnedPanel {
  T: number;
  N: number; // cells per side: T, or cellLimit when binned
  sel: Uint8Array; // (N, N) shade level of selected pairs
  win: Uint8Array; // (N, N) shade level of window pairs
  hasWindow: boolean;
}

/** Checks one panel and counts, per (query bin, key bin), the selected and window pairs. */
function binPanel(m: SelectionPanel, mi: number, cellLimit: number): BinnedPanel {
  const name = `maps[${mi}]`;
  if (m === null || typeof m !== 'object') throw new ArgumentError(name, 'an object { title, T, rows }', m);
  if (typeof m.title !== 'string') throw new ArgumentError(`${name}.title`, 'a string', m.title);
  const T = checkInt(`${name}.T`, m.T, 1);
  const W = checkInt(`${name}.window`, m.window ?? 0, 0);
  if (!Array.isArray(m.rows) || m.rows.length !== T) {
    throw new ShapeError(`${name}.rows`, `an array of T = ${T} rows (one per query)`, Array.isArray(m.rows) ? `length ${m.rows.length}` : String(m.rows));
  }
  const N = Math.min(T, cellLimit);
  const binOf = (p: number) => Math.floor((p * N) / T);
  const start = (b: number) => Math.ceil((b * T) / N); // first position of bin b
  const selCount = new Float64Array(N * N);
  const winCount = new Float64Array(N * N);
  const causal = new Float64Array(N * N);
  const seen = new Int32Array(T).fill(-1);
  for (let i = 0; i < T; i++) {
    const bi = binOf(i);
    const row = m.rows[i];
    if (row === null || typeof row !== 'object' || typeof row.length !== 'number') {
      throw new ArgumentError(`${name}.rows[${i}]`, 'an array of key positions', row);
    }
    for (let r = 0; r < row.length; r++) {
      const j = row[r];
      if (!Number.isInteger(j) || j < 0 || j > i) {
        throw new ArgumentError(`${name}.rows[${i}]`, `integer key positions in [0, ${i}] (causal)`, j);
      }
      if (seen[j] === i) throw new ArgumentError(`${name}.rows[${i}]`, 'distinct key positions', j);
      seen[j] = i;
      selCount[bi * N + binOf(j)]++;
    }
    // Causal pairs and window pairs of row i, split over the key bins they fall in.
    const lo = W > 0 ? Math.max(0, i - W + 1) : i + 1;
    for (let bj = 0; bj <= bi; bj++) {
      const s = start(bj), e = Math.min(i, start(bj + 1) - 1);
      if (e >= s) causal[bi * N + bj] += e - s + 1;
      const ws = Math.max(s, lo);
      if (e >= ws) winCount[bi * N + bj] += e - ws + 1;
    }
  }
  const sel = new Uint8Array(N * N);
  const win = new Uint8Array(N * N);
  for (let c = 0; c < N * N; c++) {
    if (causal[c] === 0) continue;
    // ceil: a bin with any selected pair never rounds to empty.
    if (selCount[c] > 0) sel[c] = Math.max(1, Math.ceil((selCount[c] / causal[c]) * LEVELS - 1e-9));
    if (winCount[c] > 0) win[c] = Math.max(1, Math.ceil((winCount[c] / causal[c]) * LEVELS - 1e-9));
  }
  return { T, N, sel, win, hasWindow: W > 0 };
}

/** One rect per vertical run of equal, non-zero shade level in an (N, N) grid, in cell units. */
function pushRuns(out: string[], grid: Uint8Array, N: number, cls: string, opacity: (level: number) => number): void {
  for (let j = 0; j < N; j++) {
    let i = 0;
    while (i < N) {
      const level = grid[i * N + j];
      if (level === 0) { i++; continue; }
      let e = i + 1;
      while (e < N && grid[e * N + j] === level) e++;
      const a = opacity(level);
      const op = a < 1 ? ` fill-opacity="${a}"` : '';
      out.push(`<rect class="${cls}" x="${j}" y="${i}" width="1" height="${e - i}"${op}/>`);
      i = e;
    }
  }
}
