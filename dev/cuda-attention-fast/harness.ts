// What the SparseK attention lab benches share (bench.ts, bench-backward.ts here and
// dev/cuda-attention-wgmma/bench.ts): seeded N(0, 1) inputs, bf16 rounding, the awkward validation
// cases, the naive same-precision forward and the error measure it is judged by (STYLE.md: kernel error
// within 2x the naive one's), and the device helpers with the GPU selection the forward reads.
// Not a bench: importing it runs nothing, opens no device and prints nothing; each bench parses its own
// options, prints its own results and appends its own cases.

import { cudaAvailability } from '../../src/cuda/runtime.js';
import type { CudaRuntime, DeviceBlock } from '../../src/cuda/runtime.js';
import { selectSharedSource, selectGlobalSource, SELECT_BQ } from '../cuda-attention/selection-tiles.js';
import { sparsekAttentionForwardInto, sparsekPattern } from '../../src/cpu/kernels/attention.js';
import type { SparsekPlan } from '../../src/cpu/kernels/attention.js';
import type { AttentionShape } from '../../src/core/check.js';
import { compactRows } from './rows.js';
import { rng } from '../../test/helpers.js';

// ---- inputs ---------------------------------------------------------------------------------
// the tests' seeded generator (independent of src/core/random)
export { rng };
export const normal = (n: number, seed: number): Float32Array => {
  const r = rng(seed), a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  return a;
};
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
/** float -> bf16 bits, round to nearest even (finite inputs). */
export function bf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}
export function bf16(x: number): number {
  u32[0] = bf16Bits(x) << 16;
  return f32[0];
}
export const toBf16 = (a: Float32Array): Float32Array => a.map(bf16);
export const bitsOf = (a: Float32Array): Uint16Array => {
  const b = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) b[i] = bf16Bits(a[i]);
  return b;
};
/** bf16 bits -> float (exact): a bf16 output read back from the device. */
export const fromBits = (a: Uint16Array): Float32Array => Float32Array.from(a, (x) => { u32[0] = x << 16; return f32[0]; });

// ---- validation cases ---------------------------------------------------------------------------
export interface Case { name: string; shape: AttentionShape; K: number; W: number; u: 'normal' | 'tied' }
/** The awkward shapes every lab bench validates; a bench appends its own edge cases. */
export const cases: readonly Case[] = [
  { name: 'gqa', shape: { B: 1, T: 1000, NH: 4, NKV: 2, HS: 64 }, K: 100, W: 37, u: 'normal' },
  { name: 'bench-like', shape: { B: 1, T: 2048, NH: 2, NKV: 2, HS: 64 }, K: 512, W: 512, u: 'normal' },
  { name: 'W=0 B=2 HS=128', shape: { B: 2, T: 777, NH: 2, NKV: 1, HS: 128 }, K: 64, W: 0, u: 'normal' },
  { name: 'K>=T', shape: { B: 1, T: 300, NH: 2, NKV: 2, HS: 64 }, K: 1000, W: 64, u: 'normal' },
  { name: 'K=0', shape: { B: 1, T: 513, NH: 2, NKV: 1, HS: 64 }, K: 0, W: 100, u: 'normal' },
  { name: 'tied', shape: { B: 1, T: 700, NH: 2, NKV: 2, HS: 128 }, K: 50, W: 20, u: 'tied' },
  { name: 'T=1', shape: { B: 1, T: 1, NH: 1, NKV: 1, HS: 64 }, K: 5, W: 3, u: 'normal' },
];
/** u: (B, NKV, T) ~ N(0, 1), rounded to halves for the 'tied' cases. */
export const scoresOf = (c: Case, seed: number): Float32Array => {
  const n = c.shape.B * c.shape.NKV * c.shape.T;
  const z = normal(n, seed);
  return c.u === 'tied' ? z.map((x) => Math.round(x * 2) / 2) : z;
};

// ---- naive same-precision reference and error measure ---------------------------------------------
/**
 * Naive same-precision forward and float64 log-sum-exp, from the CPU rows: bf16 tensors between ops,
 * fp32 accumulation: s = bf16(q.k), a = bf16(softmax_fp32(s)), o = bf16(sum_fp32 bf16(a g) v).
 * out: (B, NH, T, HS); lse: (B, NH, T).
 */
