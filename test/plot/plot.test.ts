// Tests for the charts of src/plot (SPEC.md section 7, `sparsek plot`): the SVG is well-formed XML,
// draws exactly the data it was given (checked by inverting the axis ticks back to data values),
// escapes text, bins long sequences into a bounded number of cells, and the PNG has the expected
// signature and size. The XML reader below is written here, independent of the code under test.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { lossChart, selectionMap, svgToPng, writePlot, niceTicks, logTicks } from '../../src/plot/index.js';
import type { LossSeries } from '../../src/plot/index.js';
import { ArgumentError, ShapeError } from '../../src/core/errors.js';

// ---------------------------------------------------------------------------------------------
// A minimal XML reader: elements, attributes, text; throws on anything not well-formed.

interface El { name: string; attrs: Record<string, string>; children: El[]; text: string }

const ENTITY = /^&(amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);/;

function decode(raw: string, where: string): string {
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i];
    if (ch === '<') throw new Error(`raw '<' in ${where}`);
    if (ch !== '&') { out += ch; continue; }
    const m = ENTITY.exec(raw.slice(i));
    if (!m) throw new Error(`bare '&' in ${where}: ${raw.slice(i, i + 12)}`);
    const e = m[1];
    out += e === 'amp' ? '&' : e === 'lt' ? '<' : e === 'gt' ? '>' : e === 'quot' ? '"' : e === 'apos' ? "'"
      : String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    i += m[0].length - 1;
  }
  return out;
}

function parseXml(src: string): El {
  let i = 0;
  const stack: El[] = [];
  let root: El | undefined;
  const skipSpace = () => { while (i < src.length && /\s/.test(src[i])) i++; };
  skipSpace();
  while (i < src.length) {
    if (src.startsWith('<?', i)) { const e = src.indexOf('?>', i); if (e < 0) throw new Error('open <?'); i = e + 2; continue; }
    if (src.startsWith('<!--', i)) { const e = src.indexOf('-->', i); if (e < 0) throw new Error('open comment'); i = e + 3; continue; }
    if (src.startsWith('</', i)) {
      const m = /^<\/([A-Za-z_][\w.:-]*)\s*>/.exec(src.slice(i));
      if (!m) throw new Error(`bad closing tag at ${i}`);
      const top = stack.pop();
      if (!top || top.name !== m[1]) throw new Error(`</${m[1]}> closes <${top?.name}> at ${i}`);
      i += m[0].length;
      if (stack.length === 0) { skipSpace(); if (i !== src.length) throw new Error('content after the root element'); }
      continue;
    }
    if (src[i] === '<') {
      const m = /^<([A-Za-z_][\w.:-]*)/.exec(src.slice(i));
      if (!m) throw new Error(`bad tag at ${i}`);
      if (root && stack.length === 0) throw new Error('second root element');
      const el: El = { name: m[1], attrs: {}, children: [], text: '' };
      if (stack.length > 0) stack[stack.length - 1].children.push(el);
      root ??= el;
      i += m[0].length;
      let selfClosing = false;
      for (;;) {
        const ws = /^\s*/.exec(src.slice(i))![0].length;
        i += ws;
        if (src.startsWith('/>', i)) { i += 2; selfClosing = true; break; }
        if (src[i] === '>') { i += 1; stack.push(el); break; }
        if (ws === 0) throw new Error(`missing space before attribute at ${i}`);
        const a = /^([A-Za-z_][\w.:-]*)\s*=\s*("([^"]*)"|'([^']*)')/.exec(src.slice(i));
        if (!a) throw new Error(`bad attribute at ${i}: ${src.slice(i, i + 30)}`);
        if (a[1] in el.attrs) throw new Error(`duplicate attribute ${a[1]}`);
        el.attrs[a[1]] = decode(a[3] ?? a[4], `attribute ${a[1]}`);
        i += a[0].length;
      }
      if (selfClosing && stack.length === 0) { skipSpace(); if (i !== src.length) throw new Error('content after the root element'); }
      continue;
    }
    const e = src.indexOf('<', i);
    const raw = src.slice(i, e < 0 ? src.length : e);
    if (stack.length === 0) throw new Error(`text outside the root: ${raw.slice(0, 20)}`);
    stack[stack.length - 1].text += decode(raw, `text of <${stack[stack.length - 1].name}>`);
    i += raw.length;
  }
  if (stack.length !== 0) throw new Error(`unclosed <${stack[stack.length - 1].name}>`);
  if (!root) throw new Error('no root element');
  return root;
}

