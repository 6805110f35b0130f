// Harness for the fast selection (kernel.ts): emulation, GPU validation, timing. One JSON line per result.
//
//   node --import tsx dev/cuda-selection-fast/bench.ts [--T 4096,16384,65536] [--rows 16] [--K 512] [--W 512]
//        [--repeats 20] [--dump DIR] [--no-old] [--skip-emulate] [--skip-validate] [--skip-time] [--probe] [--two-phases]
//
// 1. emulate (no GPU): emulate.ts's fastSelect, the kernels' algorithm step for step, against CausalSelector
//    (src/cpu/kernels/selection.ts) on awkward cases: tau to 1e-9 (relative, absolute below 1), thk, count,
//    nfree and every row exactly.
// 2. validate (GPU): the kernels against CausalSelector on the same kind of cases plus the timing shapes
//    (rows 0 and last), in both modes: 'block' (sel rows at i0 = 64 b only, compact (BH, nb, K)) and 'all'
//    (every row, the (BH, T, K) layout). Continues past a failure; exit status 1 if any.
// 3. time (GPU, CUDA events, median): per pass and in all, 'block' and 'all', u ~ N(0, 1) and U(0, 1),
//    next to the existing kernels (src/cuda/kernels/selection.ts) unless --no-old.
// --probe adds, per timing shape, fs_block's clock64() cycles and walk lengths per phase (sum and max).
// --dump DIR writes each kernel's .cu for `nvcc -arch=sm_90 -cubin --ptxas-options=-v`.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CausalSelector } from '../../src/cpu/kernels/selection.js';
import { cudaAvailability } from '../../src/cuda/runtime.js';
import type { CudaRuntime, DeviceBlock, Kernel, KernelSource } from '../../src/cuda/runtime.js';
import { selectGlobalSource, selectSharedSource, SELECT_BQ } from '../cuda-attention/selection-tiles.js';
import { fastSelect, keyOf, ordOf } from './emulate.js';
import { deviceHelpers } from '../cuda-attention-fast/harness.js';
import {
  FS_ANCHOR_STRIDE, FS_ANCHOR_THREADS, FS_CHUNK, FS_LEAVES, FS_PROBE_PHASES, FS_ROWS_THREADS, fsAnchorLaunches, fsAnchorSource, fsBlockSource, fsGeometry, fsInitSource, fsLeavesSource,
  fsMerge2Source, fsMerges, fsMergeSource, fsRowsSource,
} from '../../src/cuda/kernels/selection-fast.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : dflt);
const Ts = opt('T', '4096,16384,65536').split(',').map(Number);
const ROWS = Number(opt('rows', '16')), KB = Number(opt('K', '512')), WB = Number(opt('W', '512'));
const repeats = Number(opt('repeats', '20'));
// --two-phases: the anchors in two phases wherever a row has more than 2 FS_ANCHOR_STRIDE of them, as
// CudaBackend does only past one wave of warps (so the small validation cases check phase 2 too)
const twoPhases = args.includes('--two-phases');
const out = (o: object): void => console.log(JSON.stringify(o));
let failures = 0;

// ---- inputs -------------------------------------------------------------------------------------
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    s = (s ^ (s >>> 12)) >>> 0;
    return s / 2 ** 32;
  };
}
type Dist = 'normal' | 'uniform' | 'tied' | 'equal' | 'trend' | 'coarse' | 'wide' | 'step';
function scores(dist: Dist, n: number, T: number, seed: number): Float32Array {
  const r = rng(seed);
  const normal = (): number => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  return Float32Array.from({ length: n }, (_, x) => {
    const i = x % T;
    switch (dist) {
      case 'normal': return normal();
      case 'uniform': return r();
      case 'tied': return Math.round(normal() * 2) / 2;
      case 'equal': return 0.25;
      case 'trend': return 0.01 * i + r();
      case 'coarse': return Math.floor(r() * 4) * 0.75;
      case 'wide': return 30 * normal();
      case 'step': return i < T / 2 ? 0.1 * r() : 50 + r();
    }
  });
}

