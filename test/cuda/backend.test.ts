// Tests of src/cuda/backend.ts: every op of the Backend interface on the GPU against the CPU kernels
// (src/cpu/kernels/*.ts, themselves tested against float64 references and finite differences), on
// awkward shapes (N = 1, 7, 113; C = 48; odd V and OC), with accumulating backwards started from
// non-zero gradients. Tolerances follow from fp32: moves and copies must be bit-exact; ops whose
// CUDA kernel forms each value in double from the same operands (rmsnorm, rope, embedding backward,
// scores) within 1e-6 relative; float-math ops (swiglu, softmax) within 1e-5 relative; cuBLAS
// products within gamma_K = K * 2^-24 of sum |a_k b_k| (the classical bound of a K-term fp32 sum).
// Also the arena (allocating and freeing in a loop leaves no net allocation), the kernel cache,
// compile errors and the call checker. With no CUDA device the suite is SKIPPED, with the reason.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ArgumentError, ShapeError } from '../../src/core/errors.js';
import { cudaAvailability, CudaError, KernelCompileError } from '../../src/cuda/runtime.js';
import { CudaBackend } from '../../src/cuda/backend.js';
import type { CudaBuffer, CudaIntBuffer } from '../../src/cuda/backend.js';
import { embeddingBackward, embeddingForward } from '../../src/cpu/kernels/embedding.js';
import { layernormBackward, layernormForward, rmsnormBackward, rmsnormForward } from '../../src/cpu/kernels/norm.js';
import { matmulBackward, matmulForward } from '../../src/cpu/kernels/matmul.js';
import { addInPlace, fromHeads, toHeads } from '../../src/cpu/kernels/layout.js';
import { ropeBackward, ropeForward, ropePartialBackward, ropePartialForward } from '../../src/cpu/kernels/rope.js';
import { geluBackward, geluErfBackward, geluErfForward, geluForward, swigluBackward, swigluForward } from '../../src/cpu/kernels/activation.js';
import { crossEntropyBackward, crossEntropyForward } from '../../src/cpu/kernels/loss.js';
import { makeAttention } from '../../src/cpu/attention-layer.js';
import { rng } from '../helpers.js';
import { backend, gpuTest, rand, dev, devInt } from './gpu.js';

const avail = cudaAvailability();

function randInts(n: number, seed: number, lo: number, hi: number): Int32Array {
  const r = rng(seed), a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + Math.floor(r() * (hi - lo));
  return a;
}
function abs(a: Float32Array): Float32Array {
  return a.map(Math.abs);
}