function all(el: El, pred: (e: El) => boolean, acc: El[] = []): El[] {
  if (pred(el)) acc.push(el);
  for (const c of el.children) all(c, pred, acc);
  return acc;
}
const byClass = (root: El, cls: string) => all(root, (e) => (e.attrs.class ?? '').split(/\s+/).includes(cls));
const byName = (root: El, name: string) => all(root, (e) => e.name === name);

test('the XML reader itself rejects what is not well-formed', () => {
  assert.throws(() => parseXml('<a><b></a></b>'));
  assert.throws(() => parseXml('<a x="1 & 2"/>'));
  assert.throws(() => parseXml('<a>1 < 2</a>'));
  assert.throws(() => parseXml('<a>'));
  assert.throws(() => parseXml('<a/><b/>'));
  assert.equal(parseXml('<a><b k="&lt;&amp;">x &gt; y</b><c/></a>').children[0].text, 'x > y');
  assert.equal(parseXml('<a><b k="&lt;&amp;">x</b><c/></a>').children.length, 2);
});

// ---------------------------------------------------------------------------------------------
// Loss chart

/** Path "M x y L x y ... M x y ..." as segments of [x, y] vertices. */
function pathSegments(d: string): [number, number][][] {
  const segs: [number, number][][] = [];
  for (const m of d.matchAll(/([ML])\s*(-?[\d.]+)[ ,](-?[\d.]+)/g)) {
    if (m[1] === 'M') segs.push([]);
    segs[segs.length - 1].push([Number(m[2]), Number(m[3])]);
  }
  return segs;
}

/** The axis as drawn: tick values from the labels, pixel positions from the tick marks. */
function axis(root: El, cls: 'x-ticks' | 'y-ticks'): { values: number[]; px: number[] } {
  const g = byClass(root, cls)[0];
  const labels = byName(g, 'text').map((t) => t.text);
  const values = labels.map((s) => (s.endsWith('k') ? Number(s.slice(0, -1)) * 1e3 : s.endsWith('M') ? Number(s.slice(0, -1)) * 1e6 : Number(s)));
  const px = byName(g, 'line').map((l) => Number(cls === 'x-ticks' ? l.attrs.x1 : l.attrs.y1));
  assert.equal(values.length, px.length);
  return { values, px };
}

/** Maps a pixel back to data through the first and last ticks (linear, or log10 when log). */
function invert(ax: { values: number[]; px: number[] }, p: number, log = false): number {
  const f = (v: number) => (log ? Math.log10(v) : v);
  const a = 0, b = ax.values.length - 1;
  const t = (p - ax.px[a]) / (ax.px[b] - ax.px[a]);
  const v = f(ax.values[a]) + t * (f(ax.values[b]) - f(ax.values[a]));
  return log ? 10 ** v : v;
}

function isOneTwoFive(step: number): boolean {
  const m = step / 10 ** Math.floor(Math.log10(step) + 1e-9);
  return [1, 2, 5, 10].some((c) => Math.abs(m - c) < 1e-6);
}

const curve = (n: number, every: number, a: number, b: number): { step: number; loss: number }[] =>
  Array.from({ length: n }, (_, i) => ({ step: i * every, loss: b + (a - b) * Math.exp(-i / 9) + 0.05 * Math.sin(i * 1.7) }));

