// The fast GPU selection's algorithm (dev/cuda-selection-fast/emulate.ts: the kernels' steps in float64),
// checked without a GPU against the CPU's CausalSelector, the definition. The GPU suite runs the kernels
// themselves against the same reference; this keeps the algorithm, the anchors' Newton steps for tau
// included, under CI. Also the tree's merge plan (fsMerges), which the GPU suite only covers at its shapes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CausalSelector } from '../../src/cpu/kernels/selection.js';
import { FS_CHUNK, FS_LEAVES, FS_MERGE2_MAX, fsGeometry, fsMerges } from '../../src/cuda/kernels/selection-fast.js';
import { fastSelect, newtonStats } from '../../dev/cuda-selection-fast/emulate.js';
import { Rng } from '../../src/core/random.js';

const kinds = {
  normal: (r: Rng) => () => r.normal(),
  tied: (r: Rng) => () => Math.round(r.normal() * 2) / 2,
  equal: () => () => 0.25,
  uniform: (r: Rng) => () => r.uniform(),
  wide: (r: Rng) => () => 30 * r.normal(),
};

function scores(kind: keyof typeof kinds, T: number, seed: number, step = false): Float32Array {
  const next = kinds[kind](new Rng(seed));
  return Float32Array.from({ length: T }, (_, i) => next() + (step && i >= T / 2 ? 50 : 0));
}

for (const [kind, T, K, W, step] of [
  ['normal', 3000, 100, 37, false], ['tied', 2500, 64, 0, false], ['equal', 1500, 50, 20, false],
  ['uniform', 4000, 257, 127, false], ['wide', 2000, 40, 1, false], ['uniform', 3000, 100, 64, true],
] as const) {
  test(`fast selection (emulated) = CausalSelector: ${kind}${step ? ' with a step' : ''}, T ${T}, K ${K}, W ${W}`, () => {
    const u = scores(kind, T, T + K, step);
    Object.assign(newtonStats, { anchors: 0, evals: 0, fallbacks: 0, maxEvals: 0 });
    const fast = fastSelect(u, T, K, W);
    const ref = new CausalSelector(K);
    for (let i = 0; i < T; i++) {
      const j = W > 0 ? i - W : i; // the candidate query i adds (SPEC section 1: j < i - W + 1)
      if (j >= 0) ref.push(u[j], j);
      const want = ref.tau;
      const got = fast.tau[i];
      assert.ok(got === want || Math.abs(got - want) <= 1e-9 * Math.max(1, Math.abs(want)), `tau at i = ${i}: ${got}, want ${want}`);
      assert.equal(fast.count[i], ref.selected().length, `count at i = ${i}`);
      assert.deepEqual(Array.from(fast.rows[i]), Array.from(ref.selected()), `row at i = ${i}`);
    }
    assert.ok(newtonStats.anchors > 0, 'the anchors took the Newton path');
    assert.equal(newtonStats.fallbacks, 0, 'no anchor fell back to the breakpoint searches');
    assert.ok(newtonStats.maxEvals <= 8);
  });
}

test('the tree merges: every level above the leaves written once, two a launch only while rows x Tx is small', () => {
  for (const [T, W, rows] of [[65536, 512, 16], [65536, 512, 4], [16384, 512, 16], [4096, 1, 2], [5000, 130, 2], [1000, 64, 16], [200000, 512, 1]]) {
    const { Tx, NL } = fsGeometry(T, W);
    const written: number[] = [];
    for (const { s, two } of fsMerges(Tx, rows)) {
      written.push(2 * s);
      if (two) written.push(4 * s);
      assert.ok(!two || rows * Tx <= FS_MERGE2_MAX, 'two levels a launch only where the merges are latency-bound');
      assert.ok(!two || 2 * s < Tx, 'two levels only where both exist');
    }
    const want: number[] = [];
    for (let size = 2 * FS_LEAVES; size <= FS_CHUNK << (NL - 1); size *= 2) if (size / 2 < Tx) want.push(size);
    assert.deepEqual(written, want, `T ${T}, W ${W}, ${rows} rows`);
  }
});
