// Harness for the tiled tensor-core SparseK forward (kernel.ts): checks, validation, timing.
//
//   node --import tsx dev/cuda-attention-fast/bench.ts [--T 4096,16384,65536] [--NH 16] [--NKV 16]
//        [--HS 64,128] [--K 512] [--W 512] [--repeats 20] [--skip-validate]
//        [--variants 64:64:tile:2:0:e,64:64:all:2:0:f,...]   HS:BQ:META:STAGES:MINB:exp[:r] (e exp2f, f ex2.approx;
//        r: MASK rows)
//
// 1. emulate (no GPU needed): the kernel's key set per block (Sel_{i0} then the range
//    [i0 - W + 1, i0 + BQ)) and its per-(query, key) mask rule, in TypeScript, against the CPU
//    reference's rows (src/cpu/kernels/attention.ts sparsekPattern): same keys, same gates, no key twice.
// 2. validate (GPU): selection by the existing kernels (src/cuda/kernels/selection.ts), then the fast
//    forward, against the float64 CPU reference on bf16-rounded q, k, v (sparsekAttentionForwardInto),
//    next to a naive same-precision implementation (bf16 tensors between ops, fp32 accumulation:
//    s = bf16(q.k), a = bf16(softmax_fp32(s)), o = bf16(sum_fp32 bf16(a g) v)). STYLE.md: the
//    kernel's error must be within 2x the naive one's. Awkward shapes: GQA, T not a multiple of
//    BQ, W = 0, K >= T, K = 0, tied scores, HS = 128, B = 2.
// 3. time (GPU, CUDA events on the runtime's stream, median of repeats): selection (the existing
//    kernels, as CudaBackend launches them) and the forward for each variant, at B = 1 and the given
//    shapes; TFLOP/s on the work done, 4 HS FLOP per attended (query, key) pair (exact pair count).
// Inputs like .device/peers.py: q, k, v ~ N(0, 1) in bf16; u ~ N(0, 1) fp32.

import { cudaAvailability } from '../../src/cuda/runtime.js';
import type { CudaRuntime, DeviceBlock, Kernel } from '../../src/cuda/runtime.js';
import { selectSharedSource, selectGlobalSource, SELECT_BQ } from '../cuda-attention/selection-tiles.js';
import { planSparsek, sparsekAttentionForwardInto, sparsekPattern } from '../../src/cpu/kernels/attention.js';
import type { SparsekPlan } from '../../src/cpu/kernels/attention.js';
import type { AttentionShape } from '../../src/core/check.js';
import { fastForwardName, fastForwardShared, fastForwardSource } from '../../src/cuda/kernels/attention-tc.js';
import { compactRows } from './rows.js';
import type { FastForwardVariant } from '../../src/cuda/kernels/attention-tc.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : dflt);
const Ts = opt('T', '4096,16384,65536').split(',').map(Number);
const NH = Number(opt('NH', '16')), NKV = Number(opt('NKV', '16'));
const HSs = opt('HS', '64').split(',').map(Number);
const K = Number(opt('K', '512')), W = Number(opt('W', '512')), repeats = Number(opt('repeats', '20'));
const variants: FastForwardVariant[] = opt('variants',
  '64:64:tile:2:0:e,64:64:all:2:0:f,64:64:all:3:0:f,64:64:all:2:4:f,64:128:all:2:0:f,128:64:tile:2:0:e,128:64:all:2:0:f,128:64:all:3:0:f')
  .split(',').map((v) => {
    const [hs, bq, meta, stages, minb, ex, mask] = v.split(':');
    return { HS: Number(hs) as 64 | 128, BQ: Number(bq) as 64 | 128, OUT: 'bf16', META: meta as 'tile' | 'all',
      STAGES: Number(stages) as 2 | 3, MINB: Number(minb), FASTEXP: ex === 'f', MASK: mask === 'r' ? 'rows' : 'key' };
  });

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

// ---- 1. emulation of the kernel's key set and mask (no GPU) ------------------------------------
const ordKey = (u: number, j: number): [number, number] => [Math.fround(u) === 0 ? 0 : Math.fround(u), j];
const geKey = (a: [number, number], b: [number, number]): boolean => a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]);

/**
 * thk_i as (u, j) of Sel_i's weakest member, or null when every candidate is selected (the kernel's 0);
 * (+inf, 0) when none is (K = 0: the selection kernel writes ~0).
 */