describe('lossChart', () => {
  const series: LossSeries[] = [
    { name: 'sparsek (train)', group: 'sparsek', points: curve(113, 7, 6.9, 3.1) },
    { name: 'sparsek (val)', group: 'sparsek', dashed: true, points: curve(7, 120, 6.5, 3.4) },
    { name: 'window (train)', points: curve(113, 7, 6.8, 3.6) },
  ];

  test('is well-formed, sized as asked, one path per series, legend = names', () => {
    const svg = lossChart(series, { title: 'loss', width: 640, height: 400 });
    const root = parseXml(svg);
    assert.equal(root.name, 'svg');
    assert.equal(root.attrs.width, '640');
    assert.equal(root.attrs.height, '400');
    const paths = byClass(root, 'series-line');
    assert.equal(paths.length, series.length);
    assert.deepEqual(byClass(root, 'legend-label').map((t) => t.text), series.map((s) => s.name));
    paths.forEach((p, i) => {
      assert.equal(pathSegments(p.attrs.d).flat().length, series[i].points.length, `vertices of series ${i}`);
      assert.equal('stroke-dasharray' in p.attrs, series[i].dashed === true);
    });
    // Same group, same colour; another group, another colour.
    assert.equal(paths[0].attrs.stroke, paths[1].attrs.stroke);
    assert.notEqual(paths[0].attrs.stroke, paths[2].attrs.stroke);
    assert.equal(byClass(root, 'title')[0].text, 'loss');
  });

  test('y ticks bracket the data, step 1-2-5, and every vertex maps back to its (step, loss)', () => {
    for (const logY of [false, true]) {
      const root = parseXml(lossChart(series, { logY }));
      const ys = axis(root, 'y-ticks');
      const xs = axis(root, 'x-ticks');
      const losses = series.flatMap((s) => s.points.map((p) => p.loss));
      assert.ok(ys.values[0] <= Math.min(...losses), `logY=${logY}: lowest tick ${ys.values[0]}`);
      assert.ok(ys.values[ys.values.length - 1] >= Math.max(...losses), `logY=${logY}: highest tick`);
      assert.ok(ys.values.length >= 3, `logY=${logY}: ${ys.values.length} ticks`);
      // The outer ticks sit on the frame's edges, so the data fills the plot area.
      const frame = byClass(root, 'frame')[0].attrs;
      const [fx, fy, fw, fh] = [frame.x, frame.y, frame.width, frame.height].map(Number);
      assert.ok(Math.abs(ys.px[0] - (fy + fh)) < 0.01 && Math.abs(ys.px[ys.px.length - 1] - fy) < 0.01, 'y ticks span the frame');
      assert.ok(Math.abs(xs.px[0] - fx) < 0.01 && Math.abs(xs.px[xs.px.length - 1] - (fx + fw)) < 0.01, 'x ticks span the frame');
      if (!logY) {
        const steps = ys.values.slice(1).map((v, i) => v - ys.values[i]);
        for (const s of steps) assert.ok(Math.abs(s - steps[0]) < 1e-9 && isOneTwoFive(s), `y step ${s}`);
      }
      const paths = byClass(root, 'series-line');
      paths.forEach((p, si) => {
        const verts = pathSegments(p.attrs.d).flat();
        verts.forEach(([x, y], k) => {
          const want = series[si].points[k];
          // Coordinates are rounded to 0.01 px: a few thousandths in data units at most.
          assert.ok(Math.abs(invert(xs, x) - want.step) < 0.05, `x of ${si}/${k}: ${invert(xs, x)} vs ${want.step}`);
          assert.ok(Math.abs(invert(ys, y, logY) - want.loss) < 2e-3, `y of ${si}/${k}: ${invert(ys, y, logY)} vs ${want.loss}`);
        });
      });
    }
  });

  test('logX: x ticks bracket the data on a log scale, and every vertex maps back', () => {
    const lengths = [{ name: 'a', points: [4096, 16384, 65536, 131072].map((T, i) => ({ step: T, loss: 0.3 * 2 ** i })) }];
    const root = parseXml(lossChart(lengths, { logX: true, logY: true }));
    const xs = axis(root, 'x-ticks'), ys = axis(root, 'y-ticks');
    assert.ok(xs.values[0] <= 4096 && xs.values[xs.values.length - 1] >= 131072, xs.values.join(' '));
    assert.ok(byName(byClass(root, 'x-ticks')[0], 'text').some((t) => /^\d+k$/.test(t.text)), 'thousands as k');
    const verts = pathSegments(byClass(root, 'series-line')[0].attrs.d).flat();
    verts.forEach(([x, y], k) => {
      const want = lengths[0].points[k];
      assert.ok(Math.abs(invert(xs, x, true) / want.step - 1) < 1e-3, `x of ${k}: ${invert(xs, x, true)} vs ${want.step}`);
      assert.ok(Math.abs(invert(ys, y, true) / want.loss - 1) < 1e-3, `y of ${k}`);
    });
    // A step of 0 cannot be drawn on a log axis: skipped and noted.
    const zero = parseXml(lossChart([{ name: 'z', points: [{ step: 0, loss: 1 }, { step: 10, loss: 2 }, { step: 100, loss: 3 }] }], { logX: true }));
    assert.deepEqual(pathSegments(byClass(zero, 'series-line')[0].attrs.d).map((s) => s.length), [2]);
    assert.match(byClass(zero, 'note')[0].text, /1 non-finite or non-positive point skipped/);
  });

  test('long runs label steps in thousands, consistently along the axis', () => {
    const pts = curve(41, 500, 5, 2); // steps 0 .. 20000
    const root = parseXml(lossChart([{ name: 'long', points: pts }]));
    const labels = byName(byClass(root, 'x-ticks')[0], 'text').map((t) => t.text);
    assert.ok(labels.every((l) => l === '0' || /^\d+(\.\d+)?k$/.test(l)), labels.join(' '));
    const xs = axis(root, 'x-ticks');
    const verts = pathSegments(byClass(root, 'series-line')[0].attrs.d).flat();
    verts.forEach(([x], k) => assert.ok(Math.abs(invert(xs, x) - pts[k].step) < 1, `step ${pts[k].step}`));
  });

  test('NaN and Infinity are skipped, break the line, and are noted', () => {
    const pts = curve(20, 1, 5, 2);
    pts[5] = { step: 5, loss: NaN };
    pts[6] = { step: 6, loss: Infinity };
    pts[12] = { step: 12, loss: -Infinity };
    const root = parseXml(lossChart([{ name: 'bumpy', points: pts }, { name: 'clean', points: curve(20, 1, 5, 3) }]));
    const segs = pathSegments(byClass(root, 'series-line')[0].attrs.d);
    assert.deepEqual(segs.map((s) => s.length), [5, 5, 7]);
    const notes = byClass(root, 'note').map((t) => t.text);
    assert.equal(notes.length, 1);
    assert.match(notes[0], /3 non-finite points skipped in "bumpy"/);
    // With logY a zero or negative loss cannot be drawn either.
    const logRoot = parseXml(lossChart([{ name: 'z', points: [{ step: 0, loss: 0 }, { step: 1, loss: 2 }, { step: 2, loss: 1 }] }], { logY: true }));
    assert.deepEqual(pathSegments(byClass(logRoot, 'series-line')[0].attrs.d).map((s) => s.length), [2]);
    assert.equal(byClass(logRoot, 'note').length, 1);
  });

  test('a single point is drawn as a dot, with ticks around it', () => {
    const root = parseXml(lossChart([{ name: 'one', points: [{ step: 7, loss: 4.25 }] }]));
    assert.equal(byName(byClass(root, 'series')[0], 'circle').length, 1);
    const ys = axis(root, 'y-ticks');
    const xs = axis(root, 'x-ticks');
    assert.ok(ys.values[0] < 4.25 && ys.values[ys.values.length - 1] > 4.25);
    assert.ok(xs.values[0] < 7 && xs.values[xs.values.length - 1] > 7);
    // Steps are integers, so no fractional step ticks.
    for (const v of xs.values) assert.ok(Number.isInteger(v), `x tick ${v}`);
  });

  test("escapes '<&>' and quotes in names and titles", () => {
    const name = `a<b> & "c" 'd' </text><script>`;
    const svg = lossChart([{ name, points: curve(3, 1, 2, 1) }], { title: `T<&>`, xLabel: 'x & y', yLabel: '<loss>' });
    assert.ok(!svg.includes('<script>') && !svg.includes('a<b>'));
    const root = parseXml(svg);
    assert.deepEqual(byClass(root, 'legend-label').map((t) => t.text), [name]);
    assert.equal(byClass(root, 'title')[0].text, 'T<&>');
    assert.equal(byClass(root, 'x-label')[0].text, 'x & y');
    assert.equal(byClass(root, 'y-label')[0].text, '<loss>');
  });

  test('bad input raises ArgumentError naming the argument', () => {
    assert.throws(() => lossChart([]), (e: unknown) => e instanceof ArgumentError && /series/.test(e.message));
    assert.throws(() => lossChart([{ name: 'a', points: [] }]), (e: unknown) => e instanceof ArgumentError && /series\[0\]\.points/.test(e.message));
    assert.throws(() => lossChart([{ name: 'a', points: [{ step: 0, loss: NaN }] }]), ArgumentError);
    assert.throws(() => lossChart([{ name: 'a', points: [{ step: 0, loss: -1 }] }], { logY: true }), ArgumentError);
    assert.throws(() => lossChart(series, { width: 10 }), (e: unknown) => e instanceof ArgumentError && /opts\.width/.test(e.message));
  });
});

