// Tests of the CUDA attention layer (src/cuda/kernels/{selection,attention}.ts through
// CudaBackend.attention) for the kinds that run on the GPU: sparsek, dense and window. Oracles: the
// CPU reference (src/cpu/kernels/attention.ts and baselines.ts, float64 arithmetic, itself checked
// against a dense float64 computation and finite differences in test/kernels/), written into
// Float64Array outputs, and the CPU's causal selection (selection.ts).
// Selection: the selected SETS must equal the CPU's exactly (inputs include exact ties, where "the
// more recent wins" decides, and all-equal scores, which send late tiles down the global-memory
// path), tau within 1e-9 relative (both are double from the same float scores), -Infinity exactly.
// Attention: fp32 on the GPU against float64, so every tensor is compared in the L-infinity norm
// relative to the reference's largest entry: out within 2e-5, dq, dk, dv, du within 1e-4. These
// hold with a wide margin for fp32 row sums of <= 1000 terms (the observed errors are printed);
// a wrong or missing key, gate or slot gives errors of order 1e-3 and above.
// Shapes: T = 1, 7, 113, 300, 1000, 5000; HS = 7 (scalar loads), 16, 48, 64; GQA NH=4/NKV=2; B = 2;
// K >= T; K = 0; W = 0; W > T; K = W = 0 (rows without keys). With no CUDA device every test is
// SKIPPED, with the reason.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ArgumentError, ShapeError } from '../../src/core/errors.js';
import { CudaBackend } from '../../src/cuda/backend.js';
import type { CudaBuffer } from '../../src/cuda/backend.js';
import type { AttentionShape } from '../../src/core/check.js';
import type { AttentionConfig } from '../../src/backend.js';
import { patternAttentionBackward, patternAttentionForward, planSparsek, sparsekAttentionBackwardInto, sparsekAttentionForwardInto } from '../../src/cpu/kernels/attention.js';
import { baselinePattern } from '../../src/cpu/kernels/baselines.js';
import { makeAttention } from '../../src/cpu/attention-layer.js';
import { assertNear, backend, gpuTest, rand, dev } from './gpu.js';
import { rng } from '../helpers.js';


type Scores = 'spread' | 'ties' | 'equal' | 'slope';
/** u (B*NKV*T): spread in [-3, 3); ties: 4 levels, 0.5 apart (exact ties); equal: all 0.25; slope: 0.05 t + noise. */
function scores(n: number, T: number, mode: Scores, seed: number): Float32Array {
  const r = rng(seed), u = new Float32Array(n);
  for (let x = 0; x < n; x++) {
    const t = x % T;
    u[x] = mode === 'spread' ? (r() * 2 - 1) * 3 : mode === 'ties' ? Math.floor(r() * 4) / 2 : mode === 'equal' ? 0.25 : 0.05 * t + r() * 0.5;
  }
  return u;
}

interface Case {
  kind: 'sparsek' | 'dense' | 'window';
  shape: AttentionShape;
  K: number;
  W: number;
  u: Scores;
}

function label(c: Case): string {
  const { B, T, NH, NKV, HS } = c.shape;
  const o = c.kind === 'sparsek' ? ` K=${c.K} W=${c.W} ${c.u}` : c.kind === 'window' ? ` W=${c.W}` : '';
  return `${c.kind}${o}, B=${B} T=${T} NH=${NH} NKV=${NKV} HS=${HS}`;
}

