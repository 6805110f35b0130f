// Tests of src/cpu/kernels/embedding.ts. Oracles: the lookup by index written here; the backward
// against a float64 scatter-add written here (the analytic gradient of sum(dout * wte[ids])) and
// central finite differences of that float64 loss at a few coordinates; repeated ids (the same token
// many times must sum), ids 0 and V - 1, N = 1, accumulation into a non-zero dwte.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { embeddingBackward, embeddingForward } from '../../src/cpu/kernels/embedding.js';
import { rng, randArray, assertClose } from '../helpers.js';

function randIds(n: number, V: number, seed: number): Int32Array {
  const r = rng(seed), ids = new Int32Array(n);
  for (let i = 0; i < n; i++) ids[i] = Math.floor(r() * V);
  if (n > 2) {
    ids[0] = V - 1;
    ids[1] = 0;
    ids[n - 1] = ids[0]; // a repeat, at the far end
  }
  return ids;
}

const shapes: [number, number, number][] = [[1, 5, 1], [7, 5, 3], [13, 48, 11], [113, 5, 7]];

describe('embedding', () => {
  for (const [N, C, V] of shapes) {
    test(`N=${N} C=${C} V=${V}: forward copies rows; backward scatter-adds, accumulates`, () => {
      const wte = randArray(V * C, 1 + V), ids = randIds(N, V, 2 + N), dout = randArray(N * C, 3);
      const out = new Float32Array(N * C).fill(NaN);
      embeddingForward(out, ids, wte, N, C);
      for (let n = 0; n < N; n++) {
        for (let c = 0; c < C; c++) assert.equal(out[n * C + c], wte[ids[n] * C + c], `out[${n}, ${c}]`);
      }
      const ref = new Float64Array(V * C);
      for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) ref[ids[n] * C + c] += dout[n * C + c];
      const d0 = randArray(V * C, 4);
      const dwte = d0.slice();
      embeddingBackward(dwte, dout, ids, N, C);
      assertClose(dwte, Float64Array.from(ref, (v, i) => d0[i] + v), 1e-6, 1e-6, 'dwte');
      embeddingBackward(dwte, dout, ids, N, C);
      assertClose(dwte, Float64Array.from(ref, (v, i) => d0[i] + 2 * v), 2e-6, 1e-6, 'dwte after two calls');
      // rows of tokens that do not occur are untouched
      const seen = new Set(ids);
      for (let v = 0; v < V; v++) {
        if (seen.has(v)) continue;
        for (let c = 0; c < C; c++) assert.equal(dwte[v * C + c], d0[v * C + c], `row ${v} untouched`);
      }
    });
  }

  test('finite differences of the float64 loss sum(dout * wte[ids])', () => {
    const N = 13, C = 5, V = 4;
    const wte = randArray(V * C, 5), ids = randIds(N, V, 6), dout = randArray(N * C, 7);
    const dwte = new Float32Array(V * C);
    embeddingBackward(dwte, dout, ids, N, C);
    const W = Float64Array.from(wte), h = 1e-3;
    const loss = () => {
      let s = 0;
      for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) s += dout[n * C + c] * W[ids[n] * C + c];
      return s;
    };
    for (let i = 0; i < W.length; i++) {
      const keep = W[i];
      W[i] = keep + h;
      const up = loss();
      W[i] = keep - h;
      const down = loss();
      W[i] = keep;
      assert.ok(Math.abs((up - down) / (2 * h) - dwte[i]) < 1e-5, `dwte[${i}]`);
    }
  });

  test('a token repeated many times (interleaved with another) is summed in float64 and rounded once', () => {
    const N = 4097, C = 1, V = 2;
    const ids = Int32Array.from({ length: N }, (_, n) => (n % 2 === 0 ? 1 : 0)); // 2049 ones, 2048 zeros
    // token 1 gets 1 + 2048 * 2^-24; adding into float32 one occurrence at a time would lose every
    // 2^-24 term (half an ulp of 1, rounded to even)
    const dout = new Float32Array(N).fill(2 ** -24);
    dout[0] = 1;
    const dwte = new Float32Array(V * C);
    embeddingBackward(dwte, dout, ids, N, C);
    assert.equal(dwte[1], Math.fround(1 + 2048 * 2 ** -24));
    assert.equal(dwte[0], Math.fround(2048 * 2 ** -24));
  });
});