test('niceTicks: bracket [lo, hi], 1-2-5 steps, a sensible count (property)', () => {
  fc.assert(
    fc.property(
      fc.double({ min: -1e6, max: 1e6, noNaN: true }),
      fc.double({ min: 1e-6, max: 1e6, noNaN: true }),
      fc.integer({ min: 2, max: 10 }),
      (lo, span, target) => {
        const hi = lo + span;
        fc.pre(hi > lo);
        const { ticks, step } = niceTicks(lo, hi, target);
        // Within a millionth of a step plus a few ulps: a tick that close to the data is, on any
        // screen, at the data.
        const tol = 1e-6 * step + 1e-14 * Math.max(Math.abs(lo), Math.abs(hi));
        assert.ok(ticks[0] <= lo + tol && ticks[ticks.length - 1] >= hi - tol, `${ticks} vs [${lo}, ${hi}]`);
        assert.ok(isOneTwoFive(step));
        assert.ok(ticks.length >= 2 && ticks.length <= 2 * target + 3, `${ticks.length} ticks for target ${target}`);
      },
    ),
    { numRuns: 500 },
  );
  const lt = logTicks(0.03, 870);
  assert.ok(lt[0] <= 0.03 && lt[lt.length - 1] >= 870);
});

// ---------------------------------------------------------------------------------------------
// Selection maps