/** Forward and backward on the GPU and the CPU; returns both, with the CPU's plan for SparseK. */
function runBoth(c: Case, seed: number) {
  const { B, T, NH, NKV, HS } = c.shape;
  const nq = B * NH * T * HS, nkv = B * NKV * T * HS, nu = B * NKV * T;
  const q = rand(nq, seed), k = rand(nkv, seed + 1), v = rand(nkv, seed + 2), dout = rand(nq, seed + 3);
  const u = scores(nu, T, c.u, seed + 4);
  const sparse = c.kind === 'sparsek';
  // CPU reference in float64 storage
  const want = { out: new Float64Array(nq), dq: new Float64Array(nq), dk: new Float64Array(nkv), dv: new Float64Array(nkv), du: new Float64Array(nu) };
  const x = { q, k, v, u };
  const o = { k: c.K, window: c.W };
  const plan = sparse ? planSparsek(u, c.shape, o) : null;
  if (plan !== null) {
    sparsekAttentionForwardInto(want.out, x, c.shape, o);
    sparsekAttentionBackwardInto(want.dq, want.dk, want.dv, want.du, dout, x, c.shape, o, plan);
  } else {
    const pattern = baselinePattern(c.kind === 'dense' ? { kind: 'dense' } : { kind: 'window', window: c.W }, x, c.shape);
    patternAttentionForward(want.out, x, c.shape, pattern);
    patternAttentionBackward(want.dq, want.dk, want.dv, dout, x, c.shape, pattern);
  }
  // GPU
  const be = backend();
  const config: AttentionConfig = { attention: c.kind, k: c.K, window: c.W, hashBuckets: 4 };
  const layer = be.attention(config, c.shape);
  const dOut = be.alloc(nq), dQ = be.alloc(nq), dK = be.alloc(nkv), dV = be.alloc(nkv), dU = be.alloc(nu);
  const ins = [dev(q), dev(k), dev(v), dev(u), dev(dout)];
  layer.forward(dOut, ins[0], ins[1], ins[2], sparse ? ins[3] : null);
  layer.backward(dQ, dK, dV, sparse ? dU : null, ins[4]);
  const got = { out: be.download(dOut), dq: be.download(dQ), dk: be.download(dK), dv: be.download(dV), du: be.download(dU) };
  const gpuPlan = layer.plan();
  for (const b of [dOut, dQ, dK, dV, dU, ...ins]) be.free(b);
  return { want, got, plan, gpuPlan };
}

function checkSelection(c: Case, plan: ReturnType<typeof planSparsek>, gpu: { tau: Float64Array; count: Int32Array; sel: Int32Array; K: number }): void {
  const { T } = c.shape;
  const K = c.K;
  for (let bh = 0; bh < plan.sel.length; bh++) {
    const f = plan.sel[bh];
    for (let i = 0; i < T; i++) {
      const r = bh * T + i;
      assert.equal(gpu.count[r], f.count[i], `row ${bh} query ${i}: |Sel|`);
      for (let s = 0; s < f.count[i]; s++) {
        if (gpu.sel[r * K + s] !== f.sel[i * K + s]) {
          assert.fail(`row ${bh} query ${i}: Sel = [${gpu.sel.subarray(r * K, r * K + gpu.count[r])}], CPU [${f.sel.subarray(i * K, i * K + f.count[i])}]`);
        }
      }
      const a = gpu.tau[r], b = f.tau[i];
      if (a === b) continue;
      assert.ok(Number.isFinite(b) && Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)), `row ${bh} query ${i}: tau ${a}, CPU ${b}`);
    }
  }
}

