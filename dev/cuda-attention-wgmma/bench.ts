// Harness for the Hopper wgmma SparseK forward (kernel.ts), side by side with the production mma.sync
// kernel (src/cuda/kernels/attention-tc.ts) in the same process: layout probe, validation, timing.
// Helpers (inputs, selection, naive bf16 reference, error measure) are copied from
// dev/cuda-attention-fast/bench.ts, this project's lab harness.
//
//   node --import tsx dev/cuda-attention-wgmma/bench.ts [--T 4096,16384,65536] [--NH 16] [--NKV 16]
//        [--HS 64,128] [--K 512] [--W 512] [--repeats 20] [--skip-validate] [--wg ov3,ser3,ov4]
//        [--out FILE] (JSON lines also appended to FILE) [--probe FILE] (probe-main.ts results to use)
//
// 1. probe (probe.ts): one S-like and one PV-like wgmma product against exact CPU products, both
//    descriptor readings; the kernels below use the reading that passed (KSWAP / VSWAP).
// 2. validate: the fast lab's cases (GQA, T = 2048 K = W = 512, W = 0 with B = 2 and HS = 128, K >= T,
//    K = 0, tied scores, T = 1), fp32 and bf16 outputs, against the float64 CPU reference next to a
//    naive same-precision implementation; STYLE.md bound: kernel error within 2x the naive error, and
//    lse within 1e-4 of float64.
// 3. time: B = 1, NH = NKV = 16, K = W = 512; CUDA events, median of repeats; TFLOP/s = 4 HS (attended
//    pairs) / time; tile TFLOP/s counts the work the 64 x 64 tiles do, masked entries included.
// One JSON object per line per result.

import { appendFileSync, readFileSync } from 'node:fs';
import { cudaAvailability } from '../../src/cuda/runtime.js';
import type { CudaRuntime, DeviceBlock, Kernel, KernelSource } from '../../src/cuda/runtime.js';
import { selectSharedSource, selectGlobalSource, SELECT_BQ } from '../cuda-attention/selection-tiles.js';
import { sparsekAttentionForwardInto, sparsekPattern } from '../../src/cpu/kernels/attention.js';
import type { SparsekPlan } from '../../src/cpu/kernels/attention.js';
import type { AttentionShape } from '../../src/core/check.js';
import { fastForwardShared, fastForwardSource } from '../../src/cuda/kernels/attention-tc.js';
import type { FastForwardVariant } from '../../src/cuda/kernels/attention-tc.js';
import { compactRows } from '../cuda-attention-fast/rows.js';
import { wgmmaForwardShared, wgmmaForwardSource } from './kernel.js';
import type { WgmmaForwardVariant } from './kernel.js';
import { runProbes } from './probe.js';
import type { ProbeResult } from './probe.js';

const args = process.argv.slice(2);
const known = new Set(['T', 'NH', 'NKV', 'HS', 'K', 'W', 'repeats', 'skip-validate', 'wg', 'out', 'probe']);
for (const a of args) if (a.startsWith('--') && !known.has(a.slice(2))) throw new Error(`unknown option ${a}`);
const opt = (name: string, dflt: string): string => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : dflt);
const Ts = opt('T', '4096,16384,65536').split(',').map(Number);
const NH = Number(opt('NH', '16')), NKV = Number(opt('NKV', '16'));
const HSs = opt('HS', '64,128').split(',').map(Number) as (64 | 128)[];
const K = Number(opt('K', '512')), W = Number(opt('W', '512')), repeats = Number(opt('repeats', '20'));
const outFile = opt('out', '');
/** wgmma schedules: ov (OVERLAP) or ser, then STAGES, then f for FENCE2, p for PLAIN (e.g. ov3, ser2, ov2f, ov2p). */
const wgSpecs = opt('wg', 'ov3,ser3,ov4').split(',').map((x) => ({ OVERLAP: x.startsWith('ov'), STAGES: Number(x.replace(/\D/g, '')) as 2 | 3 | 4, FENCE2: x.includes('f'), PLAIN: x.includes('p') }));

