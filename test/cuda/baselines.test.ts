// Tests of the CUDA fixed, hash and qktopk attention layer (src/cuda/baselines-layer.ts over
// src/cuda/kernels/baselines.ts). Oracle: the CPU reference (src/cpu/kernels/baselines.ts's key
// patterns under src/cpu/kernels/attention.ts's pattern attention, float64 arithmetic, itself checked
// against a masked float64 computation and finite differences in test/kernels/), written into
// Float64Array outputs.
// Key sets: the GPU decides membership with the CPU's own double arithmetic (hash projections,
// qktopk dot products), so the sets must be equal, ties included. The inputs make a wrong set
// visible: k rows repeat (period 3, or all equal), so qktopk's scores tie exactly and "the more
// recent wins" decides, while v stays random, so a different tied key moves the output by O(0.1).
// Attention: fp32 on the GPU against float64, compared in the L-infinity norm relative to the
// reference's largest entry: out within 2e-5, dq, dk, dv within 1e-4. fp32 dot products of
// HS <= 64 terms and softmax sums of <= 1000 terms carry relative errors near 1e-6, and the
// gradients of keys attended by many queries sum up to G*T terms, near 1e-5: the bounds hold with a
// margin of 10 (the observed errors are printed), while a wrong or missing key gives 1e-3 and above.
// Shapes: T = 1, 7, 113, 300, 1000; HS = 7 (odd), 48, 64; GQA NH=4/NKV=2; B = 2; fixed W = 1
// (every column a summary), W > T; qktopk K >= T, K = 0, W = 0, K = W = 0 (rows without keys).
// With no CUDA device every test is SKIPPED, with the reason.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ArgumentError, ShapeError } from '../../src/core/errors.js';
import { CudaBackend } from '../../src/cuda/backend.js';
import type { CudaBuffer } from '../../src/cuda/backend.js';
import { baselineAttention } from '../../src/cuda/baselines-layer.js';
import type { AttentionShape } from '../../src/core/check.js';
import type { AttentionConfig } from '../../src/backend.js';
import { patternAttentionBackward, patternAttentionForward } from '../../src/cpu/kernels/attention.js';
import { baselinePattern } from '../../src/cpu/kernels/baselines.js';
import { baselineOptions } from '../../src/cpu/attention-layer.js';
import type { BaselineOptions } from '../../src/cpu/kernels/baselines.js';
import { assertNear, backend, gpuTest, rand, dev } from './gpu.js';


type Keys = 'random' | 'period3' | 'equal';
/** k (B, NKV, T, HS): random; period3: row j equals row j mod 3 of its head (exact score ties); equal: every row of a head equal. */
function keys(s: AttentionShape, mode: Keys, seed: number): Float32Array {
  const { B, NKV, T, HS } = s;
  const k = rand(B * NKV * T * HS, seed);
  if (mode === 'random') return k;
  const period = mode === 'period3' ? 3 : 1;
  for (let bh = 0; bh < B * NKV; bh++) {
    for (let j = period; j < T; j++) k.copyWithin((bh * T + j) * HS, (bh * T + (j % period)) * HS, (bh * T + (j % period) + 1) * HS);
  }
  return k;
}

const maxAbs = (a: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
};
/** The largest Euclidean norm of the rows of length HS of a. */
const maxRowNorm = (a: ArrayLike<number>, HS: number): number => {
  let m = 0;
  for (let r = 0; r < a.length / HS; r++) {
    let ss = 0;
    for (let d = 0; d < HS; d++) ss += a[r * HS + d] ** 2;
    m = Math.max(m, Math.sqrt(ss));
  }
  return m;
};

/** max |got| <= bound; returns max |got| / bound. */
function assertBelow(got: ArrayLike<number>, bound: number, what: string): number {
  let worst = 0, at = -1;
  for (let i = 0; i < got.length; i++) if (!(Math.abs(got[i]) <= worst)) { worst = Math.abs(got[i]); at = i; }
  if (!(worst <= bound)) assert.fail(`${what}[${at}]: |${got[at]}| above ${bound.toExponential(2)} (zero analytically)`);
  return bound > 0 ? worst / bound : worst;
}

