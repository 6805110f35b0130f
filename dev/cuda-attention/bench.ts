// Harness for the CUDA attention kernels (src/cuda/kernels/{selection,attention}.ts through
// CudaBackend.attention): each variant (sparsek, window, dense) is first validated against the CPU
// reference at a moderate shape, then timed at long contexts: forward and forward+backward, median
// over repeats after warm-up, GPU time from events on the backend's stream. The selection alone is
// timed too (its kernels launched directly, as attention() does).
//
//   node --import tsx dev/cuda-attention/bench.ts [--T 4096,16384] [--NH 16] [--NKV 16] [--HS 64] [--K 512] [--W 512]
//                                                 [--repeats 10] [--kinds sparsek,window,dense]
//
// Inputs: q, k, v, dout uniform in [-1, 1); u standard normal (as .device/peers.py's flex_spk), B = 1.
// Work: sparsek touches T (K + W) key rows per query head, window T W, dense T^2 / 2; the FLOP
// column counts 4 HS per (query, key) pair forward (q.k and a v) and 2.5x that for forward+backward.

import { cudaAvailability } from '../../src/cuda/runtime.js';
import { CudaBackend } from '../../src/cuda/backend.js';
import type { CudaBuffer } from '../../src/cuda/backend.js';
import { keyIntervalsSource } from '../../src/cuda/kernels/selection.js';
import { selectSharedSource, selectGlobalSource, SELECT_BQ } from './selection-tiles.js';
import { patternAttentionBackward, patternAttentionForward, planSparsek, sparsekAttentionBackwardInto, sparsekAttentionForwardInto } from '../../src/cpu/kernels/attention.js';
import { baselinePattern } from '../../src/cpu/kernels/baselines.js';
import type { AttentionShape } from '../../src/core/check.js';

type Kind = 'sparsek' | 'window' | 'dense';
const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : dflt);
const Ts = opt('T', '4096,16384').split(',').map(Number);
const NH = Number(opt('NH', '16')), NKV = Number(opt('NKV', '16')), HS = Number(opt('HS', '64'));
const K = Number(opt('K', '512')), W = Number(opt('W', '512')), repeats = Number(opt('repeats', '10'));
const kinds = opt('kinds', 'sparsek,window,dense').split(',') as Kind[];

const avail = cudaAvailability();
if (!avail.available) {
  console.log(`no CUDA device: ${avail.reason}`);
  process.exit(0);
}
const be = new CudaBackend();
const rt = be.rt;
console.log(`# ${rt.name} (${rt.arch}), ${rt.multiprocessors} SMs, driver ${rt.driverVersion}, NVRTC ${rt.nvrtcVersion.join('.')}`);

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    s = (s ^ (s >>> 12)) >>> 0;
    return s / 2 ** 32;
  };
}
const uniform = (n: number, seed: number): Float32Array => { const r = rng(seed); return Float32Array.from({ length: n }, () => r() * 2 - 1); };
const normal = (n: number, seed: number): Float32Array => {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));
};
const dev = (a: Float32Array): CudaBuffer => { const b = be.alloc(a.length); be.upload(b, a); return b; };
const config = (kind: Kind) => ({ attention: kind, k: K, window: kind === 'dense' ? 0 : W, hashBuckets: 4 });

function maxRel(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let scale = 0, worst = 0;
  for (let i = 0; i < want.length; i++) { scale = Math.max(scale, Math.abs(want[i])); worst = Math.max(worst, Math.abs(got[i] - want[i])); }
  return scale > 0 ? worst / scale : worst;
}

// ---- 1. validation against the CPU reference ------------------------------------------------
{
  const shape: AttentionShape = { B: 1, T: 1024, NH: 4, NKV: 2, HS };
  const Kv = 64, Wv = 32;
  const { T } = shape, nq = 4 * T * HS, nkv = 2 * T * HS, nu = 2 * T;
  const q = uniform(nq, 1), k = uniform(nkv, 2), v = uniform(nkv, 3), dout = uniform(nq, 4), u = normal(nu, 5);
  for (const kind of kinds) {
    const want = { out: new Float64Array(nq), dq: new Float64Array(nq), dk: new Float64Array(nkv), dv: new Float64Array(nkv), du: new Float64Array(nu) };
    const o = { k: Kv, window: Wv };
    if (kind === 'sparsek') {
      sparsekAttentionForwardInto(want.out, { q, k, v, u }, shape, o);
      sparsekAttentionBackwardInto(want.dq, want.dk, want.dv, want.du, dout, { q, k, v, u }, shape, o, planSparsek(u, shape, o));
    } else {
      const p = baselinePattern(kind === 'dense' ? { kind } : { kind, window: Wv }, { q, k, v }, shape);
      patternAttentionForward(want.out, { q, k, v }, shape, p);
      patternAttentionBackward(want.dq, want.dk, want.dv, dout, { q, k, v }, shape, p);
    }
    const layer = be.attention({ attention: kind, k: Kv, window: Wv, hashBuckets: 4 }, shape);
    const bufs = { out: be.alloc(nq), dq: be.alloc(nq), dk: be.alloc(nkv), dv: be.alloc(nkv), du: be.alloc(nu) };
    layer.forward(bufs.out, dev(q), dev(k), dev(v), kind === 'sparsek' ? dev(u) : null);
    layer.backward(bufs.dq, bufs.dk, bufs.dv, kind === 'sparsek' ? bufs.du : null, dev(dout));
    const errs = (['out', 'dq', 'dk', 'dv', 'du'] as const).map((n) => (n === 'du' && kind !== 'sparsek' ? '-' : maxRel(be.download(bufs[n]), want[n]).toExponential(1)));
    const ok = errs.every((e) => e === '-' || Number(e) < 1e-4);
    console.log(`validate ${kind.padEnd(8)} T=${T} NH=4 NKV=2 HS=${HS} K=${Kv} W=${Wv}: max error / max |ref|  out ${errs[0]}  dq ${errs[1]}  dk ${errs[2]}  dv ${errs[3]}  du ${errs[4]}  ${ok ? 'OK' : 'FAILED'}`);
    if (!ok) process.exitCode = 1;
  }
}

