// Tests of src/cpu/kernels/norm.ts (RMSNorm, LayerNorm). Oracles: plain float64 forwards written
// here; backward against central finite differences of the float64 loss sum(dout * forward(...)),
// taken over every input and weight coordinate (h = 1e-4 in float64, truncation error ~1e-9);
// accumulation semantics (non-zero starting grads, two calls add twice). Awkward shapes: N = 1, 7, 13;
// C = 1, 5, 48; inputs with a large common offset (LayerNorm's variance must not cancel).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { layernormBackward, layernormForward, rmsnormBackward, rmsnormForward } from '../../src/cpu/kernels/norm.js';
import { rng, randArray, assertClose } from '../helpers.js';

function refRmsnorm(x: ArrayLike<number>, w: ArrayLike<number>, N: number, C: number, eps: number): Float64Array {
  const out = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    let ms = 0;
    for (let c = 0; c < C; c++) ms += x[n * C + c] ** 2 / C;
    const r = 1 / Math.sqrt(ms + eps);
    for (let c = 0; c < C; c++) out[n * C + c] = x[n * C + c] * r * w[c];
  }
  return out;
}

function refLayernorm(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number>, N: number, C: number, eps: number): Float64Array {
  const out = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[n * C + c] / C;
    let variance = 0;
    for (let c = 0; c < C; c++) variance += (x[n * C + c] - mean) ** 2 / C;
    for (let c = 0; c < C; c++) out[n * C + c] = ((x[n * C + c] - mean) / Math.sqrt(variance + eps)) * w[c] + b[c];
  }
  return out;
}

/** Central differences of L = sum(dout * f()) with respect to every entry of each array in args. */
function finiteDiffs(f: () => Float64Array, dout: ArrayLike<number>, args: Float64Array[], h = 1e-4): Float64Array[] {
  const loss = () => {
    const y = f();
    let s = 0;
    for (let i = 0; i < y.length; i++) s += dout[i] * y[i];
    return s;
  };
  return args.map((a) => {
    const g = new Float64Array(a.length);
    for (let i = 0; i < a.length; i++) {
      const keep = a[i];
      a[i] = keep + h;
      const up = loss();
      a[i] = keep - h;
      const down = loss();
      a[i] = keep;
      g[i] = (up - down) / (2 * h);
    }
    return g;
  });
}

const shapes: [number, number][] = [[1, 1], [1, 5], [7, 5], [13, 48], [7, 48]];

describe('rmsnorm', () => {
  for (const [N, C] of shapes) {
    test(`N=${N} C=${C}: forward vs float64, backward vs finite differences, accumulation`, () => {
      const eps = 1e-5;
      const x = randArray(N * C, 1 + C), w = randArray(C, 2, 0.5, 1), dout = randArray(N * C, 3);
      const out = new Float32Array(N * C).fill(NaN), rstd = new Float32Array(N);
      rmsnormForward(out, rstd, x, w, N, C, eps);
      assertClose(out, refRmsnorm(x, w, N, C, eps), 1e-6, 1e-6, 'out');
      for (let n = 0; n < N; n++) {
        let ms = 0;
        for (let c = 0; c < C; c++) ms += x[n * C + c] ** 2 / C;
        assertClose([rstd[n]], [1 / Math.sqrt(ms + eps)], 0, 1e-6, `rstd[${n}]`);
      }
      const X = Float64Array.from(x), W = Float64Array.from(w);
      const [dxRef, dwRef] = finiteDiffs(() => refRmsnorm(X, W, N, C, eps), dout, [X, W]);
      const dx0 = randArray(N * C, 4), dw0 = randArray(C, 5);
      const dx = dx0.slice(), dw = dw0.slice();
      rmsnormBackward(dx, dw, dout, x, w, rstd, N, C);
      const plus = (a: Float32Array, r: Float64Array, k: number) => Float64Array.from(r, (v, i) => a[i] + k * v);
      assertClose(dx, plus(dx0, dxRef, 1), 2e-5, 1e-4, 'dinp');
      assertClose(dw, plus(dw0, dwRef, 1), 2e-5, 1e-4, 'dweight');
      rmsnormBackward(dx, dw, dout, x, w, rstd, N, C);
      assertClose(dx, plus(dx0, dxRef, 2), 4e-5, 1e-4, 'dinp after two calls');
      assertClose(dw, plus(dw0, dwRef, 2), 4e-5, 1e-4, 'dweight after two calls');
    });
  }

  test('scale invariance: rmsnorm(a x) = rmsnorm(x) when eps is negligible', () => {
    const N = 7, C = 48;
    const x = randArray(N * C, 6), w = randArray(C, 7);
    const x2 = Float32Array.from(x, (v) => v * 64); // a power of two: x2 is exact
    const o1 = new Float32Array(N * C), o2 = new Float32Array(N * C), r = new Float32Array(N);
    rmsnormForward(o1, r, x, w, N, C, 1e-12);
    rmsnormForward(o2, r, x2, w, N, C, 1e-12);
    assertClose(o2, o1, 1e-6, 1e-6, 'out');
  });
});

