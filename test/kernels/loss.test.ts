// Tests of src/cpu/kernels/loss.ts (softmax cross-entropy). Oracles: a float64 log-sum-exp written
// here; backward against central finite differences of the float64 loss sum_n w_n loss_n (h = 1e-4);
// ignored targets (-1) give loss 0 and no gradient; large and negative logits (+-1000) stay finite
// and exact; per-position dlosses and a scalar scale; accumulation into non-zero dlogits.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { crossEntropyBackward, crossEntropyForward } from '../../src/cpu/kernels/loss.js';
import { rng, randArray, assertClose } from '../helpers.js';

/** float64 per-position losses: log(sum_v exp(l_v)) - l_t, with the max shifted out. */
function refLosses(logits: ArrayLike<number>, targets: Int32Array, N: number, V: number): Float64Array {
  const out = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    if (targets[n] < 0) continue;
    const row = Array.from({ length: V }, (_, v) => logits[n * V + v]);
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((s, l) => s + Math.exp(l - max), 0));
    out[n] = lse - row[targets[n]];
  }
  return out;
}

function targetsFor(N: number, V: number, seed: number, ignoreEvery = 0): Int32Array {
  const r = rng(seed), t = new Int32Array(N);
  for (let n = 0; n < N; n++) t[n] = ignoreEvery > 0 && n % ignoreEvery === ignoreEvery - 1 ? -1 : Math.floor(r() * V);
  return t;
}

const shapes: [number, number][] = [[1, 5], [7, 13], [13, 48], [7, 1]];

describe('crossEntropy', () => {
  for (const [N, V] of shapes) {
    test(`N=${N} V=${V}: forward vs float64, probs sum to 1, backward vs finite differences`, () => {
      const logits = randArray(N * V, 1 + V, 4), targets = targetsFor(N, V, 2 + N, 3);
      const losses = new Float32Array(N).fill(NaN), probs = new Float32Array(N * V).fill(NaN);
      crossEntropyForward(losses, probs, logits, targets, N, V);
      assertClose(losses, refLosses(logits, targets, N, V), 1e-6, 1e-6, 'losses');
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let v = 0; v < V; v++) s += probs[n * V + v];
        assert.ok(Math.abs(s - 1) < 1e-6, `probs row ${n} sums to ${s}`);
      }
      // per-position upstream gradients, on top of non-zero dlogits
      const dl = randArray(N, 3);
      const d0 = randArray(N * V, 4);
      const dlogits = d0.slice();
      crossEntropyBackward(dlogits, dl, probs, targets, N, V);
      const L = Float64Array.from(logits), h = 1e-4;
      const loss = () => refLosses(L, targets, N, V).reduce((s, x, n) => s + dl[n] * x, 0);
      const fd = new Float64Array(N * V);
      for (let i = 0; i < L.length; i++) {
        const keep = L[i];
        L[i] = keep + h;
        const up = loss();
        L[i] = keep - h;
        const down = loss();
        L[i] = keep;
        fd[i] = (up - down) / (2 * h);
      }
      assertClose(dlogits, Float64Array.from(fd, (g, i) => d0[i] + g), 1e-6, 1e-5, 'dlogits');
      crossEntropyBackward(dlogits, dl, probs, targets, N, V);
      assertClose(dlogits, Float64Array.from(fd, (g, i) => d0[i] + 2 * g), 2e-6, 1e-5, 'dlogits after two calls');
    });
  }

  test('a scalar dlosses equals a per-position array filled with it', () => {
    const N = 13, V = 48;
    const logits = randArray(N * V, 5, 3), targets = targetsFor(N, V, 6, 4);
    const losses = new Float32Array(N), probs = new Float32Array(N * V);
    crossEntropyForward(losses, probs, logits, targets, N, V);
    const scale = 0.125; // exact in float32, so the array holds the same number as the scalar
    const a = new Float32Array(N * V), b = new Float32Array(N * V);
    crossEntropyBackward(a, scale, probs, targets, N, V);
    crossEntropyBackward(b, new Float32Array(N).fill(scale), probs, targets, N, V);
    assert.deepEqual(a, b);
    // each counted row of the gradient sums to zero (softmax minus one-hot)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let v = 0; v < V; v++) s += a[n * V + v];
      assert.ok(Math.abs(s) < 1e-7, `row ${n} sums to ${s}`);
    }
  });

  test('ignored targets (-1): loss 0 and no gradient', () => {
    const N = 7, V = 5;
    const logits = randArray(N * V, 7, 2);
    const targets = Int32Array.of(-1, 2, -1, -1, 0, 4, -1);
    const losses = new Float32Array(N), probs = new Float32Array(N * V);
    crossEntropyForward(losses, probs, logits, targets, N, V);
    const dlogits = new Float32Array(N * V);
    crossEntropyBackward(dlogits, 1, probs, targets, N, V);
    for (let n = 0; n < N; n++) {
      if (targets[n] >= 0) {
        assert.ok(losses[n] > 0);
        continue;
      }
      assert.equal(losses[n], 0);
      for (let v = 0; v < V; v++) assert.equal(dlogits[n * V + v], 0, `row ${n} has no gradient`);
    }
  });

  test('large and negative logits: no overflow, exact loss where the target underflows float32', () => {
    const V = 5;
    // row 0: the target has logit -1000 while another is +1000: loss = 2000 exactly (prob ~ e^-2000)
    // row 1: all equal and huge: loss = log V
    // row 2: target dominates by 1000: loss ~ 0
    const logits = Float32Array.of(1000, -1000, 0, 3, -5, 1e4, 1e4, 1e4, 1e4, 1e4, 0, 0, 1000, 0, 0);
    const targets = Int32Array.of(1, 3, 2);
    const losses = new Float32Array(3), probs = new Float32Array(3 * V);
    crossEntropyForward(losses, probs, logits, targets, 3, V);
    assertClose(losses, [2000, Math.log(5), 0], 1e-6, 1e-6, 'losses');
    for (const p of probs) assert.ok(Number.isFinite(p) && p >= 0 && p <= 1);
    const dlogits = new Float32Array(3 * V);
    crossEntropyBackward(dlogits, 1, probs, targets, 3, V);
    assertClose(dlogits.subarray(0, V), [1, -1, 0, 0, 0], 1e-7, 0, 'dlogits row 0');
    assertClose(dlogits.subarray(V, 2 * V), [0.2, 0.2, 0.2, -0.8, 0.2], 1e-7, 1e-6, 'dlogits row 1');
  });
});