const cases: Case[] = [
  { kind: 'sparsek', shape: { B: 1, T: 1, NH: 1, NKV: 1, HS: 48 }, K: 3, W: 2, u: 'spread' },
  { kind: 'sparsek', shape: { B: 1, T: 7, NH: 4, NKV: 2, HS: 48 }, K: 3, W: 2, u: 'spread' },
  { kind: 'sparsek', shape: { B: 2, T: 113, NH: 4, NKV: 2, HS: 64 }, K: 10, W: 5, u: 'spread' },
  { kind: 'sparsek', shape: { B: 1, T: 1000, NH: 2, NKV: 1, HS: 64 }, K: 37, W: 16, u: 'spread' },
  { kind: 'sparsek', shape: { B: 1, T: 1000, NH: 2, NKV: 2, HS: 48 }, K: 20, W: 8, u: 'slope' },
  { kind: 'sparsek', shape: { B: 1, T: 113, NH: 2, NKV: 1, HS: 48 }, K: 200, W: 0, u: 'spread' }, // K >= T: dense
  { kind: 'sparsek', shape: { B: 1, T: 113, NH: 2, NKV: 2, HS: 64 }, K: 10, W: 0, u: 'spread' },
  { kind: 'sparsek', shape: { B: 1, T: 113, NH: 4, NKV: 2, HS: 48 }, K: 0, W: 5, u: 'spread' }, // window
  { kind: 'sparsek', shape: { B: 1, T: 7, NH: 2, NKV: 1, HS: 48 }, K: 3, W: 10, u: 'spread' }, // W > T
  { kind: 'sparsek', shape: { B: 1, T: 113, NH: 1, NKV: 1, HS: 48 }, K: 0, W: 0, u: 'spread' }, // no keys at all
  { kind: 'sparsek', shape: { B: 1, T: 113, NH: 2, NKV: 1, HS: 7 }, K: 5, W: 3, u: 'spread' }, // scalar loads
  { kind: 'sparsek', shape: { B: 1, T: 300, NH: 4, NKV: 2, HS: 48 }, K: 12, W: 3, u: 'ties' },
  { kind: 'sparsek', shape: { B: 1, T: 5000, NH: 1, NKV: 1, HS: 16 }, K: 8, W: 4, u: 'equal' }, // global-memory tiles
  { kind: 'sparsek', shape: { B: 1, T: 3000, NH: 2, NKV: 2, HS: 16 }, K: 40, W: 30, u: 'spread' }, // tree nodes past shared memory's 1024
  { kind: 'dense', shape: { B: 1, T: 1, NH: 1, NKV: 1, HS: 48 }, K: 0, W: 0, u: 'spread' },
  { kind: 'dense', shape: { B: 2, T: 113, NH: 4, NKV: 2, HS: 48 }, K: 0, W: 0, u: 'spread' },
  { kind: 'dense', shape: { B: 1, T: 1000, NH: 2, NKV: 1, HS: 64 }, K: 0, W: 0, u: 'spread' },
  { kind: 'window', shape: { B: 1, T: 113, NH: 2, NKV: 2, HS: 64 }, K: 0, W: 1, u: 'spread' },
  { kind: 'window', shape: { B: 1, T: 113, NH: 4, NKV: 2, HS: 48 }, K: 0, W: 7, u: 'spread' },
  { kind: 'window', shape: { B: 1, T: 7, NH: 2, NKV: 1, HS: 7 }, K: 0, W: 10, u: 'spread' },
];