// ---- the reference: CausalSelector, per query ---------------------------------------------------
interface Ref { tau: Float64Array; thk: BigUint64Array; count: Int32Array; nfree: Int32Array; rows: Int32Array[] }
const bigKey = (u: number, j: number): bigint => (BigInt(ordOf(u)) << 32n) | BigInt(j);
/** rowsAt: which queries' rows to keep (every row, or i0 = 64 b). */
function reference(u: Float32Array, off: number, T: number, K: number, W: number, everyRow: boolean): Ref {
  const s = new CausalSelector(K);
  const ref: Ref = { tau: new Float64Array(T), thk: new BigUint64Array(T), count: new Int32Array(T), nfree: new Int32Array(T), rows: [] };
  // |F_i| = #{v > tau} - #{v - tau >= 1} over the candidates (both predicates monotone in v): a Fenwick
  // tree of candidate counts over the row's values sorted ascending, and binary searches for the thresholds.
  const vals = Float64Array.from(u.subarray(off, off + T)).sort();
  const bit = new Int32Array(T + 1);
  const rankOf = (v: number): number => { let lo = 0, hi = T; while (lo < hi) { const m = (lo + hi) >> 1; if (vals[m] < v) lo = m + 1; else hi = m; } return lo; };
  const below = (r: number): number => { let c = 0; for (let x = r; x > 0; x -= x & -x) c += bit[x]; return c; }; // candidates at ranks < r
  const first = (pred: (v: number) => boolean): number => { let lo = 0, hi = T; while (lo < hi) { const m = (lo + hi) >> 1; if (pred(vals[m])) hi = m; else lo = m + 1; } return lo; };
  for (let i = 0; i < T; i++) {
    const j = W > 0 ? i - W : i;
    if (j >= 0) {
      s.push(u[off + j], j);
      for (let x = rankOf(u[off + j]) + 1; x <= T; x += x & -x) bit[x]++;
    }
    const sel = s.selected();
    const n = Math.max(0, Math.min(T, i - W + 1));
    ref.tau[i] = s.tau;
    ref.count[i] = sel.length;
    if (n <= K) ref.thk[i] = 0n;
    else if (K === 0) ref.thk[i] = 0xffffffffffffffffn;
    else {
      let m = 0xffffffffffffffffn;
      for (const q of sel) { const k = bigKey(u[off + q], q); if (k < m) m = k; }
      ref.thk[i] = m;
    }
    const t = s.tau;
    ref.nfree[i] = Number.isFinite(t) ? below(first((v) => v - t >= 1)) - below(first((v) => v > t)) : 0;
    if (everyRow || i % FS_CHUNK === 0) ref.rows.push(Int32Array.from(sel));
  }
  return ref;
}
const tauOk = (got: number, want: number): boolean => got === want || Math.abs(got - want) <= 1e-9 * Math.max(1, Math.abs(want));

// ---- 1. emulation --------------------------------------------------------------------------------
interface Case { name: string; dist: Dist; T: number; K: number; W: number }
const cases: Case[] = [
  ...([[1, 5, 3], [1, 0, 0], [7, 2, 0], [113, 5, 7], [300, 17, 64], [500, 40, 0], [777, 64, 37], [1000, 100, 37],
    [2048, 512, 512], [5000, 300, 130], [5000, 64, 1], [300, 1000, 64], [513, 0, 100], [200, 200, 0], [200, 199, 0]] as const)
    .map(([T, K, W]) => ({ name: `normal T=${T} K=${K} W=${W}`, dist: 'normal' as Dist, T, K, W })),
  ...([[700, 50, 20], [1500, 100, 0], [5000, 257, 127]] as const).flatMap(([T, K, W]) =>
    (['tied', 'equal', 'uniform', 'trend', 'coarse', 'wide', 'step'] as Dist[]).map((dist) => ({ name: `${dist} T=${T} K=${K} W=${W}`, dist, T, K, W }))),
];
function compare(name: string, T: number, K: number, W: number, ref: Ref,
  got: { tau: Float64Array; thk: BigUint64Array | bigint[]; count: Int32Array; nfree: Int32Array; row: (r: number) => Int32Array }, everyRow: boolean): string | null {
  for (let i = 0; i < T; i++) {
    if (!tauOk(got.tau[i], ref.tau[i])) return `${name} i=${i}: tau ${got.tau[i]}, want ${ref.tau[i]}`;
    if (got.thk[i] !== ref.thk[i]) return `${name} i=${i}: thk ${got.thk[i]}, want ${ref.thk[i]}`;
    if (got.count[i] !== ref.count[i]) return `${name} i=${i}: count ${got.count[i]}, want ${ref.count[i]}`;
    if (got.nfree[i] !== ref.nfree[i]) return `${name} i=${i}: nfree ${got.nfree[i]}, want ${ref.nfree[i]}`;
  }
  for (let r = 0; r < ref.rows.length; r++) {
    const want = ref.rows[r], g = got.row(r), i = everyRow ? r : r * FS_CHUNK;
    for (let c = 0; c < want.length; c++) if (g[c] !== want[c]) return `${name} row of query ${i} at ${c}: ${g[c]}, want ${want[c]}`;
  }
  return null;
}