function emit(obj: Record<string, unknown>): void {
  const line = JSON.stringify(obj);
  console.log(line);
  if (outFile) appendFileSync(outFile, line + '\n');
}

// ---- inputs ---------------------------------------------------------------------------------
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    s = (s ^ (s >>> 12)) >>> 0;
    return s / 2 ** 32;
  };
}
const normal = (n: number, seed: number): Float32Array => {
  const r = rng(seed), a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  return a;
};
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
/** float -> bf16 bits, round to nearest even (finite inputs). */
function bf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}
function bf16(x: number): number {
  u32[0] = bf16Bits(x) << 16;
  return f32[0];
}
const toBf16 = (a: Float32Array): Float32Array => a.map(bf16);
const bitsOf = (a: Float32Array): Uint16Array => {
  const b = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) b[i] = bf16Bits(a[i]);
  return b;
};

interface Case { name: string; shape: AttentionShape; K: number; W: number; u: 'normal' | 'tied' }
const cases: Case[] = [
  { name: 'gqa', shape: { B: 1, T: 1000, NH: 4, NKV: 2, HS: 64 }, K: 100, W: 37, u: 'normal' },
  { name: 'bench-like', shape: { B: 1, T: 2048, NH: 2, NKV: 2, HS: 64 }, K: 512, W: 512, u: 'normal' },
  { name: 'W=0 B=2 HS=128', shape: { B: 2, T: 777, NH: 2, NKV: 1, HS: 128 }, K: 64, W: 0, u: 'normal' },
  { name: 'K>=T', shape: { B: 1, T: 300, NH: 2, NKV: 2, HS: 64 }, K: 1000, W: 64, u: 'normal' },
  { name: 'K=0', shape: { B: 1, T: 513, NH: 2, NKV: 1, HS: 64 }, K: 0, W: 100, u: 'normal' },
  { name: 'tied', shape: { B: 1, T: 700, NH: 2, NKV: 2, HS: 128 }, K: 50, W: 20, u: 'tied' },
  { name: 'T=1', shape: { B: 1, T: 1, NH: 1, NKV: 1, HS: 64 }, K: 5, W: 3, u: 'normal' },
];
const scoresOf = (c: Case, seed: number): Float32Array => {
  const n = c.shape.B * c.shape.NKV * c.shape.T;
  const z = normal(n, seed);
  return c.u === 'tied' ? z.map((x) => Math.round(x * 2) / 2) : z;
};


const avail = cudaAvailability();
if (!avail.available) {
  console.log(`no CUDA device: ${avail.reason}`);
  process.exit();
}
const rt: CudaRuntime = avail.runtime;
const device = `${rt.name} (${rt.arch}), ${rt.multiprocessors} SMs, driver ${rt.driverVersion}, NVRTC ${rt.nvrtcVersion.join('.')}`;
emit({ kind: 'device', device, date: new Date().toISOString() });

// ---- device helpers ---------------------------------------------------------------------------
const take = (bytes: number): DeviceBlock => rt.arena.take(Math.max(bytes, 4));
function put(host: ArrayBufferView): DeviceBlock {
  const b = take(host.byteLength);
  if (host.byteLength > 0) rt.cu('cuMemcpyHtoDAsync_v2', b.ptr, host, host.byteLength, rt.stream);
  rt.synchronize();
  return b;
}
function get<A extends Float32Array | Uint16Array | Int32Array>(b: DeviceBlock, host: A): A {
  if (host.byteLength > 0) rt.cu('cuMemcpyDtoHAsync_v2', host, b.ptr, host.byteLength, rt.stream);
  rt.synchronize();
  return host;
}
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

/** The selection of every (b, KV head) row, by the existing kernels; run() re-launches them. */
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