describe('layernorm', () => {
  for (const [N, C] of shapes.filter(([, C]) => C > 1)) {
    test(`N=${N} C=${C}: forward vs float64, backward vs finite differences, accumulation`, () => {
      const eps = 1e-5;
      const x = randArray(N * C, 11 + C, 2, 0.3), w = randArray(C, 12, 0.5, 1), b = randArray(C, 13), dout = randArray(N * C, 14);
      const out = new Float32Array(N * C).fill(NaN), mean = new Float32Array(N), rstd = new Float32Array(N);
      layernormForward(out, mean, rstd, x, w, b, N, C, eps);
      assertClose(out, refLayernorm(x, w, b, N, C, eps), 1e-5, 1e-5, 'out');
      const X = Float64Array.from(x), W = Float64Array.from(w), Bb = Float64Array.from(b);
      const [dxRef, dwRef, dbRef] = finiteDiffs(() => refLayernorm(X, W, Bb, N, C, eps), dout, [X, W, Bb]);
      const dx0 = randArray(N * C, 15), dw0 = randArray(C, 16), db0 = randArray(C, 17);
      const dx = dx0.slice(), dw = dw0.slice(), db = db0.slice();
      layernormBackward(dx, dw, db, dout, x, w, mean, rstd, N, C);
      const plus = (a: Float32Array, r: Float64Array, k: number) => Float64Array.from(r, (v, i) => a[i] + k * v);
      assertClose(dx, plus(dx0, dxRef, 1), 2e-5, 1e-4, 'dinp');
      assertClose(dw, plus(dw0, dwRef, 1), 2e-5, 1e-4, 'dweight');
      assertClose(db, plus(db0, dbRef, 1), 2e-5, 1e-4, 'dbias');
      layernormBackward(dx, dw, db, dout, x, w, mean, rstd, N, C);
      assertClose(dx, plus(dx0, dxRef, 2), 4e-5, 1e-4, 'dinp after two calls');
      assertClose(dw, plus(dw0, dwRef, 2), 4e-5, 1e-4, 'dweight after two calls');
      assertClose(db, plus(db0, dbRef, 2), 4e-5, 1e-4, 'dbias after two calls');
    });
  }

  test('C=1: output is the bias (zero variance), gradient to the input is zero', () => {
    const N = 7, C = 1;
    const x = randArray(N, 21), w = randArray(1, 22), b = randArray(1, 23), dout = randArray(N, 24);
    const out = new Float32Array(N), mean = new Float32Array(N), rstd = new Float32Array(N);
    layernormForward(out, mean, rstd, x, w, b, N, C, 1e-5);
    for (let n = 0; n < N; n++) assert.equal(out[n], b[0]);
    const dx = new Float32Array(N), dw = new Float32Array(1), db = new Float32Array(1);
    layernormBackward(dx, dw, db, dout, x, w, mean, rstd, N, C);
    for (let n = 0; n < N; n++) assert.ok(Math.abs(dx[n]) < 1e-6, `dinp[${n}] = ${dx[n]}`);
    let sum = 0;
    for (const d of dout) sum += d;
    assertClose(db, [sum], 1e-6, 1e-6, 'dbias');
  });

  test('large common offset: variance does not cancel (mean 1000, std ~0.6)', () => {
    const N = 13, C = 48, eps = 1e-5;
    const x = randArray(N * C, 31, 1, 1000), w = randArray(C, 32, 0.5, 1), b = randArray(C, 33);
    const out = new Float32Array(N * C), mean = new Float32Array(N), rstd = new Float32Array(N);
    layernormForward(out, mean, rstd, x, w, b, N, C, eps);
    // float32 inputs near 1000 are exact in float64, so the reference sees the same numbers
    assertClose(out, refLayernorm(x, w, b, N, C, eps), 2e-5, 2e-5, 'out');
  });
});