/** |got - want| <= tol(i) everywhere, with the first failure named. */
function assertWithin(got: ArrayLike<number>, want: ArrayLike<number>, tol: (i: number) => number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= tol(i))) assert.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (err ${err.toExponential(2)}, tol ${tol(i).toExponential(2)})`);
  }
}
function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  assertWithin(got, want, (i) => atol + rtol * Math.abs(want[i]), what);
}
function assertExact(got: Float32Array, want: Float32Array, what: string): void {
  assertWithin(got, want, () => 0, what);
}

describe('CUDA backend against the CPU kernels', () => {
  gpuTest('device and libraries are reported', () => {
    if (!avail.available) return;
    const rt = avail.runtime;
    assert.match(rt.arch, /^sm_\d+$/);
    assert.ok(rt.name.length > 0);
    console.log(`# ${rt.name} (${rt.arch}), ${rt.multiprocessors} SMs, driver ${rt.driverVersion}, NVRTC ${rt.nvrtcVersion.join('.')}, cuBLAS ${rt.cublasVersion}`);
    console.log(`# libraries: ${rt.libraries.lines.join('; ')}`);
  });

  gpuTest('memory: alloc is zero-filled; upload, download, views, zero, fill', () => {
    const be = backend();
    const b = be.alloc(113);
    assert.deepEqual(Array.from(be.download(b)), new Array(113).fill(0));
    const x = rand(113, 1);
    be.upload(b, x);
    assertExact(be.download(b), x, 'round trip');
    const v = be.view(b, 7, 48);
    assert.equal(be.length(v), 48);
    assertExact(be.download(v), x.subarray(7, 55), 'view reads its parent');
    be.zero(v);
    const y = x.slice();
    y.fill(0, 7, 55);
    assertExact(be.download(b), y, 'zeroing a view zeroes the parent slice only');
    be.fill(v, -2.5);
    y.fill(-2.5, 7, 55);
    assertExact(be.download(b), y, 'fill');
    assert.throws(() => be.view(b, 100, 48), ShapeError);
    be.free(v); // a view owns nothing: no-op, as on the CPU
    assert.throws(() => be.upload(v, new Float32Array(49)), ShapeError);
    be.free(b);
    assert.throws(() => be.free(b), /freed twice/);
  });

  for (const N of [1, 7, 113]) {
    gpuTest(`embedding forward and backward, N=${N}, C=48, V=37 (repeated ids)`, () => {
      const be = backend();
      const C = 48, V = 37;
      const ids = randInts(N, 10 + N, 0, V), wte = rand(V * C, 11), dout = rand(N * C, 12), dwte0 = rand(V * C, 13);
      const out = be.alloc(N * C), dIds = devInt(ids), dWte = dev(wte), dDout = dev(dout), dDwte = dev(dwte0);
      be.embeddingForward(out, dIds, dWte, N, C);
      const want = new Float32Array(N * C);
      embeddingForward(want, ids, wte, N, C);
      assertExact(be.download(out), want, 'out');
      be.embeddingBackward(dDwte, dDout, dIds, N, C);
      const dwte = dwte0.slice();
      embeddingBackward(dwte, dout, ids, N, C);
      // same float64 sums in the same order, rounded once: equal up to the last bit
      assertClose(be.download(dDwte), dwte, 0, 1e-7, 'dwte');
      for (const b of [out, dWte, dDout, dDwte]) be.free(b);
      be.free(dIds);
    });

    gpuTest(`rmsnorm forward and backward, N=${N}, C=48`, () => {
      const be = backend();
      const C = 48, eps = 1e-5;
      const x = rand(N * C, 20 + N, 2, 0.5), w = rand(C, 21, 1, 1), dout = rand(N * C, 22), dx0 = rand(N * C, 23), dw0 = rand(C, 24);
      const out = be.alloc(N * C), rstd = be.alloc(N), dX = dev(x), dW = dev(w), dDout = dev(dout), dDx = dev(dx0), dDw = dev(dw0);
      be.rmsnormForward(out, rstd, dX, dW, N, C, eps);
      const wantOut = new Float32Array(N * C), wantRstd = new Float32Array(N);
      rmsnormForward(wantOut, wantRstd, x, w, N, C, eps);
      assertClose(be.download(rstd), wantRstd, 0, 1e-6, 'rstd');
      assertClose(be.download(out), wantOut, 1e-7, 1e-6, 'out');
      be.rmsnormBackward(dDx, dDw, dDout, dX, dW, rstd, N, C);
      const dx = dx0.slice(), dw = dw0.slice();
      rmsnormBackward(dx, dw, dout, x, w, wantRstd, N, C);
      assertClose(be.download(dDx), dx, 1e-6, 1e-6, 'dinp');
      assertClose(be.download(dDw), dw, 1e-6, 1e-6, 'dweight');
      for (const b of [out, rstd, dX, dW, dDout, dDx, dDw]) be.free(b);
    });

    for (const [C, OC] of [[48, 37], [37, 113]]) {
      gpuTest(`matmul forward and backward (cuBLAS), N=${N}, C=${C}, OC=${OC}, with and without bias`, () => {
        const be = backend();
        const inp = rand(N * C, 30 + N), w = rand(OC * C, 31), bias = rand(OC, 32), dout = rand(N * OC, 33);
        const dinp0 = rand(N * C, 34), dw0 = rand(OC * C, 35), db0 = rand(OC, 36);
        const u = 2 ** -24;
        for (const withBias of [true, false]) {
          const dInp = dev(inp), dW = dev(w), dB = dev(bias), out = be.alloc(N * OC);
          const dDout = dev(dout), dDinp = dev(dinp0), dDw = dev(dw0), dDb = dev(db0);
          be.matmulForward(out, dInp, dW, withBias ? dB : null, N, C, OC);
          const want = new Float32Array(N * OC), mag = new Float32Array(N * OC);
          matmulForward(want, inp, w, withBias ? bias : null, N, C, OC);
          matmulForward(mag, abs(inp), abs(w), withBias ? abs(bias) : null, N, C, OC);
          // gamma_K sum|a b| for the K = C term sum, + 1 ulp for the separate bias add and the reference's rounding
          assertWithin(be.download(out), want, (i) => (C + 3) * u * mag[i], `out (bias ${withBias})`);
          be.matmulBackward(dDinp, dDw, withBias ? dDb : null, dDout, dInp, dW, N, C, OC);
          const dinp = dinp0.slice(), dw = dw0.slice(), db = db0.slice();
          matmulBackward(dinp, dw, withBias ? db : null, dout, inp, w, N, C, OC);
          const mDinp = abs(dinp0), mDw = abs(dw0), mDb = abs(db0);
          matmulBackward(mDinp, mDw, withBias ? mDb : null, abs(dout), abs(inp), abs(w), N, C, OC);
          assertWithin(be.download(dDinp), dinp, (i) => (OC + 2) * u * mDinp[i], 'dinp');
          assertWithin(be.download(dDw), dw, (i) => (N + 2) * u * mDw[i], 'dweight');
          // dbias: double column sums rounded once, against the CPU's float64 sums rounded once
          assertWithin(be.download(dDb), withBias ? db : db0, (i) => 2 * u * mDb[i], withBias ? 'dbias' : 'dbias untouched');
          for (const b of [dInp, dW, dB, out, dDout, dDinp, dDw, dDb]) be.free(b);
        }
      });
    }
  }

  for (const [B, T, NH, HS] of [[1, 1, 1, 48], [2, 7, 3, 48], [1, 113, 2, 6]]) {
    gpuTest(`toHeads and fromHeads are exact moves, B=${B} T=${T} NH=${NH} HS=${HS}`, () => {
      const be = backend();
      const n = B * T * NH * HS, x = rand(n, 40 + T);
      const dX = dev(x), out = be.alloc(n), back = be.alloc(n);
      be.toHeads(out, dX, B, T, NH, HS);
      const want = new Float32Array(n);
      toHeads(want, x, B, T, NH, HS);
      assertExact(be.download(out), want, 'toHeads');
      be.fromHeads(back, out, B, T, NH, HS);
      const wantBack = new Float32Array(n);
      fromHeads(wantBack, want, B, T, NH, HS);
      assertExact(be.download(back), wantBack, 'fromHeads');
      assertExact(wantBack, x, 'fromHeads inverts toHeads');
      for (const b of [dX, out, back]) be.free(b);
    });
  }

  for (const [T, HS, theta, pos] of [[1, 48, 10000, 0], [7, 48, 10000, 1000], [113, 48, 500000, 0], [113, 6, 10000, 4093]]) {
    gpuTest(`rope forward and backward (rotate_half, float32 angles), T=${T} HS=${HS} theta=${theta} posOffset=${pos}`, () => {
      const be = backend();
      const B = 2, NH = 3, n = B * NH * T * HS;
      const x = rand(n, 50 + T, 3), dout = rand(n, 51), dx0 = rand(n, 52);
      const dX = dev(x), out = be.alloc(n), dDout = dev(dout), dDx = dev(dx0);
      be.ropeForward(out, dX, B, NH, T, HS, theta, pos);
      const want = new Float32Array(n);
      ropeForward(want, x, B, NH, T, HS, theta, pos);
      // the same float32 tables; one double rotation rounded once: a 1-ulp difference at most
      assertClose(be.download(out), want, 1e-12, 2 ** -23, 'out');
      be.ropeBackward(dDx, dDout, B, NH, T, HS, theta, pos);
      const dx = dx0.slice();
      ropeBackward(dx, dout, B, NH, T, HS, theta, pos);
      assertClose(be.download(dDx), dx, 1e-12, 2 ** -23, 'dinp');
      for (const b of [dX, out, dDout, dDx]) be.free(b);
    });
  }

  for (const [B, T, NKV] of [[1, 1, 1], [2, 7, 3], [1, 113, 2]]) {
    gpuTest(`scoresToHeads / scoresFromHeads, B=${B} T=${T} NKV=${NKV}`, () => {
      const be = backend();
      const n = B * T * NKV, eps = 1e-3;
      const uFlat = rand(n, 60 + T), du = rand(n, 61);
      const dU = be.alloc(n), dUFlat = dev(uFlat), dDu = dev(du), dDuFlat = be.alloc(n);
      be.scoresToHeads(dU, dUFlat, B, T, NKV, eps);
      be.scoresFromHeads(dDuFlat, dDu, B, T, NKV);
      // plain loops of the definition: u[b, h, t] = uFlat[b*T + t, h] + eps * t (rounded once)
      const want = new Float32Array(n), wantFlat = new Float32Array(n);
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T; t++) {
          for (let h = 0; h < NKV; h++) {
            want[(b * NKV + h) * T + t] = uFlat[(b * T + t) * NKV + h] + eps * t;
            wantFlat[(b * T + t) * NKV + h] = du[(b * NKV + h) * T + t];
          }
        }
      }
      assertExact(be.download(dU), want, 'u');
      assertExact(be.download(dDuFlat), wantFlat, 'duFlat');
      for (const b of [dU, dUFlat, dDu, dDuFlat]) be.free(b);
    });
  }

  for (const n of [1, 7, 113 * 48 + 5]) {
    gpuTest(`swiglu forward and backward, and addInPlace, n=${n}`, () => {
      const be = backend();
      const gate = rand(n, 70 + n, 6), up = rand(n, 71), dout = rand(n, 72), dg0 = rand(n, 73), du0 = rand(n, 74);
      if (n > 2) {
        gate[0] = 100; // sigmoid saturates to 1
        gate[1] = -100; // exp(-g) overflows to inf: silu = -0, no NaN
      }
      const dG = dev(gate), dU = dev(up), out = be.alloc(n), dDout = dev(dout), dDg = dev(dg0), dDu = dev(du0);
      be.swigluForward(out, dG, dU, n);
      const want = new Float32Array(n);
      swigluForward(want, gate, up, n);
      // float expf (<= 2 ulp) and 3 float roundings against float64 math rounded once
      assertClose(be.download(out), want, 1e-7, 1e-6, 'out');
      be.swigluBackward(dDg, dDu, dDout, dG, dU, n);
      const dg = dg0.slice(), du = du0.slice();
      swigluBackward(dg, du, dout, gate, up, n);
      // silu'(g) = s (1 + g (1 - s)) cancels near g = -1.28: an absolute error of a few ulp of |d u|
      assertClose(be.download(dDg), dg, 1e-6, 1e-5, 'dgate');
      assertClose(be.download(dDu), du, 1e-6, 1e-5, 'dup');
      const sum = be.download(dDg);
      addInPlace(sum, be.download(dDu), n);
      be.addInPlace(dDg, dDu, n);
      // out += a: one correctly rounded float add on both devices
      assertExact(be.download(dDg), sum, 'addInPlace');
      for (const b of [dG, dU, out, dDout, dDg, dDu]) be.free(b);
    });
  }

  // ---- imported architectures: LayerNorm, GELU, partial RoPE --------------------------------

  for (const [N, C] of [[1, 48], [7, 48], [113, 48], [7, 37]]) {
    gpuTest(`layernorm forward and backward (accumulating), N=${N}, C=${C}, |mean| >> std`, () => {
      const be = backend();
      const eps = 1e-5;
      // offset 3, spread 0.5: a one-pass variance would cancel; weights around 1, bias nonzero
      const x = rand(N * C, 100 + N, 0.5, 3), w = rand(C, 101, 0.5, 1), bias = rand(C, 102), dout = rand(N * C, 103);
      const dx0 = rand(N * C, 104), dw0 = rand(C, 105), db0 = rand(C, 106);
      const out = be.alloc(N * C), mean = be.alloc(N), rstd = be.alloc(N), dX = dev(x), dW = dev(w), dB = dev(bias), dDout = dev(dout);
      const dDx = dev(dx0), dDw = dev(dw0), dDb = dev(db0);
      be.fill(out, NaN); // every element must be written
      be.layernormForward(out, mean, rstd, dX, dW, dB, N, C, eps);
      const wantOut = new Float32Array(N * C), wantMean = new Float32Array(N), wantRstd = new Float32Array(N);
      layernormForward(wantOut, wantMean, wantRstd, x, w, bias, N, C, eps);
      // double statistics on both sides, rounded once: a ulp or so apart
      assertClose(be.download(mean), wantMean, 1e-7, 1e-6, 'mean');
      assertClose(be.download(rstd), wantRstd, 0, 1e-6, 'rstd');
      assertClose(be.download(out), wantOut, 1e-6, 1e-6, 'out');
      be.layernormBackward(dDx, dDw, dDb, dDout, dX, dW, mean, rstd, N, C);
      // the CPU backward from the same saved statistics the GPU used
      const dx = dx0.slice(), dw = dw0.slice(), db = db0.slice();
      layernormBackward(dx, dw, db, dout, x, w, be.download(mean), be.download(rstd), N, C);
      assertClose(be.download(dDx), dx, 1e-6, 1e-6, 'dinp');
      assertClose(be.download(dDw), dw, 1e-6, 1e-6, 'dweight');
      assertClose(be.download(dDb), db, 1e-6, 1e-6, 'dbias');
      for (const b of [out, mean, rstd, dX, dW, dB, dDout, dDx, dDw, dDb]) be.free(b);
    });
  }

  for (const form of ['erf', 'tanh'] as const) {
    for (const n of [1, 7, 113 * 48 + 5]) {
      gpuTest(`gelu (${form}) forward and backward (accumulating), n=${n}, saturated tails`, () => {
        const be = backend();
        const x = rand(n, 110 + n, 6), dout = rand(n, 111), dx0 = rand(n, 112);
        if (n > 5) {
          x[0] = 0;
          x[1] = 40; // erf and tanh saturate to 1: out = x, local = 1
          x[2] = -40; // exp(-x^2/2) underflows to 0, 1 + erf cancels to 0: out = -0, local = 0
          x[3] = -5; // 1 + erf(x / sqrt 2) ~ 6e-7: the cancellation the tolerance allows for
          x[4] = 1e-3;
        }
        const dX = dev(x), out = be.alloc(n), dDout = dev(dout), dDx = dev(dx0);
        be.fill(out, NaN);
        be.geluForward(out, dX, n, form);
        const want = new Float32Array(n);
        (form === 'erf' ? geluErfForward : geluForward)(want, x, n);
        // float erff/tanhf (a few ulp of 1) against float64: 1 + erf or 1 + tanh is off by a few
        // ulp of 1, times 0.5 |x|; plus the final rounding
        assertWithin(be.download(out), want, (i) => 1e-6 * (1 + Math.abs(x[i])) + 1e-6 * Math.abs(want[i]), 'out');
        be.geluBackward(dDx, dDout, dX, n, form);
        const dx = dx0.slice();
        (form === 'erf' ? geluErfBackward : geluBackward)(dx, dout, x, n);
        assertWithin(be.download(dDx), dx, (i) => 2e-6 * (1 + Math.abs(x[i])) + 1e-6 * Math.abs(dx[i]), 'dinp');
        for (const b of [dX, out, dDout, dDx]) be.free(b);
      });
    }
  }

  for (const [T, HS, R, theta, pos] of [[1, 48, 12, 10000, 0], [7, 48, 16, 10000, 1000], [113, 48, 48, 500000, 0], [113, 7, 2, 10000, 4093], [7, 9, 6, 10000, 3]]) {
    gpuTest(`partial rope forward and backward (accumulating), T=${T} HS=${HS} R=${R} theta=${theta} posOffset=${pos}`, () => {
      const be = backend();
      const B = 2, NH = 3, n = B * NH * T * HS;
      const x = rand(n, 120 + T, 3), dout = rand(n, 121), dx0 = rand(n, 122);
      const dX = dev(x), out = be.alloc(n), dDout = dev(dout), dDx = dev(dx0);
      be.fill(out, NaN); // the passed-through features must be written too
      be.ropePartialForward(out, dX, B, NH, T, HS, R, theta, pos);
      const want = new Float32Array(n);
      ropePartialForward(want, x, B, NH, T, HS, R, theta, pos);
      // the same float32 tables; one double rotation rounded once: a 1-ulp difference at most
      assertClose(be.download(out), want, 1e-12, 2 ** -23, 'out');
      be.ropePartialBackward(dDx, dDout, B, NH, T, HS, R, theta, pos);
      const dx = dx0.slice();
      ropePartialBackward(dx, dout, B, NH, T, HS, R, theta, pos);
      assertClose(be.download(dDx), dx, 1e-12, 2 ** -23, 'dinp');
      for (const b of [dX, out, dDout, dDx]) be.free(b);
    });
  }

  gpuTest('layernorm, gelu and partial rope check their arguments before anything is queued', () => {
    const be = backend();
    const a = be.alloc(10), b = be.alloc(10), s = be.alloc(2);
    assert.throws(() => be.layernormForward(a, s, s, b, b, s, 2, 5, 1e-5), (e: unknown) =>
      e instanceof ShapeError && /^bias: expected at least 5 elements \(N=2, C=5\), got 2$/.test(e.message));
    assert.throws(() => be.layernormBackward(a, b, b, a, b, b, s, s, 2, 6), ShapeError);
    assert.throws(() => be.geluBackward(a, b, s, 3, 'erf'), (e: unknown) => e instanceof ShapeError && /^inp: /.test(e.message));
    assert.throws(() => be.geluForward(a, b, 3, 'none' as unknown as 'erf'), (e: unknown) => e instanceof ArgumentError && /form/.test(e.message));
    assert.throws(() => be.ropePartialForward(a, b, 1, 1, 1, 10, 3, 10000, 0), (e: unknown) => e instanceof ArgumentError && /R/.test(e.message));
    assert.throws(() => be.ropePartialForward(a, b, 1, 1, 1, 10, 12, 10000, 0), ArgumentError);
    assert.throws(() => be.ropePartialBackward(a, b, 1, 1, 2, 10, 4, 10000, 0), (e: unknown) => e instanceof ShapeError && /^dinp: /.test(e.message));
    for (const z of [a, b, s]) be.free(z);
  });

  for (const [N, V] of [[1, 37], [7, 1001], [113, 37]]) {
    gpuTest(`cross-entropy forward and backward, N=${N} V=${V}, ignored targets, large logits`, () => {
      const be = backend();
      const logits = rand(N * V, 80 + N, 8);
      for (let i = 0; i < N * V; i += 5) logits[i] += 80; // large: exp(l) alone would overflow float
      const targets = randInts(N, 81, 0, V);
      if (N > 1) targets[1] = -1;
      const scale = 1 / N, dl0 = rand(N * V, 82, 1e-3);
      const dLogits = dev(logits), dT = devInt(targets), losses = be.alloc(N), probs = be.alloc(N * V), dDl = dev(dl0);
      be.crossEntropyForward(losses, probs, dLogits, dT, N, V);
      const wantLoss = new Float32Array(N), wantProbs = new Float32Array(N * V);
      crossEntropyForward(wantLoss, wantProbs, logits, targets, N, V);
      assertClose(be.download(losses), wantLoss, 1e-6, 2e-6, 'losses');
      assertClose(be.download(probs), wantProbs, 1e-12, 1e-5, 'probs');
      be.crossEntropyBackward(dDl, scale, probs, dT, N, V);
      const dl = dl0.slice();
      crossEntropyBackward(dl, scale, wantProbs, targets, N, V);
      assertClose(be.download(dDl), dl, 1e-8, 1e-5, 'dlogits');
      for (const b of [dLogits, losses, probs, dDl]) be.free(b);
      be.free(dT);
    });
  }

  // The wiring of be.attention for the baselines (their kernels are tested in baselines.test.ts):
  // GPU kernels, so fp32 rounding in a different order than the CPU's, relative to the largest entry.
  for (const attention of ['fixed', 'hash', 'qktopk'] as const) {
    gpuTest(`attention (${attention}) through be.attention runs its GPU kernels, B=2 T=7 NH=2 NKV=1 HS=48`, () => {
      const be = backend();
      const shape = { B: 2, T: 7, NH: 2, NKV: 1, HS: 48 }, c = { attention, k: 3, window: 2, hashBuckets: 4 };
      const nq = 2 * 2 * 7 * 48, nkv = 2 * 7 * 48, nu = 2 * 7;
      const q = rand(nq, 100), k = rand(nkv, 101), v = rand(nkv, 102), u = rand(nu, 103), dout = rand(nq, 104);
      const cpu = makeAttention(c, shape);
      const out = new Float32Array(nq), dq = new Float32Array(nq), dk = new Float32Array(nkv), dv = new Float32Array(nkv), du = new Float32Array(nu);
      cpu.forward(out, q, k, v, u);
      cpu.backward(dq, dk, dv, du, dout);
      const layer = be.attention(c, shape);
      const dOut = be.alloc(nq), dQ = be.alloc(nq), dK = be.alloc(nkv), dV = be.alloc(nkv), dU = be.alloc(nu);
      layer.forward(dOut, dev(q), dev(k), dev(v), dev(u));
      layer.backward(dQ, dK, dV, dU, dev(dout));
      const rel = (want: Float32Array, tol: number) => tol * want.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      assertWithin(be.download(dOut), out, () => rel(out, 1e-5), 'out');
      assertWithin(be.download(dQ), dq, () => rel(dq, 1e-4), 'dq');
      assertWithin(be.download(dK), dk, () => rel(dk, 1e-4), 'dk');
      assertWithin(be.download(dV), dv, () => rel(dv, 1e-4), 'dv');
      assertExact(be.download(dU), du, 'du');
    });
  }

  gpuTest('backward ops are deterministic (no atomics): two runs agree bit for bit', () => {
    const be = backend();
    const N = 113, C = 48, V = 5; // V = 5: every id repeats ~23 times
    const ids = devInt(randInts(N, 90, 0, V)), dout = dev(rand(N * C, 91)), x = dev(rand(N * C, 92)), w = dev(rand(C, 93));
    const rstd = be.alloc(N), y = be.alloc(N * C), lnMean = be.alloc(N), lnRstd = be.alloc(N);
    be.rmsnormForward(y, rstd, x, w, N, C, 1e-5);
    be.layernormForward(y, lnMean, lnRstd, x, w, w, N, C, 1e-5);
    const wq = dev(rand(C * C, 94));
    const runs: Float32Array[][] = [];
    for (let r = 0; r < 2; r++) {
      const dwte = be.alloc(V * C), dx = be.alloc(N * C), dw = be.alloc(C), db = be.alloc(C), dW = be.alloc(C * C), dI = be.alloc(N * C);
      be.embeddingBackward(dwte, dout, ids, N, C);
      be.rmsnormBackward(dx, dw, dout, x, w, rstd, N, C);
      be.matmulBackward(dI, dW, db, dout, x, wq, N, C, C);
      const lnDx = be.alloc(N * C), lnDw = be.alloc(C), lnDb = be.alloc(C);
      be.layernormBackward(lnDx, lnDw, lnDb, dout, x, w, lnMean, lnRstd, N, C);
      const outs = [dwte, dx, dw, db, dW, dI, lnDx, lnDw, lnDb];
      runs.push(outs.map((b) => be.download(b)));
      for (const b of outs) be.free(b);
    }
    for (let i = 0; i < runs[0].length; i++) assertExact(runs[1][i], runs[0][i], `output ${i}`);
    for (const b of [dout, x, w, rstd, y, wq, lnMean, lnRstd]) be.free(b);
    be.free(ids);
  });

  gpuTest('bad shapes raise ShapeError before anything is queued', () => {
    const be = backend();
    const a = be.alloc(10), b = be.alloc(10);
    assert.throws(() => be.matmulForward(a, b, b, null, 2, 5, 3), (e: unknown) =>
      e instanceof ShapeError && /^weight: expected at least 15 elements \(OC=3, C=5\), got 10$/.test(e.message));
    assert.throws(() => be.addInPlace(a, b, 11), ShapeError);
    assert.throws(() => be.ropeForward(a, b, 1, 1, 1, 5, 10000, 0), ArgumentError);
    be.free(a);
    be.free(b);
  });

  gpuTest('arena: allocating and freeing in a loop, and running ops with scratch, leaves no net allocation', () => {
    const be = backend();
    be.synchronize();
    const before = be.counters();
    const sizes = [1, 48, 113 * 48, 37 * 1001, 4096];
    const x = be.alloc(113 * 48), w = be.alloc(48), r = be.alloc(113), g = be.alloc(113 * 48), dw = be.alloc(48);
    let afterFirst = -1;
    for (let iter = 0; iter < 50; iter++) {
      const bufs = sizes.map((n) => be.alloc(n));
      be.rmsnormBackward(g, dw, x, x, w, r, 113, 48); // takes and returns a scratch block
      be.ropeForward(g, x, 1, 2, 113, 24, 10000, 0); // takes and returns its tables
      for (const b of bufs.reverse()) be.free(b);
      if (iter === 0) afterFirst = be.counters().driverAllocs;
    }
    for (const b of [x, w, r, g, dw]) be.free(b);
    be.synchronize();
    const after = be.counters();
    assert.equal(after.inUseBytes, before.inUseBytes, 'bytes in use');
    assert.equal(after.inUseCount, before.inUseCount, 'buffers in use');
    assert.equal(after.driverAllocs, afterFirst, 'no cuMemAlloc after the first iteration: the cache serves every later one');
    assert.ok(after.peakBytes >= after.inUseBytes);
  });

  gpuTest('kernel cache: a kernel compiles once; compile errors show the log and numbered source', () => {
    if (!avail.available) return;
    const rt = avail.runtime;
    const src = { name: 'cache_probe', params: ['ptr'] as const, source: 'extern "C" __global__ void cache_probe(float* x) { x[threadIdx.x] = 1.5f; }' };
    const k1 = rt.kernel(src);
    const compiles = rt.compiles;
    const k2 = rt.kernel(src);
    assert.equal(k2, k1, 'second request served from memory');
    assert.equal(rt.compiles, compiles, 'no second compile');
    const bad = { name: 'broken', params: [] as const, source: 'extern "C" __global__ void broken() {\n  int x = undefined_name;\n}\n' };
    assert.throws(() => rt.kernel(bad), (e: unknown) =>
      e instanceof KernelCompileError && /undefined_name/.test(e.log) && /2 \|\s+int x = undefined_name;/.test(e.message));
  });

  gpuTest('concurrently: side kernels see the work queued before, and the main stream waits for them', () => {
    if (!avail.available) return;
    const rt = avail.runtime;
    // slow_add: y = x + 1 after a long dependent loop, so that a missing fork or join shows as stale values
    const slow = rt.kernel({ name: 'slow_add', params: ['ptr', 'ptr', 'i32'] as const, source: `extern "C" __global__ void slow_add(float* y, const float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float a = x[i];
  for (int r = 0; r < 20000; r++) a = a * 0.999999f + 1e-6f * x[i];
  y[i] = a + 1.f;
}` });
    const twice = rt.kernel({ name: 'twice', params: ['ptr', 'ptr', 'i32'] as const, source: `extern "C" __global__ void twice(float* z, const float* w, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) z[i] = 2.f * w[i];
}` });
    const n = 1 << 16, blocks = n / 256;
    const [x, y, z, y2] = [rt.arena.take(n * 4), rt.arena.take(n * 4), rt.arena.take(n * 4), rt.arena.take(n * 4)];
    const xs = Float32Array.from({ length: n }, (_, i) => i % 97);
    rt.cu('cuMemsetD32Async', y.ptr, 0, n, rt.stream);
    rt.cu('cuMemcpyHtoDAsync_v2', x.ptr, xs, n * 4, rt.stream); // queued before: the side kernel must see it
    rt.concurrently(
      () => rt.launch(slow, blocks, 256, 0, [y.ptr, x.ptr, n]),
      () => rt.launch(twice, blocks, 256, 0, [z.ptr, x.ptr, n]));
    rt.launch(twice, blocks, 256, 0, [y2.ptr, y.ptr, n]); // after the join: reads the side kernel's y
    const got = { z: new Float32Array(n), y2: new Float32Array(n) };
    rt.cu('cuMemcpyDtoHAsync_v2', got.z, z.ptr, n * 4, rt.stream);
    rt.cu('cuMemcpyDtoHAsync_v2', got.y2, y2.ptr, n * 4, rt.stream);
    rt.synchronize();
    for (let i = 0; i < n; i += 251) {
      assert.equal(got.z[i], 2 * xs[i], `main kernel at ${i}`);
      assert.ok(Math.abs(got.y2[i] - 2 * (xs[i] + 1)) <= 1e-3 * (xs[i] + 1), `side then main at ${i}: ${got.y2[i]}, want ${2 * (xs[i] + 1)}`);
    }
    for (const b of [x, y, z, y2]) rt.arena.give(b);
  });

  gpuTest('the checker names the failing call and decodes its status', () => {
    if (!avail.available) return;
    const rt = avail.runtime;
    assert.throws(() => rt.arena.take(2 ** 52), (e: unknown) =>
      e instanceof CudaError && /^cuMemAlloc_v2 failed: CUDA_ERROR_[A-Z_]+/.test(e.message));
    assert.throws(() => rt.cu('cuDeviceGet', new Int32Array(1), 9999), (e: unknown) =>
      e instanceof CudaError && e.message === 'cuDeviceGet failed: CUDA_ERROR_INVALID_DEVICE');
  });
});