// ---- 1. probe ---------------------------------------------------------------------------------
const swaps = new Map<number, { KSWAP: boolean; VSWAP: boolean } | null>();
{
  // --probe FILE: the JSON lines of probe-main.ts runs (one process per probe, so a fault loses one);
  // without it the probes run here
  const file = opt('probe', '');
  const res: ProbeResult[] = file
    ? readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l)).filter((r) => r.kind === 'probe')
    : runProbes(rt);
  for (const r of res) emit({ ...r, kind: 'probe' });
  for (const HS of [64, 128]) {
    const mine = res.filter((r) => r.HS === HS);
    const ss = mine.find((r) => r.ssBad === 0), rs = mine.find((r) => r.rsBad === 0);
    swaps.set(HS, ss && rs ? { KSWAP: ss.swap, VSWAP: rs.swap } : null);
    emit({ kind: 'probe-choice', HS, choice: swaps.get(HS) ?? 'none passed: wgmma kernel skipped' });
  }
}

// ---- kernels under test ------------------------------------------------------------------------
interface Under { label: string; src: KernelSource; block: number; shared: (K: number, W: number) => number }
function variantsFor(HS: 64 | 128, OUT: 'f32' | 'bf16'): Under[] {
  const prod: FastForwardVariant = { HS, BQ: 64, OUT, META: 'all', STAGES: 2, FASTEXP: true, MINB: HS === 64 ? 4 : 0 };
  const list: Under[] = [{ label: `mma.sync ${fastForwardSource(prod).name}`, src: fastForwardSource(prod), block: 128, shared: (k, w) => fastForwardShared(prod, k, w) }];
  const sw = swaps.get(HS);
  if (sw) {
    for (const spec of wgSpecs) {
      const v: WgmmaForwardVariant = { HS, OUT, ...spec, ...sw };
      const src = wgmmaForwardSource(v);
      list.push({ label: `wgmma ${src.name}`, src, block: 128, shared: (k, w) => wgmmaForwardShared(v, k, w) });
    }
  }
  return list;
}
const loaded = new Map<string, Kernel>();
function kernelOf(u: Under): Kernel {
  let k = loaded.get(u.src.name);
  if (k === undefined) {
    k = rt.kernel(u.src);
    rt.cu('cuFuncSetAttribute', k.fn, 8, 200 * 1024);
    loaded.set(u.src.name, k);
    emit({ kind: 'kernel', name: u.src.name, registers: k.registers, localBytes: k.localBytes });
  }
  return k;
}
function launch(u: Under, out: DeviceBlock, lse: DeviceBlock, q: DeviceBlock, k: DeviceBlock, v: DeviceBlock, uu: DeviceBlock,
  s: ReturnType<typeof selection>, shape: AttentionShape, Kp: number, Wp: number): void {
  rt.launch(kernelOf(u), [Math.ceil(shape.T / 64), shape.NH, shape.B], u.block, u.shared(Kp, Wp),
    [out.ptr, lse.ptr, q.ptr, k.ptr, v.ptr, uu.ptr, s.tau.ptr, s.thk.ptr, s.count.ptr, s.blocks.ptr, shape.T, shape.NH, shape.NKV, Kp, Wp, 1 / Math.sqrt(shape.HS)]);
}