/** Cells covered by the rects of one class in one panel, in cell (or bin) units, with opacity. */
function cells(panel: El, cls: 'sel' | 'win'): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of byClass(panel, cls)) {
    const x = Number(r.attrs.x), y = Number(r.attrs.y), w = Number(r.attrs.width), h = Number(r.attrs.height);
    assert.ok([x, y, w, h].every(Number.isInteger), `integer rect ${JSON.stringify(r.attrs)}`);
    for (let i = y; i < y + h; i++) {
      for (let j = x; j < x + w; j++) {
        assert.ok(!out.has(`${i},${j}`), `cell ${i},${j} drawn twice`);
        out.set(`${i},${j}`, Number(r.attrs['fill-opacity'] ?? '1'));
      }
    }
  }
  return out;
}

/** Deterministic pseudo-random rows: each query selects a random subset of its candidates j <= i - W. */
function randomRows(T: number, W: number, seed: number): number[][] {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  return Array.from({ length: T }, (_, i) => {
    const row: number[] = [];
    for (let j = 0; j <= i - W; j++) if (rnd() < 0.35) row.push(j);
    return row.reverse(); // any order is allowed
  });
}

describe('selectionMap', () => {
  test('small T: every selected and window cell is drawn exactly once, nothing above the diagonal', () => {
    const shapes = [{ T: 1, W: 0 }, { T: 7, W: 2 }, { T: 13, W: 0 }, { T: 5, W: 9 }];
    const maps = shapes.map(({ T, W }, m) => ({ title: `layer ${m >> 1} · head ${m & 1}`, T, window: W, rows: randomRows(T, W, 17 + m) }));
    const root = parseXml(selectionMap(maps, { title: 'selection' }));
    const panels = byClass(root, 'panel');
    assert.equal(panels.length, maps.length);
    maps.forEach((m, mi) => {
      const p = panels[mi];
      assert.equal(byClass(p, 'panel-title')[0].text, m.title);
      const sel = cells(p, 'sel');
      const want = new Set(m.rows.flatMap((row, i) => row.map((j) => `${i},${j}`)));
      assert.equal(sel.size, want.size, `panel ${mi}: selected cell count`);
      for (const k of want) assert.ok(sel.has(k), `panel ${mi}: selected ${k}`);
      const win = cells(p, 'win');
      const wantWin = new Set<string>();
      for (let i = 0; i < m.T; i++) for (let j = Math.max(0, i - m.window + 1); j <= i && m.window > 0; j++) wantWin.add(`${i},${j}`);
      assert.deepEqual([...win.keys()].sort(), [...wantWin].sort(), `panel ${mi}: window cells`);
      for (const k of [...sel.keys(), ...win.keys()]) {
        const [i, j] = k.split(',').map(Number);
        assert.ok(j <= i, `panel ${mi}: cell ${k} above the diagonal`);
      }
      for (const o of sel.values()) assert.equal(o, 1); // unbinned: selected is fully dark
    });
  });

  test('T > cellLimit: positions are binned and the rect count is bounded', () => {
    const T = 1000, N = 32, W = 40;
    const rows = Array.from({ length: T }, (_, i) => Array.from({ length: Math.min(24, Math.max(0, i - W + 1)) }, (_, r) => (r * 37 + i) % Math.max(1, i - W + 1)))
      .map((row) => [...new Set(row)]);
    const svg = selectionMap([{ title: 'binned', T, rows, window: W }, { title: 'second', T, rows, window: W }], { cellLimit: N });
    const root = parseXml(svg);
    const bound = N * (N + 1) / 2; // causal bins per panel, per layer (selected, window)
    for (const p of byClass(root, 'panel')) {
      const sel = byClass(p, 'sel'), win = byClass(p, 'win');
      assert.ok(sel.length <= bound && win.length <= bound, `${sel.length} + ${win.length} rects`);
      const covered = cells(p, 'sel');
      assert.ok(covered.size > 0);
      for (const k of [...covered.keys(), ...cells(p, 'win').keys()]) {
        const [i, j] = k.split(',').map(Number);
        assert.ok(i >= 0 && i < N && j >= 0 && j <= i, `bin ${k}`);
      }
    }
    assert.ok(byName(root, 'rect').length <= 2 * 2 * bound + 20, `${byName(root, 'rect').length} rects in all`);
    assert.match(byClass(root, 'note')[0].text, /T = 1000 drawn as 32 × 32 bins/);
  });

  test('binned shades: full bins are fully dark; a lone selection is faint but present, in its bin', () => {
    const T = 64, N = 8; // bins of 8 positions
    const dense = Array.from({ length: T }, (_, i) => Array.from({ length: i + 1 }, (_, j) => j));
    const full = cells(byClass(parseXml(selectionMap([{ title: 'dense', T, rows: dense }], { cellLimit: N })), 'panel')[0], 'sel');
    assert.equal(full.size, N * (N + 1) / 2);
    for (const o of full.values()) assert.equal(o, 1);
    const lone = Array.from({ length: T }, (_, i) => (i === 45 ? [10] : []));
    const one = cells(byClass(parseXml(selectionMap([{ title: 'lone', T, rows: lone }], { cellLimit: N })), 'panel')[0], 'sel');
    assert.deepEqual([...one.keys()], [`${Math.floor(45 / 8)},${Math.floor(10 / 8)}`]);
    const o = [...one.values()][0];
    assert.ok(o > 0 && o < 0.5, `opacity ${o}`);
  });

  test('binned shades order like the brute-force fraction of selected pairs per bin', () => {
    const T = 113, N = 10; // awkward: bins of 11 or 12 positions
    const rows = randomRows(T, 5, 99).map((row, i) => row.filter((j) => (j * 7 + i) % 5 !== 0));
    const got = cells(byClass(parseXml(selectionMap([{ title: 'b', T, rows, window: 5 }], { cellLimit: N })), 'panel')[0], 'sel');
    // Oracle: bin of position p is floor(p * N / T); fraction = selected pairs / causal pairs (j <= i).
    const selected = new Map<string, number>(), causal = new Map<string, number>();
    const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
    for (let i = 0; i < T; i++) {
      for (let j = 0; j <= i; j++) bump(causal, `${Math.floor((i * N) / T)},${Math.floor((j * N) / T)}`);
      for (const j of rows[i]) bump(selected, `${Math.floor((i * N) / T)},${Math.floor((j * N) / T)}`);
    }
    assert.deepEqual([...got.keys()].sort(), [...selected.keys()].sort());
    const pairs = [...selected].map(([k, n]) => ({ f: n / causal.get(k)!, o: got.get(k)! }));
    for (const a of pairs) for (const b of pairs) if (a.f < b.f - 0.05) assert.ok(a.o <= b.o, `fraction ${a.f} shaded ${a.o}, ${b.f} shaded ${b.o}`);
  });

  test('bad input raises typed errors naming the argument', () => {
    assert.throws(() => selectionMap([]), ArgumentError);
    assert.throws(() => selectionMap([{ title: 'a', T: 3, rows: [[], []] }]), (e: unknown) => e instanceof ShapeError && /maps\[0\]\.rows/.test(e.message));
    assert.throws(() => selectionMap([{ title: 'a', T: 3, rows: [[], [2], []] }]), (e: unknown) => e instanceof ArgumentError && /maps\[0\]\.rows\[1\]/.test(e.message));
    assert.throws(() => selectionMap([{ title: 'a', T: 3, rows: [[], [], [1, 1]] }]), (e: unknown) => e instanceof ArgumentError && /distinct/.test(e.message));
    assert.throws(() => selectionMap([{ title: 'a', T: 3, rows: [[], [], [0.5]] }]), ArgumentError);
    assert.throws(() => selectionMap([{ title: 'a', T: 0, rows: [] }]), (e: unknown) => e instanceof ArgumentError && /maps\[0\]\.T/.test(e.message));
    assert.throws(() => selectionMap([{ title: 'a', T: 1, rows: [[]] }], { cellLimit: 0 }), ArgumentError);
  });
});