function weakest(plan: SparsekPlan, bh: number, i: number): [number, number] | null {
  const f = plan.sel[bh], T = plan.T, Kp = plan.K, Wp = plan.W;
  const nCand = Math.max(0, (Wp > 0 ? i - Wp : i) + 1);
  if (f.count[i] >= nCand) return null;
  let best: [number, number] = [Infinity, 0];
  for (let c = 0; c < f.count[i]; c++) {
    const j = f.sel[i * Kp + c];
    const key = ordKey(plan.u[bh * T + j] as number, j);
    if (geKey(best, key)) best = key;
  }
  return best;
}

/** MASK 'rows': the block rows [a, b) that attend key x of the block, gated from row g on (the kernel's precompute). */
function rowRanges(keys: number[], nsel: number, i0: number, BQ: number, Wp: number, T: number, u: Float32Array, bh: number,
  thk: ([number, number] | null)[]): { a: number; b: number; g: number }[] {
  // rows past T never select (the kernel's ~0); thk is null (the kernel's 0) when all are selected
  const selects = (r: number, kj: [number, number]): boolean => i0 + r < T && (thk[i0 + r] === null || geKey(kj, thk[i0 + r]!));
  return keys.map((j, x) => {
    const kj = ordKey(u[bh * T + j], j);
    let hs = 0, z = BQ; // binary search, as the kernel (relies on thk never decreasing with i)
    while (hs < z) {
      const mid = (hs + z) >> 1;
      if (selects(mid, kj)) hs = mid + 1;
      else z = mid;
    }
    if (x < nsel) return { a: 0, b: hs, g: 0 };
    const wend = Math.min(BQ, Math.max(0, j + Wp - i0));
    return { a: Math.min(BQ, Math.max(0, j - i0)), b: Math.max(wend, hs), g: wend };
  });
}

function emulate(shape: AttentionShape, Kp: number, Wp: number, BQ: number, u: Float32Array, rule: 'key' | 'rows' = 'key'): string | null {
  const { B, T } = shape;
  const plan = planSparsek(u, shape, { k: Kp, window: Wp });
  const pattern = sparsekPattern(plan, shape.NKV);
  const cols = new Int32Array(Math.max(1, pattern.maxKeys)), gates = new Float64Array(Math.max(1, pattern.maxKeys));
  for (let bh = 0; bh < B * shape.NKV; bh++) {
    const f = plan.sel[bh];
    const thk = Array.from({ length: T }, (_, i) => weakest(plan, bh, i));
    for (let i0 = 0; i0 < T; i0 += BQ) {
      const keys: number[] = [];
      for (let c = 0; c < f.count[i0]; c++) keys.push(f.sel[i0 * Kp + c]);
      const nsel = keys.length;
      for (let j = Math.max(0, i0 - Wp + 1); j < Math.min(T, i0 + BQ); j++) keys.push(j);
      const ranges = rule === 'rows' ? rowRanges(keys, nsel, i0, BQ, Wp, T, u, bh, thk) : null;
      for (let i = i0; i < Math.min(T, i0 + BQ); i++) {
        const got = new Map<number, number>();
        keys.forEach((j, x) => {
          const kj = ordKey(u[bh * T + j], j);
          const sel = thk[i] === null || geKey(kj, thk[i]!);
          const gate = Math.min(1, Math.max(0, Math.fround(u[bh * T + j]) - Math.fround(f.tau[i])));
          let inMask: boolean, g = 1;
          if (ranges !== null) {
            const r = i - i0, { a, b, g: from } = ranges[x];
            inMask = r >= a && r < b;
            if (r >= from) g = gate;
          } else if (x < nsel) { inMask = sel; g = gate; }
          else {
            const win = j > i - Wp;
            inMask = j <= i && (win || (j > i0 - Wp && sel));
            if (!win) g = gate;
          }
          if (inMask) {
            if (got.has(j)) throw new Error(`key ${j} twice for query ${i}`);
            got.set(j, g);
          }
        });
        const n = pattern.row(Math.floor(bh / shape.NKV), bh % shape.NKV, i, cols, gates);
        if (n !== got.size) return `bh ${bh} query ${i}: ${got.size} keys, reference ${n}`;
        for (let c = 0; c < n; c++) {
          const g = got.get(cols[c]);
          if (g === undefined) return `bh ${bh} query ${i}: key ${cols[c]} missing`;
          if (Math.abs(g - gates[c]) > 1e-6) return `bh ${bh} query ${i} key ${cols[c]}: gate ${g}, reference ${gates[c]}`;
        }
      }
    }
  }
  return null;
}

