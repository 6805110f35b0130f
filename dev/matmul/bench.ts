// Micro-benchmark of the CPU matmul variants (dev/matmul/variants.ts) against the kernel in
// src/cpu/kernels/matmul.ts. Each variant is first checked against a float64 reference, then timed:
// median over repeats after warm-up, reported in GFLOP/s with FLOP = 2 N C OC (forward) and
// 4 N C OC (backward: dinp and dweight; the bias sum is not counted).
//
//   node --import tsx dev/matmul/bench.ts [--repeats R] [--only NAME,NAME,...]
//
// Single-threaded on purpose: the arrays here are plain (not SharedArrayBuffer), so src's kernel
// runs inline; dev/matmul/threads.ts times the split over worker threads. Variants are timed
// round-robin, so on a shared machine the load from other processes falls on all of them alike;
// the "best" column is the fastest single run, for a quieter-machine estimate.

import os from 'node:os';
import { matmulBackward, matmulForward } from '../../src/cpu/kernels/matmul.js';
import {
  backwardAxpy4, backwardLlmc, backwardNaive, forwardNaive, gemmNT1x1, gemmNT2x2, gemmNT2x4, gemmNT3x3, gemmNT3x4,
  gemmNT3x4Packed64, gemmNT4x2, gemmNT4x4, gemmNT4x4Packed32, gemmNT4x4Packed64, makeBackwardTransposed,
  makeForward, makeGemmNT3x3K, makeGemmNT4x4K,
} from './variants.js';

type Fwd = typeof matmulForward;
type Bwd = typeof matmulBackward;

const args = process.argv.slice(2);
const repeats = Number(args[args.indexOf('--repeats') + 1] ?? 0) || 7;
const only = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : [];
const picked = (name: string): boolean => only.length === 0 || only.some((o) => name === o);

const forwards: [string, Fwd][] = [
  ['naive', forwardNaive],
  ['gemmNT1x1', makeForward(gemmNT1x1)],
  ['gemmNT2x2', makeForward(gemmNT2x2)],
  ['gemmNT2x4', makeForward(gemmNT2x4)],
  ['gemmNT3x3', makeForward(gemmNT3x3)],
  ['gemmNT4x2', makeForward(gemmNT4x2)],
  ['gemmNT4x4', makeForward(gemmNT4x4)],
  ['gemmNT3x4', makeForward(gemmNT3x4)],
  ['gemmNT3x3K128', makeForward(makeGemmNT3x3K(128))],
  ['gemmNT3x3K256', makeForward(makeGemmNT3x3K(256))],
  ['gemmNT4x4K128', makeForward(makeGemmNT4x4K(128))],
  ['gemmNT4x4K256', makeForward(makeGemmNT4x4K(256))],
  ['gemmNT4x4Packed32', makeForward(gemmNT4x4Packed32)],
  ['gemmNT4x4Packed64', makeForward(gemmNT4x4Packed64)],
  ['gemmNT3x4Packed64', makeForward(gemmNT3x4Packed64)],
  ['src', matmulForward],
];
const backwards: [string, Bwd][] = [
  ['naive', backwardNaive],
  ['llmc (f32 accum)', backwardLlmc],
  ['axpy4', backwardAxpy4],
  ['transposed+2x2', makeBackwardTransposed(gemmNT2x2)],
  ['transposed+2x4', makeBackwardTransposed(gemmNT2x4)],
  ['transposed+3x3', makeBackwardTransposed(gemmNT3x3)],
  ['transposed+4x2', makeBackwardTransposed(gemmNT4x2)],
  ['transposed+4x4', makeBackwardTransposed(gemmNT4x4)],
  ['transposed+3x4', makeBackwardTransposed(gemmNT3x4)],
  ['transposed+3x3K256', makeBackwardTransposed(makeGemmNT3x3K(256))],
  ['transposed+4x4K256', makeBackwardTransposed(makeGemmNT4x4K(256))],
  ['transposed+4x4Packed32', makeBackwardTransposed(gemmNT4x4Packed32)],
  ['transposed+4x4Packed64', makeBackwardTransposed(gemmNT4x4Packed64)],
  ['transposed+3x4Packed64', makeBackwardTransposed(gemmNT3x4Packed64)],
  ['src', matmulBackward],
];