// ---- 2. timing ---------------------------------------------------------------------------------
function timeMs(fn: () => void, reps: number): number {
  const start = rt.createEvent(), end = rt.createEvent();
  fn();
  fn(); // warm-up (compiles, arena)
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

console.log(`\n${'kind'.padEnd(9)} ${'T'.padStart(6)} ${'select ms'.padStart(10)} ${'fwd ms'.padStart(9)} ${'fwd+bwd ms'.padStart(11)} ${'fwd TFLOP/s'.padStart(12)}   (B=1 NH=${NH} NKV=${NKV} HS=${HS} K=${K} W=${W})`);
for (const T of Ts) {
  const shape: AttentionShape = { B: 1, T, NH, NKV, HS };
  const nq = NH * T * HS, nkv = NKV * T * HS, nu = NKV * T;
  const q = dev(uniform(nq, 11)), k = dev(uniform(nkv, 12)), v = dev(uniform(nkv, 13)), dout = dev(uniform(nq, 14)), u = dev(normal(nu, 15));
  const out = be.alloc(nq), dq = be.alloc(nq), dk = be.alloc(nkv), dv = be.alloc(nkv), du = be.alloc(nu);
  for (const kind of kinds) {
    const layer = be.attention(config(kind), shape);
    const sparse = kind === 'sparsek';
    const reps = kind === 'dense' && T > 8192 ? 3 : repeats;
    const fwd = timeMs(() => layer.forward(out, q, k, v, sparse ? u : null), reps);
    const both = timeMs(() => {
      layer.forward(out, q, k, v, sparse ? u : null);
      layer.backward(dq, dk, dv, sparse ? du : null, dout);
    }, reps);
    const pairs = kind === 'dense' ? (T * (T + 1)) / 2 : kind === 'window' ? T * Math.min(W, T) : T * Math.min(T, K + W);
    const tflops = (4 * HS * pairs * NH) / (fwd * 1e-3) / 1e12;
    const sel = sparse ? timeSelection(u, T).toFixed(3) : '-';
    console.log(`${kind.padEnd(9)} ${String(T).padStart(6)} ${sel.padStart(10)} ${fwd.toFixed(3).padStart(9)} ${both.toFixed(3).padStart(11)} ${tflops.toFixed(2).padStart(12)}`);
  }
  for (const b of [q, k, v, dout, u, out, dq, dk, dv, du]) be.free(b);
}

/** The selection kernels alone, launched as CudaBackend.attention launches them. */
function timeSelection(u: CudaBuffer, T: number): number {
  const BH = NKV, ntiles = Math.ceil(T / SELECT_BQ), cap = 4096;
  const jbits = T > 1 ? 32 - Math.clz32(T - 1) : 0;
  const take = (bytes: number) => rt.arena.take(bytes);
  const tau = take(BH * T * 8), thk = take(BH * T * 8), count = take(BH * T * 4), nfree = take(BH * T * 4), sel = take(BH * T * K * 4);
  const flags = take(BH * ntiles * 4), e = take(BH * T * 4);
  let capG = 1;
  while (capG < T) capG *= 2;
  const G = Math.min(rt.multiprocessors, ntiles * BH);
  const scratch = take(G * 2 * capG * 8);
  const shared = rt.kernel(selectSharedSource({ CAP: cap }));
  rt.cu('cuFuncSetAttribute', shared.fn, 8, 16 * cap);
  const global = rt.kernel(selectGlobalSource()), intervals = rt.kernel(keyIntervalsSource());
  const ms = timeMs(() => {
    rt.launch(shared, [ntiles, BH, 1], SELECT_BQ, 16 * cap, [tau.ptr, thk.ptr, count.ptr, nfree.ptr, sel.ptr, flags.ptr, u.ptr, T, K, W, jbits]);
    rt.launch(global, G, SELECT_BQ, 0, [tau.ptr, thk.ptr, count.ptr, nfree.ptr, sel.ptr, flags.ptr, scratch.ptr, u.ptr, T, K, W, jbits, ntiles, BH, capG]);
    rt.launch(intervals, Math.ceil(BH * T / 256), 256, 0, [e.ptr, u.ptr, thk.ptr, BH, T, W]);
  }, repeats);
  const f = new Int32Array(BH * ntiles);
  rt.cu('cuMemcpyDtoHAsync_v2', f, flags.ptr, f.byteLength, rt.stream);
  rt.synchronize();
  const flagged = f.reduce((a, b) => a + b, 0);
  if (flagged > 0) console.log(`# T=${T}: ${flagged} of ${f.length} tiles took the global-memory path`);
  for (const b of [tau, thk, count, nfree, sel, flags, e, scratch]) rt.arena.give(b);
  return ms;
}
