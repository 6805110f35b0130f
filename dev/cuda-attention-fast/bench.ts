// Harness for the tiled tensor-core SparseK forward (src/cuda/kernels/attention-tc.ts): checks, validation, timing.
//
//   node --import tsx dev/cuda-attention-fast/bench.ts [--T 4096,16384,65536] [--NH 16] [--NKV 16]
//        [--HS 64,128] [--K 512] [--W 512] [--repeats 20] [--skip-validate]
//        [--variants 64:64:tile:2:0:e,64:64:all:2:0:f,...]   HS:BQ:META:STAGES:MINB:exp[:mask[:WM[:GH[:l]]]] (e exp2f,
//        f ex2.approx; mask r: MASK rows, k: key; WM 2: two 16-row tiles per warp; GH: query heads per
//        block, 2 or 4, for GQA shapes whose group size it divides; l: LAZY rescaling)
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

import type { DeviceBlock, Kernel } from '../../src/cuda/runtime.js';
import { planSparsek, sparsekPattern } from '../../src/cpu/kernels/attention.js';
import type { SparsekPlan } from '../../src/cpu/kernels/attention.js';
import type { AttentionShape } from '../../src/core/check.js';
import { fastForwardName, fastForwardShared, fastForwardSource, fastForwardThreads } from '../../src/cuda/kernels/attention-tc.js';
import type { FastForwardVariant } from '../../src/cuda/kernels/attention-tc.js';
import { bitsOf, caseReference, cases as sharedCases, cudaOrExit, deviceHelpers, errors, fmt, fromBits, normal, scoresOf } from './harness.js';
import type { Case } from './harness.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : dflt);
const Ts = opt('T', '4096,16384,65536').split(',').map(Number);
const NH = Number(opt('NH', '16')), NKV = Number(opt('NKV', '16'));
const HSs = opt('HS', '64').split(',').map(Number);
const K = Number(opt('K', '512')), W = Number(opt('W', '512')), repeats = Number(opt('repeats', '20'));
const variants: FastForwardVariant[] = opt('variants',
  '64:64:tile:2:0:e,64:64:all:2:0:f,64:64:all:3:0:f,64:64:all:2:4:f,64:128:all:2:0:f,128:64:tile:2:0:e,128:64:all:2:0:f,128:64:all:3:0:f')
  .split(',').map((v) => {
    const [hs, bq, meta, stages, minb, ex, mask, wm = '1', gh = '1', lazy = ''] = v.split(':');
    return { HS: Number(hs) as 64 | 128, BQ: Number(bq) as 64 | 128, OUT: 'bf16', META: meta as 'tile' | 'all',
      STAGES: Number(stages) as 2 | 3, MINB: Number(minb), FASTEXP: ex === 'f', MASK: mask === 'r' ? 'rows' : 'key', WM: Number(wm) as 1 | 2, GH: Number(gh) as 1 | 2 | 4, LAZY: lazy === 'l' };
  });

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

const cases: Case[] = [
  ...sharedCases,
  { name: 'dense (W = T)', shape: { B: 1, T: 300, NH: 2, NKV: 1, HS: 64 }, K: 0, W: 300, u: 'normal' },
  // groups of 4 query heads, for GH 4
  { name: 'gqa4', shape: { B: 2, T: 900, NH: 8, NKV: 2, HS: 64 }, K: 100, W: 64, u: 'normal' },
  { name: 'gqa4 HS=128', shape: { B: 1, T: 600, NH: 4, NKV: 1, HS: 128 }, K: 64, W: 100, u: 'normal' },
];
/** Whether variant v runs shape s: its head size, and GH dividing the group size. */
const runs = (v: FastForwardVariant, s: AttentionShape): boolean => v.HS === s.HS && (s.NH / s.NKV) % (v.GH ?? 1) === 0;

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

const rt = cudaOrExit();
console.log(`# ${rt.name} (${rt.arch}), ${rt.multiprocessors} SMs, driver ${rt.driverVersion}, NVRTC ${rt.nvrtcVersion.join('.')}, ${new Date().toISOString()}`);
const { take, put, get, timeMs, selection } = deviceHelpers(rt);

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
  rt.launch(kern, [Math.ceil(shape.T / o.BQ), shape.NH / (o.GH ?? 1), shape.B], fastForwardThreads(o), fastForwardShared(o, Kp, Wp),
    [out.ptr, lse.ptr, q.ptr, k.ptr, v.ptr, u.ptr, s.tau.ptr, s.thk.ptr, s.count.ptr, s.blocks.ptr, shape.T, shape.NH, shape.NKV, Kp, Wp, 1 / Math.sqrt(shape.HS)]);
}

// ---- 2. validation -------------------------------------------------------------------------------
// inputs, float64 reference, naive same-precision forward (see the header), error measure: harness.ts
if (!args.includes('--skip-validate')) {
  console.log('\nvalidate: error vs float64 CPU reference on bf16-rounded inputs, as max|err|/max|ref| / rms(err)/rms(ref)');
  for (const c of cases) {
    const { shape } = c;
    const { B, T, NH, NKV, HS } = shape;
    const nq = B * NH * T * HS;
    const { q, k, v, u, ref, naive, eNaive } = caseReference(c);
    const dq = put(bitsOf(q)), dk = put(bitsOf(k)), dv = put(bitsOf(v)), du = put(u);
    const s = selection(du, B * NKV, T, c.K, c.W);
    const lse = take(B * NH * T * 4);
    for (const v of variants) for (const OUT of ['f32', 'bf16'] as const) {
      if (!runs(v, shape)) continue;
      const o: FastForwardVariant = { ...v, OUT };
      const out = take(nq * (OUT === 'f32' ? 4 : 2));
      launchFast(o, out, lse, dq, dk, dv, du, s, shape, c.K, c.W);
      const got = OUT === 'f32' ? get(out, new Float32Array(nq)) : fromBits(get(out, new Uint16Array(nq)));
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
      if (!runs(o, shape)) continue;
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
