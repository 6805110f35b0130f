// Plot output for `sparsek plot` and `sparsek demo` (SPEC.md sections 7 and 8): the charts of
// svg.ts, and writePlot, which writes one as .svg text or a .png image, chosen by the extension.
// Not here: reading run folders or metrics (the CLI does that and passes the series in).
//
// Like checkpoints, plots are never half-written: the bytes go to a temporary name that is then
// renamed over the target (atomic on one filesystem).

import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, extname } from 'node:path';
import { ArgumentError } from '../core/errors.js';
import { svgToPng } from './png.js';

export { lossChart, selectionMap, escapeXml, niceTicks, logTicks } from './svg.js';
export type { LossSeries, LossChartOptions, SelectionPanel, SelectionMapOptions } from './svg.js';
export { svgToPng } from './png.js';

/**
 * Writes a chart to `path`: `.svg` as the SVG text, `.png` rendered by resvg (`scale` multiplies
 * its size, default 1). Creates the parent folder if needed.
 *
 *     writePlot('runs/demo/loss.png', lossChart(series, { title: 'demo' }))
 */
export function writePlot(path: string, svg: string, opts: { scale?: number } = {}): void {
  if (typeof path !== 'string' || path.length === 0) throw new ArgumentError('path', 'a file path ending in .svg or .png', path);
  if (typeof svg !== 'string' || svg.length === 0) throw new ArgumentError('svg', 'a non-empty SVG string', svg);
  const ext = extname(path).toLowerCase();
  let bytes: string | Buffer;
  if (ext === '.svg') bytes = svg;
  else if (ext === '.png') bytes = svgToPng(svg, opts);
  else throw new ArgumentError('path', 'a file name ending in .svg or .png', path);

  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, bytes);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