function rand(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 32 - 0.5;
  }
  return a;
}

function median(xs: number[]): number {
  const s = [...xs].sort((p, q) => p - q);
  return s[s.length >> 1];
}

/** max |x - ref| / (1e-6 + max |ref|): one number per output, small for a correct float32 kernel. */
function relErr(x: Float32Array, ref: Float64Array): number {
  let e = 0, m = 0;
  for (let i = 0; i < x.length; i++) {
    e = Math.max(e, Math.abs(x[i] - ref[i]));
    m = Math.max(m, Math.abs(ref[i]));
  }
  return e / (1e-6 + m);
}

interface Case { name: string; run: () => void; err: number; flop: number; times: number[] }

/**
 * Times the cases round-robin (one call of each per round) so that load from other processes on
 * this 2-core machine falls on all variants alike; two untimed rounds first let the JIT settle.
 */
function timeAll(cases: Case[], reps: number): void {
  for (let r = -2; r < reps; r++) {
    for (const c of cases) {
      if (r >= 0 && c.name.endsWith('naive') && r >= 3) continue; // the slow baseline: 3 rounds suffice
      const t0 = process.hrtime.bigint();
      c.run();
      const t = Number(process.hrtime.bigint() - t0) / 1e9;
      if (r >= 0) c.times.push(t);
    }
  }
  for (const c of cases) {
    const t = median(c.times), best = Math.min(...c.times);
    console.log(`  ${c.name.padEnd(32)} ${(c.flop / t / 1e9).toFixed(2).padStart(6)} GFLOP/s (best ${(c.flop / best / 1e9).toFixed(2).padStart(5)})  ${(t * 1e3).toFixed(1).padStart(7)} ms  err ${c.err.toExponential(1)}`);
  }
}

function bench(N: number, C: number, OC: number): void {
  const inp = rand(N * C, 1), weight = rand(OC * C, 2), bias = rand(OC, 3), dout = rand(N * OC, 4);
  // float64 references
  const outRef = new Float64Array(N * OC);
  for (let n = 0; n < N; n++) for (let o = 0; o < OC; o++) {
    let s = bias[o];
    for (let c = 0; c < C; c++) s += inp[n * C + c] * weight[o * C + c];
    outRef[n * OC + o] = s;
  }
  const dinpRef = new Float64Array(N * C), dwRef = new Float64Array(OC * C);
  for (let n = 0; n < N; n++) for (let o = 0; o < OC; o++) {
    const d = dout[n * OC + o];
    for (let c = 0; c < C; c++) {
      dinpRef[n * C + c] += d * weight[o * C + c];
      dwRef[o * C + c] += d * inp[n * C + c];
    }
  }
  console.log(`\nN=${N} C=${C} OC=${OC}  (forward FLOP 2*N*C*OC, backward 4*N*C*OC)`);
  const out = new Float32Array(N * OC);
  const fwd: Case[] = [];
  for (const [name, f] of forwards) {
    if (!picked(name)) continue;
    out.fill(0);
    f(out, inp, weight, bias, N, C, OC);
    fwd.push({ name: `forward  ${name}`, run: () => f(out, inp, weight, bias, N, C, OC), err: relErr(out, outRef), flop: 2 * N * C * OC, times: [] });
  }
  timeAll(fwd, repeats);
  const dinp = new Float32Array(N * C), dw = new Float32Array(OC * C), db = new Float32Array(OC);
  const bwd: Case[] = [];
  for (const [name, f] of backwards) {
    if (!picked(name)) continue;
    dinp.fill(0); dw.fill(0); db.fill(0);
    f(dinp, dw, db, dout, inp, weight, N, C, OC);
    const err = Math.max(relErr(dinp, dinpRef), relErr(dw, dwRef));
    bwd.push({ name: `backward ${name}`, run: () => f(dinp, dw, db, dout, inp, weight, N, C, OC), err, flop: 4 * N * C * OC, times: [] });
  }
  timeAll(bwd, repeats);
}

console.log(`node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'} x${os.cpus().length}, repeats ${repeats}`);
bench(1024, 256, 768);
bench(1024, 768, 256);
