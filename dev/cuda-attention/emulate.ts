// A sequential TypeScript transliteration of the GPU selection (src/cuda/kernels/selection.ts:
// select_tile, key intervals) and of the GPU score-gradient method (attention.ts: key-ordered gate
// gradients, mean prefix, sparsek_score_grad), run against the CPU reference on many random inputs,
// ties included. It checks the ALGORITHM without a GPU (the tile invariants, the tau walk, the
// interval bookkeeping); the CUDA code itself is checked on the device by test/cuda/attention.test.ts.
//
//   node --import tsx dev/cuda-attention/emulate.ts [cases]
//
// Keys are (ord(u), j) compared as pairs of numbers instead of packed into 64 bits.

import { selectCausal } from '../../src/cpu/kernels/selection.js';
import { patternAttentionBackward, planSparsek, sparsekAttentionBackwardInto, sparsekPattern } from '../../src/cpu/kernels/attention.js';

const BQ = 256;
type Key = [number, number]; // [u as float32, j]
const f32 = Math.fround;
const cmp = (a: Key, b: Key): number => (a[0] !== b[0] ? (a[0] < b[0] ? -1 : 1) : a[1] - b[1]);
const ZERO: Key = [-Infinity, -1];
const MAXK: Key = [Infinity, Infinity];

interface Out { tau: Float64Array; thk: Key[]; count: Int32Array; nfree: Int32Array; sel: Int32Array; overflowTiles: number }

function tauWalk(Sv: Key[], size: number, ci: number, K: number, theta: number): number {
  const lo = theta - 1;
  let m = 0, U = 0, nF = 0, sumF = 0;
  for (; m < size; m++) { if (Sv[m][0] < theta + 1) break; if (Sv[m][1] <= ci) U++; }
  let pL = m;
  for (; m < size; m++) { const v = Sv[m][0]; if (v <= theta) break; if (Sv[m][1] <= ci) { nF++; sumF += v; } }
  const endL = m;
  let pE = m, top = theta;
  for (;;) {
    let vE = -Infinity, vL = -Infinity;
    while (pE < size) { const v = Sv[pE][0]; if (v <= lo) { pE = size; break; } if (Sv[pE][1] <= ci) { vE = v; break; } pE++; }
    while (pL < endL) { if (Sv[pL][1] <= ci) { vL = Sv[pL][0]; break; } pL++; }
    const te = Math.max(vE, vL - 1, lo);
    const fte = U + sumF - nF * te;
    if (fte >= K || (vE === -Infinity && vL === -Infinity)) {
      const t = nF > 0 ? (U + sumF - K) / nF : te;
      return Math.min(Math.max(t, te), top);
    }
    if (vE >= vL - 1) { nF++; sumF += vE; pE++; } else { nF--; sumF -= vL; U++; pL++; }
    top = te;
  }
}

function selectRow(u: Float32Array, T: number, K: number, W: number, cap: number): Out {
  const o: Out = { tau: new Float64Array(T), thk: new Array(T).fill(ZERO), count: new Int32Array(T), nfree: new Int32Array(T), sel: new Int32Array(T * K).fill(-7), overflowTiles: 0 };
  const key = (j: number): Key => [u[j] === 0 ? 0 : u[j], j];
  for (let tile = 0; tile * BQ < T; tile++) {
    let ok = selectTile(o, u, key, T, K, W, tile, cap);
    if (!ok) { o.overflowTiles++; ok = selectTile(o, u, key, T, K, W, tile, Infinity); }
    if (!ok) throw new Error('global pass overflowed');
  }
  return o;
}