export function naiveBf16(x: { q: Float32Array; k: Float32Array; v: Float32Array; u: Float32Array }, shape: AttentionShape, plan: SparsekPlan) {
  const { B, T, NH, NKV, HS } = shape;
  const out = new Float32Array(B * NH * T * HS), lse = new Float64Array(B * NH * T);
  const pattern = sparsekPattern(plan, NKV);
  const cols = new Int32Array(Math.max(1, pattern.maxKeys)), gates = new Float64Array(Math.max(1, pattern.maxKeys));
  const s = new Float64Array(cols.length), s64 = new Float64Array(cols.length), acc = new Float64Array(HS);
  const fr = Math.fround, scale = fr(1 / Math.sqrt(HS));
  for (let b = 0; b < B; b++) for (let hq = 0; hq < NH; hq++) {
    const h = Math.floor(hq / (NH / NKV)), kv = (b * NKV + h) * T * HS;
    for (let i = 0; i < T; i++) {
      const qi = ((b * NH + hq) * T + i) * HS;
      const n = pattern.row(b, h, i, cols, gates);
      let mx = -Infinity, mx64 = -Infinity;
      for (let c = 0; c < n; c++) {
        let d = 0, d64 = 0;
        for (let e = 0; e < HS; e++) { d = fr(d + fr(x.q[qi + e] * x.k[kv + cols[c] * HS + e])); d64 += x.q[qi + e] * x.k[kv + cols[c] * HS + e]; }
        s[c] = bf16(fr(d * scale));
        s64[c] = d64 / Math.sqrt(HS);
        mx = Math.max(mx, s[c]);
        mx64 = Math.max(mx64, s64[c]);
      }
      let sum = 0, sum64 = 0;
      for (let c = 0; c < n; c++) { s[c] = fr(Math.exp(s[c] - mx)); sum = fr(sum + s[c]); sum64 += Math.exp(s64[c] - mx64); }
      lse[(b * NH + hq) * T + i] = n > 0 ? mx64 + Math.log(sum64) : -Infinity;
      acc.fill(0);
      for (let c = 0; c < n; c++) {
        const w = bf16(fr(bf16(fr(s[c] / sum)) * fr(gates[c])));
        for (let e = 0; e < HS; e++) acc[e] = fr(acc[e] + fr(w * x.v[kv + cols[c] * HS + e]));
      }
      for (let e = 0; e < HS; e++) out[qi + e] = bf16(acc[e]);
    }
  }
  return { out, lse };
}

/** max|err| / max|ref| and rms(err) / rms(ref); entries -Infinity on both sides (empty rows' lse) are skipped. */
export function errors(got: ArrayLike<number>, want: ArrayLike<number>): { max: number; rms: number } {
  let scale = 0, worst = 0, se = 0, sr = 0, n = 0;
  for (let i = 0; i < want.length; i++) {
    if (want[i] === -Infinity && got[i] === -Infinity) continue;
    scale = Math.max(scale, Math.abs(want[i]));
    const d = Math.abs(got[i] - want[i]);
    worst = Math.max(worst, Number.isNaN(d) ? Infinity : d);
    se += d * d; sr += want[i] * want[i]; n++;
  }
  return { max: scale > 0 ? worst / scale : worst, rms: sr > 0 ? Math.sqrt(se / sr) : Math.sqrt(se / Math.max(1, n)) };
}
export const fmt = (e: { max: number; rms: number }) => `${e.max.toExponential(2)} / ${e.rms.toExponential(2)}`;

/**
 * A case's inputs (q: (B, NH, T, HS), k, v: (B, NKV, T, HS), bf16-rounded; u: (B, NKV, T)), the float64
 * CPU forward ref: (B, NH, T, HS), the naive same-precision forward and the naive forward's error.
 */
export function caseReference(c: Case) {
  const { shape } = c;
  const { B, T, NH, NKV, HS } = shape;
  const nq = B * NH * T * HS, nkv = B * NKV * T * HS;
  const q = toBf16(normal(nq, 1)), k = toBf16(normal(nkv, 2)), v = toBf16(normal(nkv, 3)), u = scoresOf(c, 5);
  const ref = new Float64Array(nq);
  const plan = sparsekAttentionForwardInto(ref, { q, k, v, u }, shape, { k: c.K, window: c.W });
  const naive = naiveBf16({ q, k, v, u }, shape, plan);
  const eNaive = errors(naive.out, ref);
  return { q, k, v, u, ref, naive, eNaive };
}