interface Case {
  kind: 'fixed' | 'hash' | 'qktopk';
  shape: AttentionShape;
  K: number;
  W: number;
  nb: number;
  k: Keys;
}

function config(c: Case): AttentionConfig {
  return { attention: c.kind, k: c.K, window: c.W, hashBuckets: c.nb };
}

function label(c: Case): string {
  const { B, T, NH, NKV, HS } = c.shape;
  const o = c.kind === 'fixed' ? `W=${c.W}` : c.kind === 'hash' ? `nb=${c.nb}` : `K=${c.K} W=${c.W}`;
  return `${c.kind} ${o} keys ${c.k}, B=${B} T=${T} NH=${NH} NKV=${NKV} HS=${HS}`;
}

/** Forward and backward on the GPU (with a du buffer, which must come back 0) and the CPU reference. */
function runBoth(c: Case, seed: number) {
  const { B, T, NH, NKV, HS } = c.shape;
  const nq = B * NH * T * HS, nkv = B * NKV * T * HS, nu = B * NKV * T;
  const q = rand(nq, seed), k = keys(c.shape, c.k, seed + 1), v = rand(nkv, seed + 2), dout = rand(nq, seed + 3);
  const x = { q, k, v };
  const o = baselineOptions(config(c)) as BaselineOptions; // the CPU layer's options (hash seed 0)
  const pattern = baselinePattern(o, x, c.shape);
  const want = { out: new Float64Array(nq), dq: new Float64Array(nq), dk: new Float64Array(nkv), dv: new Float64Array(nkv) };
  patternAttentionForward(want.out, x, c.shape, pattern);
  patternAttentionBackward(want.dq, want.dk, want.dv, dout, x, c.shape, pattern);
  const be = backend();
  const layer = baselineAttention(be.rt, config(c), c.shape);
  const dOut = be.alloc(nq), dQ = be.alloc(nq), dK = be.alloc(nkv), dV = be.alloc(nkv), dU = be.alloc(nu);
  be.fill(dU, 7); // the backward must overwrite it with 0
  const ins = [dev(q), dev(k), dev(v), dev(dout)];
  layer.forward(dOut, ins[0], ins[1], ins[2], null);
  layer.backward(dQ, dK, dV, dU, ins[3]);
  const got = { out: be.download(dOut), dq: be.download(dQ), dk: be.download(dK), dv: be.download(dV), du: be.download(dU) };
  layer.dispose();
  for (const b of [dOut, dQ, dK, dV, dU, ...ins]) be.free(b);
  return { want, got, inputs: { k, v, dout } };
}

