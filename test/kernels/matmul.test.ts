// Tests of src/cpu/kernels/matmul.ts (the linear layer) against a plain float64 reference written
// here: forward on awkward shapes (odd OC, N and C not multiples of the 3 x 4 tile, a shape large
// enough to take the chunked-panel path), bias null and non-null; backward against the analytic
// float64 gradients of that reference AND against central finite differences of a float64 loss
// sum(dout * forward) (linear in each argument, so differences are exact up to rounding);
// accumulation semantics (grads start non-zero; two calls add twice). Then the threaded split:
// bit-identical to the single-threaded kernel (see the block at the end).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  MatmulBackwardTask, MatmulForwardTask, matmulBackward, matmulBackwardPart, matmulBackwardSerial, matmulForward,
  matmulForwardPart, matmulForwardSerial,
} from '../../src/cpu/kernels/matmul.js';
import { allocF32, partsFor, threadCount, whenReady } from '../../src/cpu/threads.js';
import { rng, randArray, assertClose } from '../helpers.js';

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

// Threads (src/cpu/threads.ts): a split call must equal the single-threaded kernel bit for bit, on
// shapes above the hand-off threshold whose N and OC do not divide into the parts evenly. The
// oracle is matmul*Serial (the calling thread alone), itself checked against float64 above.
describe('matmul on worker threads', () => {
  const threaded = threadCount() > 1;
  const skip = threaded ? false : 'one thread (SPARSEK_THREADS=1 or a 1-core machine)';
  // N C OC: N*C*OC >= 1e6; N = 1001 and 7 leave partial 3-row tiles, N = 2 gives one part no rows
  const big: [number, number, number][] = [[257, 67, 131], [1001, 33, 61], [7, 300, 997], [2, 700, 1001]];
  const shared = (n: number, seed: number): Float32Array => {
    const a = allocF32(n);
    a.set(randArray(n, seed));
    return a;
  };
  const sameBits = (got: Float32Array, want: Float32Array, what: string) => {
    assert.equal(got.length, want.length, `${what}: length`);
    for (let i = 0; i < want.length; i++) {
      if (!Object.is(got[i], want[i])) assert.fail(`${what}[${i}]: threaded ${got[i]}, single-threaded ${want[i]}`);
    }
  };

  test('workers start', { skip }, async () => {
    assert.equal(await whenReady(), threadCount());
  });

  for (const [N, C, OC] of big) {
    for (const withBias of [false, true]) {
      test(`forward N=${N} C=${C} OC=${OC} bias=${withBias}: bit-identical to one thread`, { skip }, async () => {
        await whenReady();
        const x = shared(N * C, 71), w = shared(OC * C, 72), b = withBias ? shared(OC, 73) : null;
        const out = allocF32(N * OC).fill(NaN), want = new Float32Array(N * OC).fill(NaN);
        if (N >= 6) assert.ok(partsFor(N * C * OC, Math.ceil(N / 3), [out, x, w, b]) > 1, 'this call is split');
        matmulForward(out, x, w, b, N, C, OC);
        matmulForwardSerial(want, x, w, b, N, C, OC);
        sameBits(out, want, 'out');
      });
      test(`backward N=${N} C=${C} OC=${OC} bias=${withBias}: bit-identical to one thread, accumulating`, { skip }, async () => {
        await whenReady();
        const x = shared(N * C, 81), w = shared(OC * C, 82), dout = shared(N * OC, 83);
        // gradients start non-zero and take two calls: the split must add, not overwrite
        const dx = shared(N * C, 84), dw = shared(OC * C, 85), db = withBias ? shared(OC, 86) : null;
        const dxWant = dx.slice(), dwWant = dw.slice(), dbWant = db ? db.slice() : null;
        assert.ok(partsFor(N * C * OC, Math.max(Math.ceil(N / 3), Math.ceil(OC / 3)), [dx, dw, db, dout, x, w]) > 1, 'this call is split');
        for (let r = 0; r < 2; r++) {
          matmulBackward(dx, dw, db, dout, x, w, N, C, OC);
          matmulBackwardSerial(dxWant, dwWant, dbWant, dout, x, w, N, C, OC);
        }
        sameBits(dx, dxWant, 'dinp');
        sameBits(dw, dwWant, 'dweight');
        if (db && dbWant) sameBits(db, dbWant, 'dbias');
      });
    }
  }

  // More parts than this machine has cores: every part run in turn on this thread must tile the
  // outputs exactly (no element missed, none written twice: accumulation would show a double add).
  for (const parts of [2, 3, 5, 8]) {
    test(`${parts} parts run in turn tile the outputs exactly`, () => {
      for (const [N, C, OC] of [[7, 5, 13], [13, 48, 7], [1, 9, 10], [29, 31, 37]] as [number, number, number][]) {
        const x = randArray(N * C, 91), w = randArray(OC * C, 92), b = randArray(OC, 93), dout = randArray(N * OC, 94);
        const out = new Float32Array(N * OC).fill(NaN), outWant = new Float32Array(N * OC);
        const fwd: MatmulForwardTask = { op: 'matmulForward', out, inp: x, weight: w, bias: b, N, C, OC };
        for (let p = 0; p < parts; p++) matmulForwardPart(fwd, p, parts);
        matmulForwardSerial(outWant, x, w, b, N, C, OC);
        sameBits(out, outWant, `out (${N}, ${C}, ${OC})`);
        const dx = randArray(N * C, 95), dw = randArray(OC * C, 96), db = randArray(OC, 97);
        const dxWant = dx.slice(), dwWant = dw.slice(), dbWant = db.slice();
        const bwd: MatmulBackwardTask = { op: 'matmulBackward', dinp: dx, dweight: dw, dbias: db, dout, inp: x, weight: w, N, C, OC };
        for (let p = 0; p < parts; p++) matmulBackwardPart(bwd, p, parts);
        matmulBackwardSerial(dxWant, dwWant, dbWant, dout, x, w, N, C, OC);
        sameBits(dx, dxWant, `dinp (${N}, ${C}, ${OC})`);
        sameBits(dw, dwWant, `dweight (${N}, ${C}, ${OC})`);
        sameBits(db, dbWant, `dbias (${N}, ${C}, ${OC})`);
      }
    });
  }

  test('small calls, decoding (N = 1) and plain arrays run inline', { skip }, () => {
    const sab = allocF32(4);
    assert.ok(sab.buffer instanceof SharedArrayBuffer, 'allocF32 shares memory when threads > 1');
    assert.equal(partsFor(999_999, 100, [sab]), 1, 'below the threshold');
    assert.equal(partsFor(1e8, 1, [sab]), 1, 'one row tile (N = 1)');
    assert.equal(partsFor(1e8, 100, [sab, new Float32Array(4)]), 1, 'a plain ArrayBuffer operand');
  });

  test('SPARSEK_THREADS: 1 means no workers and plain arrays; a bad value is an OptionError', () => {
    const run = (env: string, code: string) =>
      spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
        env: { ...process.env, SPARSEK_THREADS: env }, encoding: 'utf8', timeout: 20_000,
      });
    const threadsUrl = new URL('../../src/cpu/threads.ts', import.meta.url).href;
    const one = run('1', `import { allocF32, threadCount } from ${JSON.stringify(threadsUrl)};
      const a = allocF32(3);
      console.log(threadCount(), a.buffer instanceof SharedArrayBuffer, a.length);`);
    assert.equal(one.status, 0, one.stderr);
    assert.equal(one.stdout.trim(), '1 false 3');
    const bad = run('two', `import { threadCount } from ${JSON.stringify(threadsUrl)};
      try { threadCount(); } catch (e) { console.log(e.name, e.message); }`);
    assert.equal(bad.status, 0, bad.stderr);
    assert.equal(bad.stdout.trim(), 'OptionError SPARSEK_THREADS: expected a positive integer, got "two"');
  });
});