describe('CUDA attention against the CPU reference', () => {
  cases.forEach((c, n) => {
    gpuTest(label(c), () => {
      const { want, got, plan, gpuPlan } = runBoth(c, 1000 + 17 * n);
      if (plan !== null) {
        assert.ok(gpuPlan !== null, 'plan() of a SparseK layer after a forward');
        checkSelection(c, plan, gpuPlan);
      } else {
        assert.equal(gpuPlan, null);
      }
      const e = [
        assertNear(got.out, want.out, 2e-5, 'out'),
        assertNear(got.dq, want.dq, 1e-4, 'dq'),
        assertNear(got.dk, want.dk, 1e-4, 'dk'),
        assertNear(got.dv, want.dv, 1e-4, 'dv'),
        c.kind === 'sparsek' ? assertNear(got.du, want.du, 1e-4, 'du') : 0,
      ];
      console.log(`# ${label(c)}: relative errors out ${e[0].toExponential(1)} dq ${e[1].toExponential(1)} dk ${e[2].toExponential(1)} dv ${e[3].toExponential(1)} du ${e[4].toExponential(1)}`);
    });
  });

  gpuTest('exact ties: "the more recent wins" decides the selected sets, as on the CPU', () => {
    // Every score is one of two levels: the K selected are the most recent candidates of the top level.
    const shape = { B: 1, T: 64, NH: 1, NKV: 1, HS: 16 }, K = 5, W = 2;
    const u = new Float32Array(64).map((_, j) => (j % 3 === 0 ? 1 : 0));
    const be = backend();
    const layer = be.attention({ attention: 'sparsek', k: K, window: W, hashBuckets: 4 }, shape);
    const out = be.alloc(64 * 16);
    layer.forward(out, dev(rand(64 * 16, 1)), dev(rand(64 * 16, 2)), dev(rand(64 * 16, 3)), dev(u));
    const p = layer.plan();
    assert.ok(p !== null);
    for (let i = 0; i < 64; i++) {
      const cand = Array.from({ length: Math.max(0, i - W + 1) }, (_, j) => j);
      // oracle: sort by (u, j) descending, take K, ascending
      const top = cand.sort((a, b) => u[b] - u[a] || b - a).slice(0, K).sort((a, b) => a - b);
      assert.deepEqual(Array.from(p.sel.subarray(i * K, i * K + p.count[i])), top, `query ${i}`);
    }
    const sels = layer.selections();
    assert.ok(sels !== null && sels.length === 1);
    const cpu = makeAttention({ attention: 'sparsek', k: K, window: W, hashBuckets: 4 }, shape);
    cpu.forward(new Float32Array(64 * 16), rand(64 * 16, 1), rand(64 * 16, 2), rand(64 * 16, 3), u);
    const want = cpu.selections();
    assert.ok(want !== null);
    for (let i = 0; i < 64; i++) {
      assert.deepEqual(Array.from(sels[0].rows[i]), Array.from(want[0].rows[i]), `selections() rows, query ${i}`);
      assertNear(sels[0].gates[i], want[0].gates[i], 1e-12, `selections() gates, query ${i}`);
    }
  });

  gpuTest('a long row after a short one: the selection opts in to more shared memory when T needs it (T = 4K, then 400K)', () => {
    // fs_rows marks a row's positions in shared memory (T / 8 bytes): past 48 KiB the launch must opt in,
    // even though the same kernel ran before with less. Checked against the CPU's selection at the end.
    const be = backend();
    const K = 4, W = 4, HS = 8;
    for (const T of [4096, 400_000]) {
      const shape = { B: 1, T, NH: 1, NKV: 1, HS };
      const layer = be.attention({ attention: 'sparsek', k: K, window: W, hashBuckets: 4 }, shape);
      const u = rand(T, 9);
      layer.forward(be.alloc(T * HS), dev(rand(T * HS, 1)), dev(rand(T * HS, 2)), dev(rand(T * HS, 3)), dev(u));
      const p = layer.plan();
      assert.ok(p !== null);
      // oracle for the last query: its K best candidates by (u, j)
      const i = T - 1;
      const top = Array.from({ length: i - W + 1 }, (_, j) => j).sort((a, b) => u[b] - u[a] || b - a).slice(0, K).sort((a, b) => a - b);
      assert.deepEqual(Array.from(p.sel.subarray(i * K, i * K + p.count[i])), top, `T = ${T}, query ${i}`);
      layer.dispose();
    }
  });

  gpuTest('backward is deterministic: two runs agree bit for bit (GQA, SparseK)', () => {
    const c: Case = { kind: 'sparsek', shape: { B: 1, T: 300, NH: 4, NKV: 2, HS: 48 }, K: 12, W: 6, u: 'spread' };
    const a = runBoth(c, 7).got, b = runBoth(c, 7).got;
    for (const key of ['out', 'dq', 'dk', 'dv', 'du'] as const) {
      assert.ok(a[key].every((x, i) => Object.is(x, b[key][i])), `${key} differs between runs`);
    }
  });

  gpuTest('bad input: typed errors naming the argument', () => {
    const be = backend();
    const shape = { B: 1, T: 7, NH: 2, NKV: 1, HS: 16 };
    const layer = be.attention({ attention: 'sparsek', k: 2, window: 2, hashBuckets: 4 }, shape);
    const q = be.alloc(2 * 7 * 16), kv = be.alloc(7 * 16);
    assert.throws(() => layer.forward(be.alloc(2 * 7 * 16), q, kv, kv, null), (e: unknown) => e instanceof ArgumentError && e.arg === 'u');
    assert.throws(() => layer.forward(be.alloc(2 * 7 * 16), q, be.alloc(7 * 15), kv, be.alloc(7)), (e: unknown) => e instanceof ShapeError && e.arg === 'k');
    assert.throws(() => layer.backward(be.alloc(1), be.alloc(1), be.alloc(1), null, be.alloc(1)), /before forward/);
    assert.throws(() => be.attention({ attention: 'dense', k: 0, window: 0, hashBuckets: 4 }, { B: 1, T: 7, NH: 3, NKV: 2, HS: 16 }),
      (e: unknown) => e instanceof ArgumentError && e.arg === 'shape.NH');
  });
});
