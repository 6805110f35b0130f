// Tests of src/cpu/kernels/matmul.ts (the linear layer) against a plain float64 reference written
// here: forward on awkward shapes (odd OC, N and C not multiples of the 3 x 4 tile, a shape large
// enough to take the chunked-panel path), bias null and non-null; backward against the analytic
// float64 gradients of that reference AND against central finite differences of a float64 loss
// sum(dout * forward) (linear in each argument, so differences are exact up to rounding);
// accumulation semantics (grads start non-zero; two calls add twice).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { matmulBackward, matmulForward } from '../../src/cpu/kernels/matmul.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    s = (s ^ (s >>> 12)) >>> 0;
    return s / 2 ** 32;
  };
}
function randArray(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed), a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}
function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= atol + rtol * Math.abs(want[i]))) {
      assert.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (err ${err.toExponential(2)})`);
    }
  }
}

/** float64 reference: out[n, o] = b[o] + sum_c x[n, c] w[o, c]. */
function refForward(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number> | null, N: number, C: number, OC: number): Float64Array {
  const out = new Float64Array(N * OC);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < OC; o++) {
      let s = b ? b[o] : 0;
      for (let c = 0; c < C; c++) s += x[n * C + c] * w[o * C + c];
      out[n * OC + o] = s;
    }
  }
  return out;
}

const shapes: [number, number, number][] = [
  [1, 1, 1], [1, 5, 3], [7, 5, 13], [13, 48, 7], [7, 48, 65], [12, 8, 16], [13, 5, 1], [1, 48, 129],
];

describe('matmulForward', () => {
  for (const [N, C, OC] of shapes) {
    for (const withBias of [false, true]) {
      test(`N=${N} C=${C} OC=${OC} bias=${withBias}`, () => {
        const x = randArray(N * C, 1 + N), w = randArray(OC * C, 2 + C), b = withBias ? randArray(OC, 3) : null;
        const out = new Float32Array(N * OC).fill(NaN); // forward overwrites: stale contents must not leak
        matmulForward(out, x, w, b, N, C, OC);
        // one float32 rounding of a float64 sum of C products of values in [-1, 1]
        assertClose(out, refForward(x, w, b, N, C, OC), 1e-6 * Math.sqrt(C), 1e-6, 'out');
      });
    }
  }

  test('wide output (chunked packing path): N=3 C=2048 OC=601', () => {
    const N = 3, C = 2048, OC = 601;
    const x = randArray(N * C, 11), w = randArray(OC * C, 12), b = randArray(OC, 13);
    const out = new Float32Array(N * OC);
    matmulForward(out, x, w, b, N, C, OC);
    assertClose(out, refForward(x, w, b, N, C, OC), 1e-4, 1e-6, 'out');
  });

  test('large magnitudes keep relative accuracy', () => {
    const N = 7, C = 48, OC = 13;
    const x = randArray(N * C, 21, 1e4), w = randArray(OC * C, 22, 1e3);
    const out = new Float32Array(N * OC);
    matmulForward(out, x, w, null, N, C, OC);
    const ref = refForward(x, w, null, N, C, OC);
    let scale = 0;
    for (const r of ref) scale = Math.max(scale, Math.abs(r));
    assertClose(out, ref, 1e-6 * scale, 1e-6, 'out');
  });
});

describe('matmulBackward', () => {
  for (const [N, C, OC] of shapes) {
    for (const withBias of [false, true]) {
      test(`N=${N} C=${C} OC=${OC} bias=${withBias}: analytic float64 gradients, accumulation`, () => {
        const x = randArray(N * C, 31 + N), w = randArray(OC * C, 32 + C), dout = randArray(N * OC, 33 + OC);
        // reference gradients in float64: dx = dout w, dw = dout^T x, db = column sums of dout
        const dxRef = new Float64Array(N * C), dwRef = new Float64Array(OC * C), dbRef = new Float64Array(OC);
        for (let n = 0; n < N; n++) {
          for (let o = 0; o < OC; o++) {
            const d = dout[n * OC + o];
            dbRef[o] += d;
            for (let c = 0; c < C; c++) {
              dxRef[n * C + c] += d * w[o * C + c];
              dwRef[o * C + c] += d * x[n * C + c];
            }
          }
        }
        // gradients start non-zero: the kernel must add, not overwrite
        const dx0 = randArray(N * C, 41), dw0 = randArray(OC * C, 42), db0 = randArray(OC, 43);
        const dx = dx0.slice(), dw = dw0.slice(), db = withBias ? db0.slice() : null;
        matmulBackward(dx, dw, db, dout, x, w, N, C, OC);
        const plus = (a: Float32Array, r: Float64Array, k: number) => Float64Array.from(r, (v, i) => a[i] + k * v);
        const tolX = 2e-6 * Math.sqrt(OC), tolW = 2e-6 * Math.sqrt(N);
        assertClose(dx, plus(dx0, dxRef, 1), tolX, 1e-6, 'dinp');
        assertClose(dw, plus(dw0, dwRef, 1), tolW, 1e-6, 'dweight');
        if (db) assertClose(db, plus(db0, dbRef, 1), tolW, 1e-6, 'dbias');
        // a second call adds the same gradients again
        matmulBackward(dx, dw, db, dout, x, w, N, C, OC);
        assertClose(dx, plus(dx0, dxRef, 2), 2 * tolX, 1e-6, 'dinp after two calls');
        assertClose(dw, plus(dw0, dwRef, 2), 2 * tolW, 1e-6, 'dweight after two calls');
        if (db) assertClose(db, plus(db0, dbRef, 2), 2 * tolW, 1e-6, 'dbias after two calls');
      });
    }
  }

  for (const [N, C, OC] of [[1, 5, 3], [7, 5, 13], [13, 48, 7]] as [number, number, number][]) {
    test(`N=${N} C=${C} OC=${OC}: central finite differences of a float64 loss`, () => {
      const x = randArray(N * C, 51), w = randArray(OC * C, 52), b = randArray(OC, 53), dout = randArray(N * OC, 54);
      const dx = new Float32Array(N * C), dw = new Float32Array(OC * C), db = new Float32Array(OC);
      matmulBackward(dx, dw, db, dout, x, w, N, C, OC);
      // L(x, w, b) = sum dout * forward(x, w, b), evaluated in float64 on float64 copies
      const X = Float64Array.from(x), W = Float64Array.from(w), Bb = Float64Array.from(b);
      const loss = () => {
        const out = refForward(X, W, Bb, N, C, OC);
        let s = 0;
        for (let i = 0; i < out.length; i++) s += dout[i] * out[i];
        return s;
      };
      const h = 1e-3;
      const fd = (arr: Float64Array, i: number) => {
        const keep = arr[i];
        arr[i] = keep + h;
        const up = loss();
        arr[i] = keep - h;
        const down = loss();
        arr[i] = keep;
        return (up - down) / (2 * h);
      };
      for (let i = 0; i < X.length; i++) assert.ok(Math.abs(dx[i] - fd(X, i)) < 1e-5, `dinp[${i}]`);
      for (let i = 0; i < W.length; i++) assert.ok(Math.abs(dw[i] - fd(W, i)) < 1e-5, `dweight[${i}]`);
      for (let i = 0; i < Bb.length; i++) assert.ok(Math.abs(db[i] - fd(Bb, i)) < 1e-5, `dbias[${i}]`);
    });
  }

  test('chunked packing path: N=3 C=2048 OC=601', () => {
    const N = 3, C = 2048, OC = 601;
    const x = randArray(N * C, 61), w = randArray(OC * C, 62), dout = randArray(N * OC, 63);
    const dx = new Float32Array(N * C), dw = new Float32Array(OC * C);
    matmulBackward(dx, dw, null, dout, x, w, N, C, OC);
    const dxRef = new Float64Array(N * C), dwRef = new Float64Array(OC * C);
    for (let n = 0; n < N; n++) {
      for (let o = 0; o < OC; o++) {
        const d = dout[n * OC + o];
        for (let c = 0; c < C; c++) {
          dxRef[n * C + c] += d * w[o * C + c];
          dwRef[o * C + c] += d * x[n * C + c];
        }
      }
    }
    assertClose(dx, dxRef, 1e-4, 1e-6, 'dinp');
    assertClose(dw, dwRef, 1e-5, 1e-6, 'dweight');
  });
});
