// Harness for the Hopper wgmma SparseK forward (kernel.ts), side by side with the production mma.sync
// kernel (src/cuda/kernels/attention-tc.ts) in the same process: layout probe, validation, timing.
// Helpers (inputs, selection, naive bf16 reference, error measure, validation cases) come from
// dev/cuda-attention-fast/harness.ts, shared with this project's lab harness (dev/cuda-attention-fast/bench.ts).
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
import type { DeviceBlock, Kernel, KernelSource } from '../../src/cuda/runtime.js';
import type { AttentionShape } from '../../src/core/check.js';
import { fastForwardShared, fastForwardSource, fastForwardThreads } from '../../src/cuda/kernels/attention-tc.js';
import type { FastForwardVariant } from '../../src/cuda/kernels/attention-tc.js';
import { bitsOf, caseReference, cases, cudaOrExit, deviceHelpers, errors, fromBits, normal } from '../cuda-attention-fast/harness.js';
import { wgmmaForwardShared, wgmmaForwardSource } from './kernel.js';
import type { WgmmaForwardVariant } from './kernel.js';
import { runProbes } from './probe.js';
import { wgForwardBQ, wgForwardShared, wgForwardSource, wgForwardThreads } from '../../src/cuda/kernels/attention-wg.js';
import type { ProbeResult } from './probe.js';

const args = process.argv.slice(2);
const known = new Set(['T', 'NH', 'NKV', 'HS', 'K', 'W', 'repeats', 'skip-validate', 'wg', 'mb', 'out', 'probe']);
for (const a of args) if (a.startsWith('--') && !known.has(a.slice(2))) throw new Error(`unknown option ${a}`);
const opt = (name: string, dflt: string): string => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : dflt);
const Ts = opt('T', '4096,16384,65536').split(',').map(Number);
const NH = Number(opt('NH', '16')), NKV = Number(opt('NKV', '16'));
const HSs = opt('HS', '64,128').split(',').map(Number) as (64 | 128)[];
const K = Number(opt('K', '512')), W = Number(opt('W', '512')), repeats = Number(opt('repeats', '20'));
const outFile = opt('out', '');
/** wgmma schedules: ov (OVERLAP) or ser, then STAGES, then f for FENCE2, p for PLAIN (e.g. ov3, ser2, ov2f, ov2p). */
const wgSpecs = opt('wg', 'ov3,ser3,ov4').split(',').filter((x) => x !== '' && x !== 'none').map((x) => ({ OVERLAP: x.startsWith('ov'), STAGES: Number(x.replace(/\D/g, '')) as 2 | 3 | 4, FENCE2: x.includes('f'), PLAIN: x.includes('p'), SW: x.includes('z') }));
/** src/cuda/kernels/attention-wg.ts variants: NC:STAGES[:MINB[:GH[:LAG]]] (e.g. 2:3,2:4:1,3:3,2:4:2:2,2:4:2:1:2); GH 2 runs only where G is even. */
const mbSpecs = opt('mb', '').split(',').filter((x) => x !== '').map((x) => {
  const [NC, STAGES, MINB, GH, LAG] = x.split(':').map(Number);
  return { NC: NC as 1 | 2 | 3 | 4, STAGES: STAGES as 3 | 4 | 5, MINB: MINB || 0, GH: (GH || 1) as 1 | 2, LAG: (LAG || 1) as 1 | 2 };
});

function emit(obj: Record<string, unknown>): void {
  const line = JSON.stringify(obj);
  console.log(line);
  if (outFile) appendFileSync(outFile, line + '\n');
}

const rt = cudaOrExit();
const device = `${rt.name} (${rt.arch}), ${rt.multiprocessors} SMs, driver ${rt.driverVersion}, NVRTC ${rt.nvrtcVersion.join('.')}`;
emit({ kind: 'device', device, date: new Date().toISOString() });