function selectTile(o: Out, u: Float32Array, key: (j: number) => Key, T: number, K: number, W: number, tile: number, cap: number): boolean {
  const i0 = tile * BQ, i1 = Math.min(T, i0 + BQ);
  for (let i = i0; i < i1; i++) {
    const ci = i - W;
    if (!(ci + 1 > K)) { o.tau[i] = -Infinity; o.thk[i] = ZERO; o.count[i] = Math.max(0, ci + 1); o.nfree[i] = 0; for (let c = 0; c <= ci; c++) o.sel[i * K + c] = c; }
  }
  const iF = Math.max(i0, K + W);
  if (iF >= i1) return true;
  const c0 = iF - W, cl = i1 - 1 - W;
  const cand = Array.from({ length: c0 + 1 }, (_, j) => key(j)).sort((a, b) => cmp(b, a));
  const next0 = cand[K];
  const thk0 = K > 0 ? cand[K - 1] : MAXK;
  const lim = K > 0 ? thk0[0] - 1 : Infinity;
  const Sj: Key[] = [];
  for (let j = 0; j <= cl; j++) {
    const kj = key(j);
    if (u[j] > lim || j > c0 || cmp(kj, next0) === 0) Sj.push(kj);
  }
  if (Sj.length > cap) return false;
  const Sv = Sj.slice().sort((a, b) => cmp(b, a));
  const size = Sv.length;
  for (let i = iF; i < i1; i++) {
    const ci = i - W;
    let cnt = 0, tk: Key = MAXK, nk: Key = ZERO;
    for (let m = 0; m < size; m++) {
      if (Sv[m][1] <= ci) { if (++cnt === K) tk = Sv[m]; if (cnt === K + 1) { nk = Sv[m]; break; } }
    }
    if (nk === ZERO) throw new Error(`tile ${tile} query ${i}: fewer than K+1 eligible in S`);
    const next = nk[0];
    let t: number;
    if (K === 0) t = next;
    else { const theta = tk[0]; t = next <= theta - 1 ? next : tauWalk(Sv, size, ci, K, theta); }
    let nf = 0;
    for (let m = 0; m < size; m++) { const v = Sv[m][0]; if (!(v > t)) break; if (Sv[m][1] <= ci && v - t < 1) nf++; }
    o.tau[i] = t; o.thk[i] = tk; o.count[i] = K; o.nfree[i] = nf;
    let written = 0;
    for (const kj of Sj) if (kj[1] <= ci && cmp(kj, tk) >= 0) o.sel[i * K + written++] = kj[1];
    if (written !== K) throw new Error(`query ${i}: wrote ${written} of K=${K}`);
  }
  return true;
}

function intervals(u: Float32Array, thk: Key[], T: number, W: number): Int32Array {
  const e = new Int32Array(T);
  for (let j = 0; j < T; j++) {
    let lo = Math.min(j + W, T), hi = T;
    const kj: Key = [u[j] === 0 ? 0 : u[j], j];
    while (lo < hi) { const mid = (lo + hi) >> 1; if (cmp(thk[mid], kj) > 0) hi = mid; else lo = mid + 1; }
    e[j] = lo;
  }
  return e;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    s = (s ^ (s >>> 12)) >>> 0;
    return s / 2 ** 32;
  };
}