// ---------------------------------------------------------------------------------------------
// PNG and files

/** Width and height from the IHDR chunk, after checking the signature. */
function pngSize(buf: Buffer): { width: number; height: number } {
  assert.deepEqual([...buf.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  assert.equal(buf.toString('latin1', 12, 16), 'IHDR');
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}

describe('png and writePlot', () => {
  const chart = lossChart([{ name: 'a', points: curve(9, 3, 4, 2) }], { width: 640, height: 360 });

  test('svgToPng: PNG signature and the SVG size, times scale', () => {
    assert.deepEqual(pngSize(svgToPng(chart)), { width: 640, height: 360 });
    assert.deepEqual(pngSize(svgToPng(chart, { scale: 2 })), { width: 1280, height: 720 });
    const map = selectionMap([{ title: 'layer 0 · head 1', T: 7, rows: randomRows(7, 2, 3), window: 2 }]);
    const root = parseXml(map);
    assert.deepEqual(pngSize(svgToPng(map)), { width: Number(root.attrs.width), height: Number(root.attrs.height) });
    assert.throws(() => svgToPng(chart, { scale: 0 }), ArgumentError);
    assert.throws(() => svgToPng('<svg'), ArgumentError);
  });

  test('writePlot: by extension, atomically, into a new folder; unknown extension names the path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sparsek-plot-'));
    try {
      writePlot(join(dir, 'sub', 'loss.svg'), chart);
      assert.equal(readFileSync(join(dir, 'sub', 'loss.svg'), 'utf8'), chart);
      writePlot(join(dir, 'sub', 'loss.PNG'), chart);
      assert.deepEqual(pngSize(readFileSync(join(dir, 'sub', 'loss.PNG'))), { width: 640, height: 360 });
      const bad = join(dir, 'loss.jpg');
      assert.throws(() => writePlot(bad, chart), (e: unknown) =>
        e instanceof ArgumentError && e.message.includes(bad) && e.message.includes('.svg') && e.message.includes('.png'));
      assert.deepEqual(readdirSync(join(dir, 'sub')).sort(), ['loss.PNG', 'loss.svg']); // no temporary files left
      assert.deepEqual(readdirSync(dir), ['sub']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