if (!args.includes('--skip-emulate')) {
  const t0 = performance.now();
  let bad = 0, steps = 0;
  for (const c of cases) {
    const u = scores(c.dist, c.T, c.T, 7);
    const ref = reference(u, 0, c.T, c.K, c.W, true);
    const e = fastSelect(u, c.T, c.K, c.W);
    steps += e.stats.walkSteps;
    const thk = e.thk.map((k) => (k === 'zero' ? 0n : k === 'ones' ? 0xffffffffffffffffn : BigInt(Math.floor(k / 2 ** 21)) << 32n | BigInt(k % 2 ** 21)));
    const err = compare(`emulate ${c.name}`, c.T, c.K, c.W, ref, { ...e, thk, row: (r) => e.rows[r] }, true)
      ?? (e.rows.some((row, i) => row.length !== ref.rows[i].length) ? `emulate ${c.name}: a row's length differs` : null);
    if (err !== null) { bad++; out({ phase: 'emulate', case: c.name, ok: false, error: err }); }
  }
  void keyOf;
  out({ phase: 'emulate', cases: cases.length, failed: bad, walkSteps: steps, seconds: +((performance.now() - t0) / 1000).toFixed(1) });
  if (bad > 0) failures++;
}

const sources = (): KernelSource[] => [fsInitSource(), fsMergeSource(), fsLeavesSource(), fsMerge2Source(), fsAnchorSource(1), fsAnchorSource(4), fsRowsSource(), fsBlockSource({ ALL: false }), fsBlockSource({ ALL: true })];
if (args.includes('--dump')) {
  const dir = opt('dump', '/tmp/spk-fsel-cu');
  mkdirSync(dir, { recursive: true });
  for (const s of sources()) writeFileSync(join(dir, `${s.name}.cu`), s.source);
  out({ phase: 'dump', dir, kernels: sources().map((s) => s.name) });
}

const avail = cudaAvailability();
if (!avail.available) {
  out({ phase: 'gpu', skipped: true, reason: avail.reason });
  process.exit(failures > 0 ? 1 : 0);
}
const rt: CudaRuntime = avail.runtime;
out({ phase: 'device', name: rt.name, arch: rt.arch, sms: rt.multiprocessors, driver: rt.driverVersion, nvrtc: rt.nvrtcVersion.join('.'), at: new Date().toISOString() });

// ---- device helpers -------------------------------------------------------------------------------
const { take, put, get, timeMs } = deviceHelpers(rt);
const loaded = new Map<string, Kernel>();
function kernel(src: KernelSource, shared = 0): Kernel {
  let k = loaded.get(src.name);
  if (k === undefined) {
    k = rt.kernel(src);
    if (shared > 48 * 1024) rt.cu('cuFuncSetAttribute', k.fn, 8, shared);
    loaded.set(src.name, k);
    out({ phase: 'kernel', name: src.name, registers: k.registers, localBytes: k.localBytes });
  }
  return k;
}