interface Case { name: string; shape: AttentionShape; K: number; W: number; u: 'normal' | 'tied' }
const cases: Case[] = [
  { name: 'gqa', shape: { B: 1, T: 1000, NH: 4, NKV: 2, HS: 64 }, K: 100, W: 37, u: 'normal' },
  { name: 'bench-like', shape: { B: 1, T: 2048, NH: 2, NKV: 2, HS: 64 }, K: 512, W: 512, u: 'normal' },
  { name: 'W=0 B=2 HS=128', shape: { B: 2, T: 777, NH: 2, NKV: 1, HS: 128 }, K: 64, W: 0, u: 'normal' },
  { name: 'K>=T', shape: { B: 1, T: 300, NH: 2, NKV: 2, HS: 64 }, K: 1000, W: 64, u: 'normal' },
  { name: 'K=0', shape: { B: 1, T: 513, NH: 2, NKV: 1, HS: 64 }, K: 0, W: 100, u: 'normal' },
  { name: 'tied', shape: { B: 1, T: 700, NH: 2, NKV: 2, HS: 128 }, K: 50, W: 20, u: 'tied' },
  { name: 'T=1', shape: { B: 1, T: 1, NH: 1, NKV: 1, HS: 64 }, K: 5, W: 3, u: 'normal' },
  { name: 'dense (W = T)', shape: { B: 1, T: 300, NH: 2, NKV: 1, HS: 64 }, K: 0, W: 300, u: 'normal' },
];
const scoresOf = (c: Case, seed: number): Float32Array => {
  const n = c.shape.B * c.shape.NKV * c.shape.T;
  const z = normal(n, seed);
  return c.u === 'tied' ? z.map((x) => Math.round(x * 2) / 2) : z;
};

