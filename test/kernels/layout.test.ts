// Tests of src/cpu/kernels/layout.ts. Oracles: the index formula out[b, h, t, d] = inp[b, t, h*HS + d]
// written here; fromHeads(toHeads(x)) = x; the backward pairs as adjoints (<toHeads x, y> =
// <x, toHeadsBackward y>, exact for a permutation, which is what makes fromHeads its backward);
// accumulation of the *Backward variants; residual add and its backward.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  addInPlace, fromHeads, fromHeadsBackward, residualBackward, residualForward, toHeads, toHeadsBackward,
} from '../../src/cpu/kernels/layout.js';
import { rng, randArray } from '../helpers.js';

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

const shapes: [number, number, number, number][] = [[1, 1, 1, 1], [2, 7, 3, 5], [1, 13, 4, 48], [3, 1, 2, 7]];

describe('toHeads / fromHeads', () => {
  for (const [B, T, NH, HS] of shapes) {
    const name = `B=${B} T=${T} NH=${NH} HS=${HS}`;
    test(`${name}: index formula and round trip`, () => {
      const n = B * T * NH * HS;
      const x = randArray(n, 1 + n);
      const heads = new Float32Array(n).fill(NaN);
      toHeads(heads, x, B, T, NH, HS);
      for (let b = 0; b < B; b++) for (let h = 0; h < NH; h++) for (let t = 0; t < T; t++) for (let d = 0; d < HS; d++) {
        assert.equal(heads[((b * NH + h) * T + t) * HS + d], x[(b * T + t) * NH * HS + h * HS + d]);
      }
      const back = new Float32Array(n).fill(NaN);
      fromHeads(back, heads, B, T, NH, HS);
      assert.deepEqual(back, x);
    });

    test(`${name}: backward variants are the adjoints and accumulate`, () => {
      const n = B * T * NH * HS;
      const x = randArray(n, 2), y = randArray(n, 3), d0 = randArray(n, 4);
      // toHeads: (B, T, C) -> (B, NH, T, HS); its backward maps a (B, NH, T, HS) gradient back
      const tx = new Float32Array(n);
      toHeads(tx, x, B, T, NH, HS);
      const g = d0.slice();
      toHeadsBackward(g, y, B, T, NH, HS);
      const ty = Float64Array.from(g, (v, i) => v - d0[i]);
      assert.ok(Math.abs(dot(tx, y) - dot(x, ty)) < 1e-5, '<toHeads x, y> = <x, toHeadsBackward y>');
      // and it equals fromHeads, the forward inverse (the backward of a permutation is its inverse)
      const fy = new Float32Array(n);
      fromHeads(fy, y, B, T, NH, HS);
      for (let i = 0; i < n; i++) assert.ok(Math.abs(ty[i] - fy[i]) < 1e-6);
      toHeadsBackward(g, y, B, T, NH, HS);
      for (let i = 0; i < n; i++) assert.ok(Math.abs(g[i] - (d0[i] + 2 * fy[i])) < 1e-6, 'accumulates');
      // fromHeads: (B, NH, T, HS) -> (B, T, C)
      const fx = new Float32Array(n);
      fromHeads(fx, x, B, T, NH, HS);
      const g2 = d0.slice();
      fromHeadsBackward(g2, y, B, T, NH, HS);
      const fty = Float64Array.from(g2, (v, i) => v - d0[i]);
      assert.ok(Math.abs(dot(fx, y) - dot(x, fty)) < 1e-5, '<fromHeads x, y> = <x, fromHeadsBackward y>');
    });
  }
});

describe('residual', () => {
  test('forward adds, backward passes the gradient to both inputs (accumulating), addInPlace', () => {
    const N = 13;
    const a = randArray(N, 5), b = randArray(N, 6), dout = randArray(N, 7);
    const out = new Float32Array(N).fill(NaN);
    residualForward(out, a, b, N);
    for (let i = 0; i < N; i++) assert.equal(out[i], Math.fround(a[i] + b[i]));
    const da = randArray(N, 8), db = randArray(N, 9);
    const da0 = da.slice(), db0 = db.slice();
    residualBackward(da, db, dout, N);
    residualBackward(da, db, dout, N);
    for (let i = 0; i < N; i++) {
      assert.ok(Math.abs(da[i] - (da0[i] + 2 * dout[i])) < 1e-6);
      assert.ok(Math.abs(db[i] - (db0[i] + 2 * dout[i])) < 1e-6);
    }
    const acc = a.slice();
    addInPlace(acc, b, N);
    assert.deepEqual(acc, out);
  });
});