/** The fast selection of BH rows of u; run() launches every pass, phases() each pass alone for timing. */
function fast(u: DeviceBlock, BH: number, T: number, K: number, W: number, all: boolean) {
  const { d, Tx, NL, nb } = fsGeometry(T, W);
  const lvl = BH * Tx;
  const tk = take(NL * lvl * 8), tp = take(NL * lvl * 8), sk = [take(lvl * 8), take(lvl * 8)], sp = [take(lvl * 8), take(lvl * 8)];
  const athk = take(BH * (nb + 1) * 8), atau = take(BH * (nb + 1) * 8);
  const tau = take(BH * T * 8), thk = take(BH * T * 8), count = take(BH * T * 4), nfree = take(BH * T * 4);
  const sel = take(BH * (all ? T : nb) * K * 4);
  const rowsShared = 4 * Math.ceil(Tx / 32);
  const kInit = kernel(fsInitSource()), kMerge = kernel(fsMergeSource()), launches = fsAnchorLaunches(BH, nb, K, twoPhases ? 0 : rt.multiprocessors);
  const kRows = kernel(fsRowsSource(), rowsShared), kBlock = kernel(fsBlockSource({ ALL: all }));
  const g = (n: number): number => Math.ceil(n / 256);
  // as CudaBackend: sparsek_fs_leaves, then the merges of fsMerges (two levels a launch)
  const kLeaves = kernel(fsLeavesSource()), kMerge2 = kernel(fsMerge2Source());
  const level = (size: number): bigint => BigInt(Math.log2(size / FS_CHUNK) * lvl * 8);
  const tree = (): void => {
    rt.launch(kLeaves, [Math.ceil(Tx / FS_LEAVES), BH, 1], FS_LEAVES, 0, [tk.ptr, tp.ptr, u.ptr, BH, T, Tx, d]);
    for (const { s, two } of fsMerges(Tx, BH)) {
      const into = [tk.ptr + level(2 * s), tp.ptr + level(2 * s)], from = [tk.ptr + level(s), tp.ptr + level(s)];
      if (two) rt.launch(kMerge2, g(lvl), 256, 0, [...into, tk.ptr + level(4 * s), tp.ptr + level(4 * s), ...from, BH, Tx, s]);
      else rt.launch(kMerge, g(lvl), 256, 0, [...into, ...from, BH, Tx, s]);
    }
  };
  // the first tree: sparsek_fs_init, then one sparsek_fs_merge launch per node size 1, 2, 4, ...
  const treeByLevels = (): void => {
    rt.launch(kInit, g(lvl), 256, 0, [sk[0].ptr, sp[0].ptr, u.ptr, BH, T, Tx, d]);
    let inK = sk[0].ptr, inP = sp[0].ptr, flip = 1;
    for (let s = 1; s < Tx; s *= 2) {
      let oK: bigint, oP: bigint;
      if (2 * s >= FS_CHUNK) {
        const l = Math.log2((2 * s) / FS_CHUNK);
        oK = tk.ptr + BigInt(l * lvl * 8);
        oP = tp.ptr + BigInt(l * lvl * 8);
      } else {
        oK = sk[flip].ptr;
        oP = sp[flip].ptr;
        flip ^= 1;
      }
      rt.launch(kMerge, g(lvl), 256, 0, [oK, oP, inK, inP, BH, Tx, s]);
      inK = oK;
      inP = oP;
    }
  };
  // as CudaBackend: phase 1 (every FS_ANCHOR_STRIDE-th anchor) then phase 2 (the rest, bracketed), or one phase-0 launch
  const anchors = (): void => {
    for (const { phase, AW, grid } of launches) rt.launch(kernel(fsAnchorSource(AW)), grid, FS_ANCHOR_THREADS, 0,
      [athk.ptr, atau.ptr, tk.ptr, tp.ptr, u.ptr, BH, T, K, W, Tx, d, NL, nb, FS_ANCHOR_STRIDE, phase]);
  };
  const rows = (): void => rt.launch(kRows, [nb, BH, 1], FS_ROWS_THREADS, rowsShared,
    [sel.ptr, athk.ptr, tk.ptr, u.ptr, BH, T, K, W, Tx, d, NL, nb, all ? T : nb, all ? 6 : 0, 1, 1]);
  const block = (): void => rt.launch(kBlock, [nb, BH, 1], FS_CHUNK, 0,
    [tau.ptr, thk.ptr, count.ptr, nfree.ptr, sel.ptr, athk.ptr, atau.ptr, tk.ptr, tp.ptr, u.ptr, BH, T, K, W, Tx, d, NL, nb]);
  const run = (): void => { tree(); anchors(); rows(); block(); };
  // whether tree() leaves the same bits as treeByLevels() in every level (keys and prefix sums)
  const treeSame = (): boolean => {
    treeByLevels();
    const k1 = get(tk, new BigUint64Array(NL * lvl)), p1 = get(tp, new BigUint64Array(NL * lvl));
    tree();
    const k2 = get(tk, new BigUint64Array(NL * lvl)), p2 = get(tp, new BigUint64Array(NL * lvl));
    for (let x = 0; x < k1.length; x++) if (k1[x] !== k2[x] || p1[x] !== p2[x]) return false;
    return true;
  };
  // Where fs_block's time goes (--probe): clock64() cycles per phase and walk lengths, summed and maxed.
  const probe = (): Record<string, { sum: number; max: number }> => {
    const kProbe = kernel(fsBlockSource({ ALL: all, PROBE: true }));
    const slots = take(16 * 8);
    rt.cu('cuMemsetD32Async', slots.ptr, 0, 32, rt.stream);
    rt.launch(kProbe, [nb, BH, 1], FS_CHUNK, 0,
      [tau.ptr, thk.ptr, count.ptr, nfree.ptr, sel.ptr, athk.ptr, atau.ptr, tk.ptr, tp.ptr, u.ptr, BH, T, K, W, Tx, d, NL, nb, slots.ptr]);
    const got = get(slots, new BigUint64Array(16));
    rt.arena.give(slots);
    return Object.fromEntries(FS_PROBE_PHASES.map((name, k) => [name, { sum: Number(got[k]), max: Number(got[8 + k]) }]));
  };
  const free = (): void => { for (const b of [tk, tp, ...sk, ...sp, athk, atau, tau, thk, count, nfree, sel]) rt.arena.give(b); };
  const read = (r: number) => {
    const o = r * T;
    const ta = get(tau, new Float64Array(BH * T)), th = get(thk, new BigUint64Array(BH * T));
    const co = get(count, new Int32Array(BH * T)), nf = get(nfree, new Int32Array(BH * T));
    const sl = get(sel, new Int32Array(BH * (all ? T : nb) * K));
    const rowsPer = all ? T : nb;
    return {
      tau: ta.subarray(o, o + T), thk: th.subarray(o, o + T), count: co.subarray(o, o + T), nfree: nf.subarray(o, o + T),
      row: (q: number) => sl.subarray((r * rowsPer + q) * K, (r * rowsPer + q + 1) * K),
    };
  };
  return { run, tree, treeSame, anchors, rows, block, probe, free, read, nb, NL, Tx, treeBytes: 2 * NL * lvl * 8 };
}