// ---- 2. validation -------------------------------------------------------------------------------
/** Naive same-precision forward (see the header) and float64 log-sum-exp, from the CPU rows. */
function naiveBf16(x: { q: Float32Array; k: Float32Array; v: Float32Array; u: Float32Array }, shape: AttentionShape, plan: SparsekPlan) {
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

function errors(got: ArrayLike<number>, want: ArrayLike<number>): { max: number; rms: number } {
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

if (!args.includes('--skip-validate')) {
  let fails = 0;
  for (const c of cases) {
    const { shape } = c;
    const { B, T, NH, NKV, HS } = shape;
    const nq = B * NH * T * HS, nkv = B * NKV * T * HS;
    const q = toBf16(normal(nq, 1)), k = toBf16(normal(nkv, 2)), v = toBf16(normal(nkv, 3)), u = scoresOf(c, 5);
    const ref = new Float64Array(nq);
    const plan = sparsekAttentionForwardInto(ref, { q, k, v, u }, shape, { k: c.K, window: c.W });
    const naive = naiveBf16({ q, k, v, u }, shape, plan);
    const eNaive = errors(naive.out, ref);
    const dq = put(bitsOf(q)), dk = put(bitsOf(k)), dv = put(bitsOf(v)), du = put(u);
    const s = selection(du, B * NKV, T, c.K, c.W);
    const lse = take(B * NH * T * 4);
    for (const OUT of ['f32', 'bf16'] as const) for (const un of variantsFor(HS as 64 | 128, OUT)) {
      const out = take(nq * (OUT === 'f32' ? 4 : 2));
      rt.cu('cuMemsetD32Async', out.ptr, 0x7fc00000, Math.floor(out.bytes / 4), rt.stream); // NaN: unwritten shows
      launch(un, out, lse, dq, dk, dv, du, s, shape, c.K, c.W);
      const got = OUT === 'f32' ? get(out, new Float32Array(nq)) : Float32Array.from(get(out, new Uint16Array(nq)), (x) => { u32[0] = x << 16; return f32[0]; });
      const e = errors(got, ref), eL = errors(get(lse, new Float32Array(B * NH * T)), naive.lse);
      const ok = e.max <= 2 * eNaive.max + 1e-6 && e.rms <= 2 * eNaive.rms + 1e-6 && eL.max < 1e-4;
      if (!ok) fails++;
      emit({ kind: 'validate', case: c.name, B, T, NH, NKV, HS, K: c.K, W: c.W, kernel: un.label, OUT,
        maxRel: +e.max.toExponential(2), rmsRel: +e.rms.toExponential(2), naiveMax: +eNaive.max.toExponential(2), naiveRms: +eNaive.rms.toExponential(2),
        lseErr: +eL.max.toExponential(1), ok });
      rt.arena.give(out);
    }
    s.free();
    for (const b of [dq, dk, dv, du, lse]) rt.arena.give(b);
  }
  emit({ kind: 'validate-summary', fails });
  if (fails > 0) process.exitCode = 1;
}

// ---- 3. timing ---------------------------------------------------------------------------------
for (const HS of HSs) {
  for (const T of Ts) {
    const shape: AttentionShape = { B: 1, T, NH, NKV, HS };
    const nq = NH * T * HS, nkv = NKV * T * HS;
    const dq = put(bitsOf(normal(nq, 11))), dk = put(bitsOf(normal(nkv, 12))), dv = put(bitsOf(normal(nkv, 13)));
    const du = put(normal(NKV * T, 15));
    const s = selection(du, NKV, T, K, W);
    const count = get(s.count, new Int32Array(NKV * T));
    let pairs = 0;
    for (let i = 0; i < T; i++) pairs += Math.min(W, i + 1) * NKV;
    for (const c of count) pairs += c;
    pairs *= NH / NKV;
    let tilePairs = 0;
    for (let h = 0; h < NKV; h++) for (let i0 = 0; i0 < T; i0 += 64) {
      const range = Math.min(T, i0 + 64) - Math.max(0, i0 - W + 1);
      tilePairs += (Math.ceil(count[h * T + i0] / 64) + Math.ceil(range / 64)) * 64 * 64;
    }
    tilePairs *= NH / NKV;
    const out = take(nq * 4), lse = take(NH * T * 4);
    for (const un of variantsFor(HS, 'f32')) {
      const ms = timeMs(() => launch(un, out, lse, dq, dk, dv, du, s, shape, K, W), repeats);
      emit({ kind: 'time', kernel: un.label, B: 1, T, NH, NKV, HS, K, W, OUT: 'f32', ms: +ms.toFixed(4),
        tflops: +((4 * HS * pairs) / (ms * 1e-3) / 1e12).toFixed(1), tileTflops: +((4 * HS * tilePairs) / (ms * 1e-3) / 1e12).toFixed(1) });
    }
    s.free();
    for (const b of [dq, dk, dv, du, out, lse]) rt.arena.give(b);
  }
}