// ---- device --------------------------------------------------------------------------------------
/** The CUDA runtime, or, without a device, the reason printed and the process ended. */
export function cudaOrExit(): CudaRuntime {
  const avail = cudaAvailability();
  if (!avail.available) {
    console.log(`no CUDA device: ${avail.reason}`);
    process.exit();
  }
  return avail.runtime;
}

/** Copies, CUDA-event timing and the GPU selection on rt's arena and stream. */
export function deviceHelpers(rt: CudaRuntime) {
  const take = (bytes: number): DeviceBlock => rt.arena.take(Math.max(bytes, 4));
  function put(host: ArrayBufferView): DeviceBlock {
    const b = take(host.byteLength);
    if (host.byteLength > 0) rt.cu('cuMemcpyHtoDAsync_v2', b.ptr, host, host.byteLength, rt.stream);
    rt.synchronize();
    return b;
  }
  function get<A extends Float32Array | Float64Array | Uint16Array | Int32Array | BigUint64Array>(b: DeviceBlock, host: A): A {
    if (host.byteLength > 0) rt.cu('cuMemcpyDtoHAsync_v2', host, b.ptr, host.byteLength, rt.stream);
    rt.synchronize();
    return host;
  }
  /** Median ms of reps runs of fn, after two warm-up runs. */
  function timeMs(fn: () => void, reps: number): number {
    const start = rt.createEvent(), end = rt.createEvent();
    fn();
    fn();
    const ms: number[] = [];
    for (let r = 0; r < reps; r++) {
      rt.record(start);
      fn();
      rt.record(end);
      ms.push(rt.elapsedMs(start, end));
    }
    rt.destroyEvent(start);
    rt.destroyEvent(end);
    ms.sort((a, b) => a - b);
    return ms[Math.floor(ms.length / 2)];
  }

  /** The selection of every (b, KV head) row, by the existing kernels; run() re-launches them. u: (BH, T). */
  function selection(u: DeviceBlock, BH: number, T: number, Kp: number, Wp: number) {
    const ntiles = Math.ceil(T / SELECT_BQ), cap = 4096;
    const jbits = T > 1 ? 32 - Math.clz32(T - 1) : 0;
    const tau = take(BH * T * 8), thk = take(BH * T * 8), count = take(BH * T * 4), nfree = take(BH * T * 4), sel = take(BH * T * Kp * 4);
    const flags = take(BH * ntiles * 4);
    let capG = 1;
    while (capG < T) capG *= 2;
    const G = Math.min(rt.multiprocessors, ntiles * BH);
    const scratch = take(G * 2 * capG * 8);
    const shared = rt.kernel(selectSharedSource({ CAP: cap }));
    rt.cu('cuFuncSetAttribute', shared.fn, 8, 16 * cap);
    const global = rt.kernel(selectGlobalSource());
    const run = (): void => {
      rt.launch(shared, [ntiles, BH, 1], SELECT_BQ, 16 * cap, [tau.ptr, thk.ptr, count.ptr, nfree.ptr, sel.ptr, flags.ptr, u.ptr, T, Kp, Wp, jbits]);
      rt.launch(global, G, SELECT_BQ, 0, [tau.ptr, thk.ptr, count.ptr, nfree.ptr, sel.ptr, flags.ptr, scratch.ptr, u.ptr, T, Kp, Wp, jbits, ntiles, BH, capG]);
    };
    run();
    const blocks = compactRows(rt, sel, BH, T, Kp); // the rows the kernel reads
    const flagged = get(flags, new Int32Array(BH * ntiles)).reduce((a, b) => a + b, 0);
    const free = (): void => { for (const b of [tau, thk, count, nfree, sel, blocks, flags, scratch]) rt.arena.give(b); };
    return { tau, thk, count, sel, blocks, run, free, flagged, ntiles: BH * ntiles };
  }

  return { take, put, get, timeMs, selection };
}