const s = (B: number, T: number, NH: number, NKV: number, HS: number): AttentionShape => ({ B, T, NH, NKV, HS });
const cases: Case[] = [
  // qktopk first: the oracle baseline of the issue
  { kind: 'qktopk', shape: s(1, 1, 1, 1, 48), K: 3, W: 2, nb: 2, k: 'random' },
  { kind: 'qktopk', shape: s(1, 7, 4, 2, 48), K: 3, W: 2, nb: 2, k: 'random' },
  { kind: 'qktopk', shape: s(2, 113, 4, 2, 64), K: 10, W: 5, nb: 2, k: 'random' },
  { kind: 'qktopk', shape: s(1, 113, 4, 2, 48), K: 10, W: 5, nb: 2, k: 'period3' }, // exact ties
  { kind: 'qktopk', shape: s(1, 113, 2, 1, 64), K: 7, W: 0, nb: 2, k: 'period3' }, // ties, W = 0
  { kind: 'qktopk', shape: s(1, 300, 2, 2, 48), K: 12, W: 3, nb: 2, k: 'equal' }, // every score tied
  { kind: 'qktopk', shape: s(1, 113, 2, 1, 48), K: 200, W: 0, nb: 2, k: 'random' }, // K >= T: dense
  { kind: 'qktopk', shape: s(1, 113, 2, 1, 48), K: 150, W: 4, nb: 2, k: 'random' }, // K >= T with a window
  { kind: 'qktopk', shape: s(1, 113, 4, 2, 48), K: 0, W: 5, nb: 2, k: 'random' }, // window only
  { kind: 'qktopk', shape: s(1, 113, 1, 1, 48), K: 0, W: 0, nb: 2, k: 'random' }, // no keys at all
  { kind: 'qktopk', shape: s(1, 7, 2, 1, 7), K: 3, W: 10, nb: 2, k: 'random' }, // W > T, odd HS
  { kind: 'qktopk', shape: s(1, 1000, 2, 1, 64), K: 37, W: 16, nb: 2, k: 'random' }, // many scratch rows
  // fixed
  { kind: 'fixed', shape: s(1, 1, 1, 1, 48), K: 0, W: 4, nb: 2, k: 'random' },
  { kind: 'fixed', shape: s(1, 7, 4, 2, 48), K: 0, W: 3, nb: 2, k: 'random' },
  { kind: 'fixed', shape: s(2, 113, 4, 2, 64), K: 0, W: 8, nb: 2, k: 'random' },
  { kind: 'fixed', shape: s(1, 113, 2, 1, 48), K: 0, W: 1, nb: 2, k: 'random' }, // every column a summary: dense
  { kind: 'fixed', shape: s(1, 300, 2, 2, 64), K: 0, W: 17, nb: 2, k: 'random' },
  { kind: 'fixed', shape: s(1, 7, 2, 1, 7), K: 0, W: 10, nb: 2, k: 'random' }, // W > T: one block
  // hash
  { kind: 'hash', shape: s(1, 1, 1, 1, 48), K: 0, W: 0, nb: 4, k: 'random' },
  { kind: 'hash', shape: s(1, 7, 4, 2, 48), K: 0, W: 0, nb: 4, k: 'random' },
  { kind: 'hash', shape: s(2, 113, 4, 2, 64), K: 0, W: 0, nb: 8, k: 'random' },
  { kind: 'hash', shape: s(1, 113, 2, 1, 48), K: 0, W: 0, nb: 2, k: 'period3' },
  { kind: 'hash', shape: s(1, 300, 4, 2, 48), K: 0, W: 0, nb: 6, k: 'random' },
  { kind: 'hash', shape: s(1, 1000, 2, 1, 64), K: 0, W: 0, nb: 16, k: 'random' },
  { kind: 'hash', shape: s(1, 113, 2, 2, 7), K: 0, W: 0, nb: 4, k: 'equal' }, // odd HS, one bucket for every key
];