const cases = Number(process.argv[2] ?? 60);
let worstTau = 0, worstDu = 0, overflowed = 0;
for (let cs = 0; cs < cases; cs++) {
  const r = rng(cs + 1);
  const T = [1, 7, 113, 300, 700, 1000][cs % 6];
  const K = [0, 1, 3, 10, 37, 200, 2000][Math.floor(r() * 7)];
  const W = [0, 1, 2, 5, 16, 2000][Math.floor(r() * 6)];
  // 0 spread out, 1 quantized (ties), 2 all equal, 3 increasing slope + noise, 4 bunched (many free),
  // 5 few distinct levels 0.35 apart, 6 the same but rare among very low scores (thresholds deep
  // inside (theta - 1, theta), old candidates of a tile inside the walk)
  const mode = Math.floor(cs / 6) % 7;
  const u = new Float32Array(T);
  for (let j = 0; j < T; j++) {
    u[j] = f32(mode === 0 ? (r() * 2 - 1) * 3 : mode === 1 ? Math.floor(r() * 5) / 2 : mode === 2 ? 0.25 : mode === 3 ? 0.05 * j + r() * 0.5 : mode === 4 ? r() * 1.5 : mode === 5 || r() < 0.03 ? Math.floor(r() * 9) * 0.35 : -10 - r());
  }
  const cap = [4096, 64, 300][Math.floor(cs / 42) % 3];
  const got = selectRow(u, T, K, W, cap);
  overflowed += got.overflowTiles;
  const want = selectCausal(u, { k: K, window: W });
  for (let i = 0; i < T; i++) {
    const ws = want.selected[i];
    if (got.count[i] !== ws.length) throw new Error(`case ${cs} (T=${T} K=${K} W=${W} mode ${mode}) i=${i}: count ${got.count[i]} vs ${ws.length}`);
    for (let c = 0; c < ws.length; c++) if (got.sel[i * K + c] !== ws[c]) throw new Error(`case ${cs} i=${i}: sel differs at ${c}: ${got.sel.subarray(i * K, i * K + ws.length)} vs ${ws}`);
    const a = got.tau[i], b = want.tau[i];
    if (a === b) continue;
    const err = Math.abs(a - b) / Math.max(1, Math.abs(b));
    if (!(err < 1e-9)) throw new Error(`case ${cs} (T=${T} K=${K} W=${W} mode ${mode}) i=${i}: tau ${a} vs ${b}`);
    worstTau = Math.max(worstTau, err);
  }
  // du by the GPU's method from the CPU's gate gradients, against the CPU's du
  const shape = { B: 1, T, NH: 1, NKV: 1, HS: 4 };
  const q = Float32Array.from({ length: T * 4 }, () => r() * 2 - 1), k = Float32Array.from({ length: T * 4 }, () => r() * 2 - 1);
  const v = Float32Array.from({ length: T * 4 }, () => r() * 2 - 1), dout = Float32Array.from({ length: T * 4 }, () => r() * 2 - 1);
  const o = { k: K, window: W };
  const plan = planSparsek(u, shape, o);
  const cpuDu = new Float32Array(T);
  sparsekAttentionBackwardInto(new Float32Array(T * 4), new Float32Array(T * 4), new Float32Array(T * 4), cpuDu, dout, { q, k, v, u }, shape, o, plan);
  if (K === 0) continue;
  const e = intervals(u, got.thk, T, W);
  const off = new Int32Array(T + 1);
  for (let j = 0; j < T; j++) off[j + 1] = off[j] + Math.max(0, e[j] - (j + W));
  const dgk = new Float64Array(Math.max(1, off[T]));
  const mean = new Float64Array(T);
  patternAttentionBackward(new Float64Array(T * 4), new Float64Array(T * 4), new Float64Array(T * 4), dout, { q, k, v }, shape, sparsekPattern(plan, 1),
    (_b, _hq, i, n, dg) => {
      const nWin = n - got.count[i];
      let num = 0;
      for (let c = nWin; c < n; c++) {
        const j = got.sel[i * K + c - nWin];
        if (!(i >= j + W && i < e[j])) throw new Error(`case ${cs}: selected key ${j} of query ${i} outside its interval [${j + W}, ${e[j]})`);
        dgk[off[j] + i - (j + W)] = dg[c];
        if (u[j] > got.tau[i] && u[j] - got.tau[i] < 1) num += dg[c];
      }
      mean[i] = got.nfree[i] > 0 ? num / got.nfree[i] : 0;
    });
  const P = new Float64Array(T + 1);
  for (let i = 0; i < T; i++) P[i + 1] = P[i] + mean[i];
  let scale = 1e-12;
  for (const x of cpuDu) scale = Math.max(scale, Math.abs(x));
  for (let j = 0; j < T; j++) {
    const start = j + W;
    let du = 0;
    if (start < T) {
      const uj = u[j], ta = got.tau;
      let lo = 0, hi = T;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (uj - ta[mid] < 1) hi = mid; else lo = mid + 1; }
      const a = Math.max(start, lo);
      lo = 0; hi = T;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (!(uj > ta[mid])) hi = mid; else lo = mid + 1; }
      const en = lo;
      if (en > a) {
        let direct = 0;
        for (let i = a; i < Math.min(en, e[j]); i++) direct += dgk[off[j] + i - start];
        du = direct - (P[en] - P[a]);
      }
    }
    const err = Math.abs(f32(du) - cpuDu[j]) / scale;
    if (!(err < 1e-6)) throw new Error(`case ${cs} (T=${T} K=${K} W=${W} mode ${mode}) du[${j}] ${du} vs ${cpuDu[j]}`);
    worstDu = Math.max(worstDu, err);
  }
}
console.log(`${cases} cases agree with the CPU: selected sets exact, worst tau error ${worstTau.toExponential(2)} (relative), worst du error ${worstDu.toExponential(2)} (of max |du|); ${overflowed} tiles took the overflow path`);
