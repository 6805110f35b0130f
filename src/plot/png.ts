// SVG to PNG through resvg (@resvg/resvg-js), for `sparsek plot --out FILE.png` (SPEC.md section 7).
// Not here: drawing (svg.ts) or writing files (index.ts).
//
// resvg draws text only with fonts it can load. It scans the system font folders, but maps the
// generic 'sans-serif' to Arial unless told otherwise, so we name a sans family we can find on
// disk. With no font at all the PNG is still written, without text, and we say so once on stderr
// (on Debian/Ubuntu CI: apt-get install fonts-dejavu-core).

import { existsSync } from 'node:fs';
import { Resvg, type ResvgRenderOptions } from '@resvg/resvg-js';
import { ArgumentError } from '../core/errors.js';

// Regular face first; the bold face serves the titles. Paths of the usual Linux, macOS and
// Windows installs.
const FONT_CANDIDATES: { family: string; files: string[] }[] = [
  {
    family: 'DejaVu Sans',
    files: [
      '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf', '/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf',
      '/usr/share/fonts/TTF/DejaVuSans.ttf', '/usr/share/fonts/TTF/DejaVuSans-Bold.ttf',
      '/usr/share/fonts/dejavu/DejaVuSans.ttf', '/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf',
      '/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf', '/usr/share/fonts/dejavu-sans-fonts/DejaVuSans-Bold.ttf',
    ],
  },
  {
    family: 'Liberation Sans',
    files: [
      '/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf', '/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf',
      '/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf', '/usr/share/fonts/truetype/liberation2/LiberationSans-Bold.ttf',
      '/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf', '/usr/share/fonts/liberation-sans/LiberationSans-Bold.ttf',
    ],
  },
  {
    family: 'Noto Sans',
    files: ['/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf', '/usr/share/fonts/truetype/noto/NotoSans-Bold.ttf'],
  },
  {
    family: 'Arial',
    files: [
      '/System/Library/Fonts/Supplemental/Arial.ttf', '/System/Library/Fonts/Supplemental/Arial Bold.ttf',
      '/Library/Fonts/Arial.ttf', 'C:\\Windows\\Fonts\\arial.ttf', 'C:\\Windows\\Fonts\\arialbd.ttf',
    ],
  },
];

let fontOptions: ResvgRenderOptions['font'] | undefined;

/** The resvg font options, found once per process. */
function fonts(): ResvgRenderOptions['font'] {
  if (fontOptions) return fontOptions;
  const found = FONT_CANDIDATES.map((c) => ({ family: c.family, files: c.files.filter((f) => existsSync(f)) }))
    .find((c) => c.files.length > 0);
  fontOptions = found
    ? { loadSystemFonts: true, fontFiles: found.files, sansSerifFamily: found.family, defaultFontFamily: found.family }
    : { loadSystemFonts: true };
  if (!found && !canDrawText(fontOptions)) {
    process.stderr.write(
      'sparsek plot: no font found, so PNG charts will have no text ' +
        '(install one, e.g. apt-get install fonts-dejavu-core; SVG output is unaffected)\n',
    );
  }
  return fontOptions;
}

/** Renders one glyph and looks for ink: the only sure way to know resvg found a usable font. */
function canDrawText(font: ResvgRenderOptions['font']): boolean {
  const probe = '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30"><text x="5" y="22" font-size="20" font-family="sans-serif">H</text></svg>';
  const pixels = new Resvg(probe, { font }).render().pixels;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) return true;
  return false;
}

/**
 * Rasterises an SVG string to PNG bytes on a white background; `scale` multiplies the SVG's
 * width and height (default 1).
 *
 *     writeFileSync('loss.png', svgToPng(lossChart(series), { scale: 2 }))
 */
export function svgToPng(svg: string, opts: { scale?: number } = {}): Buffer {
  if (typeof svg !== 'string' || svg.length === 0) throw new ArgumentError('svg', 'a non-empty SVG string', svg);
  const scale = opts.scale ?? 1;
  if (typeof scale !== 'number' || !(scale > 0 && scale <= 16)) {
    throw new ArgumentError('opts.scale', 'a number in (0, 16]', scale);
  }
  let resvg: Resvg;
  try {
    resvg = new Resvg(svg, {
      fitTo: { mode: 'zoom', value: scale },
      background: '#ffffff',
      font: fonts(),
      shapeRendering: 2, // geometricPrecision: anti-aliased lines; the heatmap cells opt into crispEdges
      textRendering: 1,
      logLevel: 'off',
    });
  } catch (e) {
    throw new ArgumentError('svg', 'an SVG document resvg can parse', (e as Error).message);
  }
  return resvg.render().asPng();
}