describe('CUDA fixed, hash and qktopk attention against the CPU reference', () => {
  cases.forEach((c, n) => {
    gpuTest(label(c), () => {
      const { want, got, inputs } = runBoth(c, 2000 + 17 * n);
      // With every key equal, dq_i = scale k sum_j P_ij (dP_ij - D_i) = 0 exactly (sum_j P_ij dP_ij = D_i):
      // the reference is 0 to float64 rounding, the GPU's is fp32 rounding of terms of size at most
      // scale |k| max|dP_ij|, with |dP_ij| = |dout_i . v_j| <= max ||dout_i|| max ||v_j||. A few
      // roundings of that (2^-21 of it) bound the result; relative to 0 there is nothing to compare.
      const { HS } = c.shape;
      const dqFloor = 2 ** -21 / Math.sqrt(HS) * maxAbs(inputs.k) * maxRowNorm(inputs.dout, HS) * maxRowNorm(inputs.v, HS);
      const e = [
        assertNear(got.out, want.out, 2e-5, 'out'),
        c.k === 'equal' ? assertBelow(got.dq, dqFloor, 'dq') : assertNear(got.dq, want.dq, 1e-4, 'dq'),
        assertNear(got.dk, want.dk, 1e-4, 'dk'),
        assertNear(got.dv, want.dv, 1e-4, 'dv'),
      ];
      assert.ok(got.du.every((x) => x === 0), 'du is 0 (no scores)');
      console.log(`# ${label(c)}: relative errors out ${e[0].toExponential(1)} dq ${e[1].toExponential(1)} dk ${e[2].toExponential(1)} dv ${e[3].toExponential(1)}`);
    });
  });

  gpuTest('qktopk ties: with every key equal, the K most recent candidates are attended', () => {
    // Independent of the CPU pattern: v_j = one-hot(j mod HS) scaled by j, every score equal, so
    // o_i = the mean of v over Sel_i ∪ Win_i with Sel_i = the K candidates nearest i - W.
    const shape = s(1, 40, 1, 1, 48), K = 4, W = 3, T = 40, HS = 48;
    const c: Case = { kind: 'qktopk', shape, K, W, nb: 2, k: 'equal' };
    const be = backend();
    const v = new Float32Array(T * HS);
    for (let j = 0; j < T; j++) v[j * HS + (j % HS)] = 1 + j;
    const q = rand(T * HS, 5), k = keys(shape, 'equal', 6);
    const layer = baselineAttention(be.rt, config(c), shape);
    const out = be.alloc(T * HS);
    const ins = [dev(q), dev(k), dev(v)];
    layer.forward(out, ins[0], ins[1], ins[2], null);
    const o = be.download(out);
    for (let i = 0; i < T; i++) {
      const cand = Math.max(0, i - W + 1); // candidates 0 .. i-W
      const sel = Array.from({ length: Math.min(K, cand) }, (_, t) => i - W - t);
      const win = Array.from({ length: Math.min(W, i + 1) }, (_, t) => i - t);
      const want = new Float64Array(HS);
      for (const j of [...sel, ...win]) want[j % HS] += (1 + j) / (sel.length + win.length);
      assertNear(o.subarray(i * HS, (i + 1) * HS), want, 1e-6, `query ${i}`);
    }
    layer.dispose();
    for (const b of [out, ...ins]) be.free(b);
  });

  gpuTest('backward is deterministic: two runs agree bit for bit (GQA, each kind)', () => {
    for (const c of [cases[3], cases[16], cases[22]]) {
      const a = runBoth(c, 7).got, b = runBoth(c, 7).got;
      for (const key of ['out', 'dq', 'dk', 'dv'] as const) {
        assert.ok(a[key].every((x, i) => Object.is(x, b[key][i])), `${c.kind}: ${key} differs between runs`);
      }
    }
  });

  gpuTest('bad input: typed errors naming the argument', () => {
    const be = backend();
    const shape = s(1, 7, 2, 1, 16);
    const cfg: AttentionConfig = { attention: 'qktopk', k: 2, window: 2, hashBuckets: 4 };
    const layer = baselineAttention(be.rt, cfg, shape);
    const q = be.alloc(2 * 7 * 16), kv = be.alloc(7 * 16);
    assert.throws(() => layer.forward(be.alloc(2 * 7 * 16), q, be.alloc(7 * 15), kv, null), (e: unknown) => e instanceof ShapeError && e.arg === 'k');
    assert.throws(() => layer.backward(be.alloc(1), be.alloc(1), be.alloc(1), null, be.alloc(1)), /before forward/);
    assert.throws(() => baselineAttention(be.rt, { ...cfg, attention: 'dense' }, shape), (e: unknown) => e instanceof ArgumentError && e.arg === 'attention');
    assert.throws(() => baselineAttention(be.rt, cfg, s(1, 7, 3, 2, 16)), (e: unknown) => e instanceof ArgumentError && e.arg === 'shape.NH');
    assert.throws(() => baselineAttention(be.rt, { ...cfg, attention: 'hash', hashBuckets: 3 }, shape), (e: unknown) => e instanceof ArgumentError && e.arg === 'opts.buckets');
    assert.throws(() => baselineAttention(be.rt, { ...cfg, attention: 'fixed', window: 0 }, shape), (e: unknown) => e instanceof ArgumentError && e.arg === 'opts.window');
    layer.dispose();
  });
});