{
  const t0 = performance.now();
  let bad = 0;
  for (const c of cases) {
    for (const BQ of [64, 128]) {
      for (const rule of ['key', 'rows'] as const) {
        const err = emulate(c.shape, c.K, c.W, BQ, scoresOf(c, 5), rule);
        if (err !== null) { bad++; console.log(`emulate ${c.name} BQ=${BQ} MASK ${rule}: ${err}`); }
      }
    }
  }
  console.log(`emulate: key sets and masks (both MASK rules) of ${cases.length} cases x BQ 64, 128 ${bad === 0 ? 'match the CPU rows' : 'FAILED'} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  if (bad > 0) process.exitCode = 1;
}

const avail = cudaAvailability();
if (!avail.available) {
  console.log(`no CUDA device: ${avail.reason}`);
  process.exit();
}
const rt: CudaRuntime = avail.runtime;
console.log(`# ${rt.name} (${rt.arch}), ${rt.multiprocessors} SMs, driver ${rt.driverVersion}, NVRTC ${rt.nvrtcVersion.join('.')}, ${new Date().toISOString()}`);

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

const loaded = new Map<string, Kernel>();
function fastKernel(o: FastForwardVariant): Kernel {
  const src = fastForwardSource(o);
  let k = loaded.get(src.name);
  if (k === undefined) {
    k = rt.kernel(src);
    rt.cu('cuFuncSetAttribute', k.fn, 8, 200 * 1024);
    loaded.set(src.name, k);
    console.log(`# ${src.name}: ${k.registers} registers, ${k.localBytes} local bytes`);
  }
  return k;
}

function launchFast(o: FastForwardVariant, out: DeviceBlock, lse: DeviceBlock, q: DeviceBlock, k: DeviceBlock, v: DeviceBlock, u: DeviceBlock,
  s: ReturnType<typeof selection>, shape: AttentionShape, Kp: number, Wp: number): void {
  const kern = fastKernel(o);
  rt.launch(kern, [Math.ceil(shape.T / o.BQ), shape.NH, shape.B], 2 * o.BQ, fastForwardShared(o, Kp, Wp),
    [out.ptr, lse.ptr, q.ptr, k.ptr, v.ptr, u.ptr, s.tau.ptr, s.thk.ptr, s.count.ptr, s.blocks.ptr, shape.T, shape.NH, shape.NKV, Kp, Wp, 1 / Math.sqrt(shape.HS)]);
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
  const fmt = (e: { max: number; rms: number }) => `${e.max.toExponential(2)} / ${e.rms.toExponential(2)}`;
  console.log('\nvalidate: error vs float64 CPU reference on bf16-rounded inputs, as max|err|/max|ref| / rms(err)/rms(ref)');
  for (const c of cases) {
    const { shape } = c;
    const { B, T, NH, NKV, HS } = shape;
    const nq = B * NH * T * HS, nkv = B * NKV * T * HS, nu = B * NKV * T;
    const q = toBf16(normal(nq, 1)), k = toBf16(normal(nkv, 2)), v = toBf16(normal(nkv, 3)), u = scoresOf(c, 5);
    const ref = new Float64Array(nq);
    const plan = sparsekAttentionForwardInto(ref, { q, k, v, u }, shape, { k: c.K, window: c.W });
    const naive = naiveBf16({ q, k, v, u }, shape, plan);
    const eNaive = errors(naive.out, ref);
    const dq = put(bitsOf(q)), dk = put(bitsOf(k)), dv = put(bitsOf(v)), du = put(u);
    const s = selection(du, B * NKV, T, c.K, c.W);
    const lse = take(B * NH * T * 4);
    for (const v of variants) for (const OUT of ['f32', 'bf16'] as const) {
      if (v.HS !== HS) continue;
      const o: FastForwardVariant = { ...v, OUT };
      const out = take(nq * (OUT === 'f32' ? 4 : 2));
      launchFast(o, out, lse, dq, dk, dv, du, s, shape, c.K, c.W);
      const got = OUT === 'f32' ? get(out, new Float32Array(nq)) : Float32Array.from(get(out, new Uint16Array(nq)), (x) => { u32[0] = x << 16; return f32[0]; });
      const e = errors(got, ref), eL = errors(get(lse, new Float32Array(B * NH * T)), naive.lse);
      const ok = e.max <= 2 * eNaive.max + 1e-6 && e.rms <= 2 * eNaive.rms + 1e-6 && eL.max < 1e-4;
      console.log(`  ${c.name.padEnd(15)} B=${B} T=${T} NH=${NH} NKV=${NKV} HS=${HS} K=${c.K} W=${c.W} ${fastForwardName(o).padEnd(40)}: kernel ${fmt(e)}  naive bf16 ${fmt(eNaive)}  lse ${eL.max.toExponential(1)}  ${ok ? 'OK' : 'FAILED'}`);
      if (!ok) process.exitCode = 1;
      rt.arena.give(out);
    }
    s.free();
    for (const b of [dq, dk, dv, du, lse]) rt.arena.give(b);
  }
}

// ---- 3. timing ---------------------------------------------------------------------------------
console.log(`\ntiming: B=1 NH=${NH} NKV=${NKV} K=${K} W=${W}, bf16 in/out, median of ${repeats}; TFLOP/s = 4 HS (attended pairs) / time`);
console.log(`${'variant'.padEnd(36)} ${'T'.padStart(6)} ${'select ms'.padStart(10)} ${'fwd ms'.padStart(8)} ${'sel+fwd'.padStart(8)} ${'TFLOP/s'.padStart(8)} ${'tile TFLOP/s'.padStart(12)}`);
for (const HS of HSs) {
  for (const T of Ts) {
    const shape: AttentionShape = { B: 1, T, NH, NKV, HS };
    const nq = NH * T * HS, nkv = NKV * T * HS;
    const dq = put(bitsOf(normal(nq, 11))), dk = put(bitsOf(normal(nkv, 12))), dv = put(bitsOf(normal(nkv, 13)));
    const du = put(normal(NKV * T, 15));
    const s = selection(du, NKV, T, K, W);
    if (s.flagged > 0) console.log(`# T=${T}: ${s.flagged} of ${s.ntiles} selection tiles took the global-memory path`);
    const selMs = timeMs(s.run, Math.min(repeats, 5));
    const count = get(s.count, new Int32Array(NKV * T));
    let pairs = 0;
    for (let i = 0; i < T; i++) pairs += Math.min(W, i + 1) * NKV;
    for (const c of count) pairs += c;
    pairs *= NH / NKV;
    const out = take(nq * 2), lse = take(NH * T * 4);
    for (const o of variants) {
      if (o.HS !== HS) continue;
      const BQ = o.BQ;
      const ms = timeMs(() => launchFast(o, out, lse, dq, dk, dv, du, s, shape, K, W), repeats);
      // work the tiles do: per block ceil(count_i0 / 64) + ceil(range / 64) tiles of 64 keys x BQ queries
      let tilePairs = 0;
      for (let h = 0; h < NKV; h++) for (let i0 = 0; i0 < T; i0 += BQ) {
        const range = Math.min(T, i0 + BQ) - Math.max(0, i0 - W + 1);
        tilePairs += (Math.ceil(count[h * T + i0] / 64) + Math.ceil(range / 64)) * 64 * BQ;
      }
      tilePairs *= NH / NKV;
      const tf = (4 * HS * pairs) / (ms * 1e-3) / 1e12, tt = (4 * HS * tilePairs) / (ms * 1e-3) / 1e12;
      console.log(`${fastForwardName(o).padEnd(36)} ${String(T).padStart(6)} ${selMs.toFixed(3).padStart(10)} ${ms.toFixed(3).padStart(8)} ${(ms + selMs).toFixed(3).padStart(8)} ${tf.toFixed(1).padStart(8)} ${tt.toFixed(1).padStart(12)}`);
    }
    s.free();
    for (const b of [dq, dk, dv, du, out, lse]) rt.arena.give(b);
  }
}