/** The existing kernels (src/cuda/kernels/selection.ts), as CudaBackend launches them. */
function old(u: DeviceBlock, BH: number, T: number, K: number, W: number) {
  const ntiles = Math.ceil(T / SELECT_BQ), cap = 4096;
  const jbits = T > 1 ? 32 - Math.clz32(T - 1) : 0;
  const bufs = [take(BH * T * 8), take(BH * T * 8), take(BH * T * 4), take(BH * T * 4), take(BH * T * K * 4), take(BH * ntiles * 4)];
  const [tau, thk, count, nfree, sel, flags] = bufs;
  let capG = 1;
  while (capG < T) capG *= 2;
  const G = Math.min(rt.multiprocessors, ntiles * BH);
  const scratch = take(G * 2 * capG * 8);
  const shared = kernel(selectSharedSource({ CAP: cap }), 16 * cap), global = kernel(selectGlobalSource());
  const run = (): void => {
    rt.launch(shared, [ntiles, BH, 1], SELECT_BQ, 16 * cap, [tau.ptr, thk.ptr, count.ptr, nfree.ptr, sel.ptr, flags.ptr, u.ptr, T, K, W, jbits]);
    rt.launch(global, G, SELECT_BQ, 0, [tau.ptr, thk.ptr, count.ptr, nfree.ptr, sel.ptr, flags.ptr, scratch.ptr, u.ptr, T, K, W, jbits, ntiles, BH, capG]);
  };
  return { run, free: () => { for (const b of [...bufs, scratch]) rt.arena.give(b); } };
}