const { take, put, get, timeMs, selection } = deviceHelpers(rt);

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
interface Under { label: string; src: KernelSource; block: number; bq: number; gh: number; shared: (K: number, W: number) => number }
function variantsFor(HS: 64 | 128, OUT: 'f32' | 'bf16', G: number): Under[] {
  // the mma.sync forward as CudaBackend runs it on GPUs other than Hopper (tensorCoreVariants in src/cuda/backend.ts)
  const GH = G % 2 === 0 ? 2 : 1;
  const prod: FastForwardVariant = HS === 64
    ? { HS, BQ: GH === 2 ? 64 : 128, WM: 2, GH, OUT, META: 'all', STAGES: 2, FASTEXP: true, MASK: 'rows', LAZY: true }
    : { HS, BQ: 64, GH, OUT, META: 'all', STAGES: 2, FASTEXP: true, MASK: 'rows', LAZY: true };
  const list: Under[] = [{ label: `mma.sync ${fastForwardSource(prod).name}`, src: fastForwardSource(prod), block: fastForwardThreads(prod), bq: prod.BQ, gh: GH, shared: (k, w) => fastForwardShared(prod, k, w) }];
  // --mb variants at the head sizes of --HS only (NC 3 at HS 128 needs more registers than an SM has)
  if (HSs.includes(HS)) for (const spec of mbSpecs) {
    if (G % spec.GH !== 0) continue;
    const v = { HS, OUT, ...spec };
    const src = wgForwardSource(v);
    list.push({ label: `wgmma ${src.name}`, src, block: wgForwardThreads(v), bq: wgForwardBQ(v), gh: spec.GH, shared: (k, w) => wgForwardShared(v, k, w) });
  }
  const sw = swaps.get(HS);
  if (sw) {
    for (const spec of wgSpecs) {
      const v: WgmmaForwardVariant = { HS, OUT, ...spec, ...sw };
      const src = wgmmaForwardSource(v);
      list.push({ label: `wgmma ${src.name}`, src, block: 128, bq: 64, gh: 1, shared: (k, w) => wgmmaForwardShared(v, k, w) });
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
  rt.launch(kernelOf(u), [Math.ceil(shape.T / u.bq), shape.NH / u.gh, shape.B], u.block, u.shared(Kp, Wp),
    [out.ptr, lse.ptr, q.ptr, k.ptr, v.ptr, uu.ptr, s.tau.ptr, s.thk.ptr, s.count.ptr, s.blocks.ptr, shape.T, shape.NH, shape.NKV, Kp, Wp, 1 / Math.sqrt(shape.HS)]);
}

// ---- 2. validation -------------------------------------------------------------------------------
// inputs, float64 reference, naive same-precision forward (see the header), error measure: dev/cuda-attention-fast/harness.ts
if (!args.includes('--skip-validate')) {
  let fails = 0;
  for (const c of cases) {
    const { shape } = c;
    const { B, T, NH, NKV, HS } = shape;
    const nq = B * NH * T * HS;
    const { q, k, v, u, ref, naive, eNaive } = caseReference(c);
    const dq = put(bitsOf(q)), dk = put(bitsOf(k)), dv = put(bitsOf(v)), du = put(u);
    const s = selection(du, B * NKV, T, c.K, c.W);
    const lse = take(B * NH * T * 4);
    for (const OUT of ['f32', 'bf16'] as const) for (const un of variantsFor(HS as 64 | 128, OUT, NH / NKV)) {
      const out = take(nq * (OUT === 'f32' ? 4 : 2));
      rt.cu('cuMemsetD32Async', out.ptr, 0x7fc00000, Math.floor(out.bytes / 4), rt.stream); // NaN: unwritten shows
      launch(un, out, lse, dq, dk, dv, du, s, shape, c.K, c.W);
      const got = OUT === 'f32' ? get(out, new Float32Array(nq)) : fromBits(get(out, new Uint16Array(nq)));
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
    for (const un of variantsFor(HS, 'f32', NH / NKV)) {
      const ms = timeMs(() => launch(un, out, lse, dq, dk, dv, du, s, shape, K, W), repeats);
      emit({ kind: 'time', kernel: un.label, B: 1, T, NH, NKV, HS, K, W, OUT: 'f32', ms: +ms.toFixed(4),
        tflops: +((4 * HS * pairs) / (ms * 1e-3) / 1e12).toFixed(1), tileTflops: +((4 * HS * tilePairs) / (ms * 1e-3) / 1e12).toFixed(1) });
    }
    s.free();
    for (const b of [dq, dk, dv, du, out, lse]) rt.arena.give(b);
  }
}