// ---- 2. validation ----------------------------------------------------------------------------------
if (!args.includes('--skip-validate')) {
  const vcases: (Case & { BH: number; check: number[] })[] = [
    ...cases.map((c) => ({ ...c, BH: 2, check: [0, 1] })),
    ...Ts.flatMap((T) => (['normal', 'uniform'] as Dist[]).map((dist) => ({ name: `${dist} T=${T} K=${KB} W=${WB} x${ROWS}`, dist, T, K: KB, W: WB, BH: ROWS, check: [0, ROWS - 1] }))),
  ];
  for (const c of vcases) {
    for (const all of [false, true]) {
      if (all && c.T * c.K * c.BH > 2 ** 28) continue; // the (T, K) layout at 64K x 16 rows is 2 GiB: 'block' only
      const t0 = performance.now();
      try {
        const u = scores(c.dist, c.BH * c.T, c.T, 11);
        const du = put(u);
        const f = fast(du, c.BH, c.T, c.K, c.W, all);
        const same = all || f.treeSame();
        f.run();
        rt.synchronize();
        let err: string | null = same ? null : `${c.name}: the tree of sparsek_fs_leaves and the merges differs from the one of a merge per level`;
        for (const r of err === null ? c.check : []) {
          const ref = reference(u, r * c.T, c.T, c.K, c.W, all);
          err = compare(`${c.name} row ${r}`, c.T, c.K, c.W, ref, f.read(r), all);
          if (err !== null) break;
        }
        out({ phase: 'validate', case: c.name, mode: all ? 'all' : 'block', ok: err === null, ...(err ? { error: err } : {}), seconds: +((performance.now() - t0) / 1000).toFixed(1) });
        if (err !== null) failures++;
        f.free();
        rt.arena.give(du);
      } catch (e) {
        failures++;
        out({ phase: 'validate', case: c.name, mode: all ? 'all' : 'block', ok: false, error: String((e as Error).message).slice(0, 2000) });
      }
    }
  }
}

// ---- 3. timing (--skip-time: none) ----------------------------------------------------------------------
for (const T of args.includes('--skip-time') ? [] : Ts) {
  for (const dist of ['normal', 'uniform'] as Dist[]) {
    for (const all of [false, true]) {
      if (all && T * KB * ROWS * 4 > 2 ** 31) continue;
      try {
        const du = put(scores(dist, ROWS * T, T, 21));
        const f = fast(du, ROWS, T, KB, WB, all);
        const ms = timeMs(f.run, repeats);
        const parts = { tree: timeMs(f.tree, repeats), anchors: timeMs(f.anchors, repeats), rows: timeMs(f.rows, repeats), block: timeMs(f.block, repeats) };
        let oldMs: number | null = null;
        if (!all && !args.includes('--no-old')) {
          const o = old(du, ROWS, T, KB, WB);
          oldMs = timeMs(o.run, Math.min(repeats, 5));
          o.free();
        }
        out({ phase: 'time', T, rows: ROWS, K: KB, W: WB, dist, mode: all ? 'all' : 'block', ms: +ms.toFixed(4),
          parts: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, +v.toFixed(4)])), oldMs: oldMs === null ? null : +oldMs.toFixed(3),
          treeMiB: +(f.treeBytes / 2 ** 20).toFixed(1), NL: f.NL });
        if (args.includes('--probe')) {
          f.run();
          out({ phase: 'probe', T, dist, mode: all ? 'all' : 'block', blocks: f.nb * ROWS, queries: T * ROWS, ...f.probe() });
        }
        f.free();
        rt.arena.give(du);
      } catch (e) {
        failures++;
        out({ phase: 'time', T, dist, mode: all ? 'all' : 'block', ok: false, error: String((e as Error).message).slice(0, 2000) });
      }
    }
  }
}
process.exit(failures > 0 ? 1 : 0);
