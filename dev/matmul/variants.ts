// Matmul variants for the CPU trainer, kept for the benchmark in bench.ts. Not part of the library;
// nothing in src imports this file. The winner, in src/cpu/kernels/matmul.ts, is gemmNT3x4Packed64
// (section 5) generalised to strided operands, so that its backward needs no transposed copies.
//
// What was learned (AMD EPYC, node 20, single thread; see bench.ts for the numbers):
// - register tiles matter most: 1x1 ~2.5 GFLOP/s, 2x2 ~4.5, 3x3 / 3x4 / 4x4 ~5-6. 4x4 needs 24 live
//   values for 16 SSE registers and spills; 3x4 with x loaded one at a time (17 live) does not.
// - float64 packed panels add ~5-10%: one index per stream and no float32 -> float64 conversions.
// - blocking over K, or blocking B to fit L2, did not help: the kernel is bound by V8's scalar
//   instruction stream (bounds checks, index arithmetic), not by memory.
// - backward via transposed copies is as fast as the forward; the axpy form is 1.5-2.5x slower, and
//   llm.c's loop order (axpy into float32 gradients) is ~4x slower and loses precision (~1e-6 rel).
//
// All variants compute the same thing as src/cpu/kernels/matmul.ts:
//   forward:  out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC)
//   backward: dinp (N, C) += dout (N, OC) @ weight (OC, C);  dweight (OC, C) += dout^T @ inp;
//             dbias (OC) += column sums of dout
// Accumulations run in float64 (JS numbers), except in backwardLlmc, which is llm.c's naive
// backward verbatim and accumulates straight into the Float32Array gradients (kept to show the cost
// and the rounding of that choice).
//
// The building block is gemmNT: c (M, N) (+)= a (M, K) @ b (N, K)^T, i.e. every output is one
// contiguous dot product of length K. The backward reuses it on transposed copies, so a single
// well-tuned loop nest serves all three products.

// ---------------------------------------------------------------------------------------------
// 0. Naive triple loops (the baseline a reader would write first).

export function forwardNaive(
  out: Float32Array, inp: Float32Array, weight: Float32Array, bias: Float32Array | null,
  N: number, C: number, OC: number,
): void {
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < OC; o++) {
      let s = bias === null ? 0 : bias[o];
      for (let c = 0; c < C; c++) s += inp[n * C + c] * weight[o * C + c];
      out[n * OC + o] = s;
    }
  }
}

export function backwardNaive(
  dinp: Float32Array, dweight: Float32Array, dbias: Float32Array | null,
  dout: Float32Array, inp: Float32Array, weight: Float32Array, N: number, C: number, OC: number,
): void {
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let o = 0; o < OC; o++) s += dout[n * OC + o] * weight[o * C + c];
      dinp[n * C + c] += s;
    }
  }
  for (let o = 0; o < OC; o++) {
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dout[n * OC + o] * inp[n * C + c];
      dweight[o * C + c] += s;
    }
  }
  if (dbias !== null) {
    for (let o = 0; o < OC; o++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dout[n * OC + o];
      dbias[o] += s;
    }
  }
}

/** llm.c's matmul_backward loop order: contiguous axpys, accumulating in float32 storage. */
export function backwardLlmc(
  dinp: Float32Array, dweight: Float32Array, dbias: Float32Array | null,
  dout: Float32Array, inp: Float32Array, weight: Float32Array, N: number, C: number, OC: number,
): void {
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < OC; o++) {
      const d = dout[n * OC + o];
      const w = o * C, x = n * C;
      for (let c = 0; c < C; c++) dinp[x + c] += weight[w + c] * d;
    }
  }
  for (let o = 0; o < OC; o++) {
    for (let n = 0; n < N; n++) {
      const d = dout[n * OC + o];
      const w = o * C, x = n * C;
      for (let c = 0; c < C; c++) dweight[w + c] += inp[x + c] * d;
    }
    if (dbias !== null) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dout[n * OC + o];
      dbias[o] += s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 1. gemmNT kernels with different register tiles. c (M, N), a (M, K), b (N, K), bias (N) or null.
//    accumulate: c += a b^T (+ bias); otherwise c = a b^T (+ bias).

/** One dot product at a time, k unrolled by 4 (llm.c's matmul_forward loop order). */
export function gemmNT1x1(
  c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null,
  M: number, N: number, K: number, accumulate: boolean,
): void {
  const K4 = K - (K % 4);
  for (let m = 0; m < M; m++) {
    const am = m * K;
    for (let n = 0; n < N; n++) {
      const bn = n * K;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      let k = 0;
      for (; k < K4; k += 4) {
        s0 += a[am + k] * b[bn + k];
        s1 += a[am + k + 1] * b[bn + k + 1];
        s2 += a[am + k + 2] * b[bn + k + 2];
        s3 += a[am + k + 3] * b[bn + k + 3];
      }
      for (; k < K; k++) s0 += a[am + k] * b[bn + k];
      let s = s0 + s1 + s2 + s3;
      if (bias !== null) s += bias[n];
      const i = m * N + n;
      c[i] = accumulate ? c[i] + s : s;
    }
  }
}

/** Cells [m0, m1) x [n0, n1) one dot product at a time: the edge tiles of the blocked kernels. */
export function gemmNTEdge(
  c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null,
  m0: number, m1: number, n0: number, n1: number, N: number, K: number, accumulate: boolean,
): void {
  for (let m = m0; m < m1; m++) {
    const am = m * K;
    for (let n = n0; n < n1; n++) {
      const bn = n * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += a[am + k] * b[bn + k];
      if (bias !== null) s += bias[n];
      const i = m * N + n;
      c[i] = accumulate ? c[i] + s : s;
    }
  }
}

export function gemmNT2x2(
  c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null,
  M: number, N: number, K: number, accumulate: boolean,
): void {
  const M2 = M - (M % 2), N2 = N - (N % 2);
  for (let m = 0; m < M2; m += 2) {
    const a0 = m * K, a1 = a0 + K;
    for (let n = 0; n < N2; n += 2) {
      const b0 = n * K, b1 = b0 + K;
      let s00 = 0, s01 = 0, s10 = 0, s11 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = a[a0 + k], x1 = a[a1 + k];
        const y0 = b[b0 + k], y1 = b[b1 + k];
        s00 += x0 * y0; s01 += x0 * y1;
        s10 += x1 * y0; s11 += x1 * y1;
      }
      const bb0 = bias === null ? 0 : bias[n], bb1 = bias === null ? 0 : bias[n + 1];
      const i0 = m * N + n, i1 = i0 + N;
      if (accumulate) {
        c[i0] += s00 + bb0; c[i0 + 1] += s01 + bb1;
        c[i1] += s10 + bb0; c[i1 + 1] += s11 + bb1;
      } else {
        c[i0] = s00 + bb0; c[i0 + 1] = s01 + bb1;
        c[i1] = s10 + bb0; c[i1 + 1] = s11 + bb1;
      }
    }
  }
  gemmNTEdge(c, a, b, bias, 0, M2, N2, N, N, K, accumulate);
  gemmNTEdge(c, a, b, bias, M2, M, 0, N, N, K, accumulate);
}

/** 2 rows of a x 4 rows of b: 8 accumulators + 6 loads fit in the 16 SSE registers. */
export function gemmNT2x4(
  c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null,
  M: number, N: number, K: number, accumulate: boolean,
): void {
  const M2 = M - (M % 2), N4 = N - (N % 4);
  for (let m = 0; m < M2; m += 2) {
    const a0 = m * K, a1 = a0 + K;
    for (let n = 0; n < N4; n += 4) {
      const b0 = n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
      let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = a[a0 + k], x1 = a[a1 + k];
        const y0 = b[b0 + k], y1 = b[b1 + k], y2 = b[b2 + k], y3 = b[b3 + k];
        s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
        s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
      }
      if (bias !== null) {
        const q0 = bias[n], q1 = bias[n + 1], q2 = bias[n + 2], q3 = bias[n + 3];
        s00 += q0; s01 += q1; s02 += q2; s03 += q3;
        s10 += q0; s11 += q1; s12 += q2; s13 += q3;
      }
      const i0 = m * N + n, i1 = i0 + N;
      if (accumulate) {
        c[i0] += s00; c[i0 + 1] += s01; c[i0 + 2] += s02; c[i0 + 3] += s03;
        c[i1] += s10; c[i1 + 1] += s11; c[i1 + 2] += s12; c[i1 + 3] += s13;
      } else {
        c[i0] = s00; c[i0 + 1] = s01; c[i0 + 2] = s02; c[i0 + 3] = s03;
        c[i1] = s10; c[i1 + 1] = s11; c[i1 + 2] = s12; c[i1 + 3] = s13;
      }
    }
  }
  gemmNTEdge(c, a, b, bias, 0, M2, N4, N, N, K, accumulate);
  gemmNTEdge(c, a, b, bias, M2, M, 0, N, N, K, accumulate);
}

/** 4 x 4 register tile: 16 accumulators, 8 loads per k (more than the register file: spills). */
export function gemmNT4x4(
  c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null,
  M: number, N: number, K: number, accumulate: boolean,
): void {
  const M4 = M - (M % 4), N4 = N - (N % 4);
  for (let m = 0; m < M4; m += 4) {
    const a0 = m * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
    for (let n = 0; n < N4; n += 4) {
      const b0 = n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
      let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
      let s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = a[a0 + k], x1 = a[a1 + k], x2 = a[a2 + k], x3 = a[a3 + k];
        const y0 = b[b0 + k], y1 = b[b1 + k], y2 = b[b2 + k], y3 = b[b3 + k];
        s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
        s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
        s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
        s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3;
      }
      if (bias !== null) {
        const q0 = bias[n], q1 = bias[n + 1], q2 = bias[n + 2], q3 = bias[n + 3];
        s00 += q0; s01 += q1; s02 += q2; s03 += q3;
        s10 += q0; s11 += q1; s12 += q2; s13 += q3;
        s20 += q0; s21 += q1; s22 += q2; s23 += q3;
        s30 += q0; s31 += q1; s32 += q2; s33 += q3;
      }
      const i0 = m * N + n, i1 = i0 + N, i2 = i1 + N, i3 = i2 + N;
      if (accumulate) {
        c[i0] += s00; c[i0 + 1] += s01; c[i0 + 2] += s02; c[i0 + 3] += s03;
        c[i1] += s10; c[i1 + 1] += s11; c[i1 + 2] += s12; c[i1 + 3] += s13;
        c[i2] += s20; c[i2 + 1] += s21; c[i2 + 2] += s22; c[i2 + 3] += s23;
        c[i3] += s30; c[i3 + 1] += s31; c[i3 + 2] += s32; c[i3 + 3] += s33;
      } else {
        c[i0] = s00; c[i0 + 1] = s01; c[i0 + 2] = s02; c[i0 + 3] = s03;
        c[i1] = s10; c[i1 + 1] = s11; c[i1 + 2] = s12; c[i1 + 3] = s13;
        c[i2] = s20; c[i2 + 1] = s21; c[i2 + 2] = s22; c[i2 + 3] = s23;
        c[i3] = s30; c[i3 + 1] = s31; c[i3 + 2] = s32; c[i3 + 3] = s33;
      }
    }
  }
  gemmNTEdge(c, a, b, bias, 0, M4, N4, N, N, K, accumulate);
  gemmNTEdge(c, a, b, bias, M4, M, 0, N, N, K, accumulate);
}

/** 4 x 2 register tile (4 rows of a reused over 2 rows of b). */
export function gemmNT4x2(
  c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null,
  M: number, N: number, K: number, accumulate: boolean,
): void {
  const M4 = M - (M % 4), N2 = N - (N % 2);
  for (let m = 0; m < M4; m += 4) {
    const a0 = m * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
    for (let n = 0; n < N2; n += 2) {
      const b0 = n * K, b1 = b0 + K;
      let s00 = 0, s01 = 0, s10 = 0, s11 = 0, s20 = 0, s21 = 0, s30 = 0, s31 = 0;
      for (let k = 0; k < K; k++) {
        const y0 = b[b0 + k], y1 = b[b1 + k];
        const x0 = a[a0 + k], x1 = a[a1 + k], x2 = a[a2 + k], x3 = a[a3 + k];
        s00 += x0 * y0; s01 += x0 * y1;
        s10 += x1 * y0; s11 += x1 * y1;
        s20 += x2 * y0; s21 += x2 * y1;
        s30 += x3 * y0; s31 += x3 * y1;
      }
      const q0 = bias === null ? 0 : bias[n], q1 = bias === null ? 0 : bias[n + 1];
      const i0 = m * N + n, i1 = i0 + N, i2 = i1 + N, i3 = i2 + N;
      if (accumulate) {
        c[i0] += s00 + q0; c[i0 + 1] += s01 + q1; c[i1] += s10 + q0; c[i1 + 1] += s11 + q1;
        c[i2] += s20 + q0; c[i2 + 1] += s21 + q1; c[i3] += s30 + q0; c[i3 + 1] += s31 + q1;
      } else {
        c[i0] = s00 + q0; c[i0 + 1] = s01 + q1; c[i1] = s10 + q0; c[i1 + 1] = s11 + q1;
        c[i2] = s20 + q0; c[i2 + 1] = s21 + q1; c[i3] = s30 + q0; c[i3 + 1] = s31 + q1;
      }
    }
  }
  gemmNTEdge(c, a, b, bias, 0, M4, N2, N, N, K, accumulate);
  gemmNTEdge(c, a, b, bias, M4, M, 0, N, N, K, accumulate);
}

/** 3 x 3 register tile: 9 accumulators + 6 loads = 15 registers. */
export function gemmNT3x3(
  c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null,
  M: number, N: number, K: number, accumulate: boolean,
): void {
  const M3 = M - (M % 3), N3 = N - (N % 3);
  for (let m = 0; m < M3; m += 3) {
    const a0 = m * K, a1 = a0 + K, a2 = a1 + K;
    for (let n = 0; n < N3; n += 3) {
      const b0 = n * K, b1 = b0 + K, b2 = b1 + K;
      let s00 = 0, s01 = 0, s02 = 0, s10 = 0, s11 = 0, s12 = 0, s20 = 0, s21 = 0, s22 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = a[a0 + k], x1 = a[a1 + k], x2 = a[a2 + k];
        const y0 = b[b0 + k], y1 = b[b1 + k], y2 = b[b2 + k];
        s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2;
        s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2;
        s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2;
      }
      const q0 = bias === null ? 0 : bias[n], q1 = bias === null ? 0 : bias[n + 1], q2 = bias === null ? 0 : bias[n + 2];
      const i0 = m * N + n, i1 = i0 + N, i2 = i1 + N;
      if (accumulate) {
        c[i0] += s00 + q0; c[i0 + 1] += s01 + q1; c[i0 + 2] += s02 + q2;
        c[i1] += s10 + q0; c[i1 + 1] += s11 + q1; c[i1 + 2] += s12 + q2;
        c[i2] += s20 + q0; c[i2 + 1] += s21 + q1; c[i2 + 2] += s22 + q2;
      } else {
        c[i0] = s00 + q0; c[i0 + 1] = s01 + q1; c[i0 + 2] = s02 + q2;
        c[i1] = s10 + q0; c[i1 + 1] = s11 + q1; c[i1 + 2] = s12 + q2;
        c[i2] = s20 + q0; c[i2 + 1] = s21 + q1; c[i2 + 2] = s22 + q2;
      }
    }
  }
  gemmNTEdge(c, a, b, bias, 0, M3, N3, N, N, K, accumulate);
  gemmNTEdge(c, a, b, bias, M3, M, 0, N, N, K, accumulate);
}

export type GemmNT = typeof gemmNT4x4;

// ---------------------------------------------------------------------------------------------
// 2. Forward and backward built from a gemmNT. The backward transposes into scratch buffers so
//    that every product is a contiguous dot product:
//      dinp (N, C)    += dout (N, OC)    @ weightT (C, OC)^T
//      dweight (OC, C) += doutT (OC, N)  @ inpT (C, N)^T
//    The transposes are O(N C + N OC + OC C) moves against 4 N C OC flops.

let scratch = new Float32Array(0);
function scratchOf(n: number): Float32Array {
  if (scratch.length < n) scratch = new Float32Array(n);
  return scratch;
}

/** dst (cols, rows) = src (rows, cols)^T, in blocks of 8 x 8 so both sides stay in cache. */
export function transpose(dst: Float32Array, src: Float32Array, rows: number, cols: number): void {
  const BS = 8;
  for (let r0 = 0; r0 < rows; r0 += BS) {
    const r1 = Math.min(r0 + BS, rows);
    for (let c0 = 0; c0 < cols; c0 += BS) {
      const c1 = Math.min(c0 + BS, cols);
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c];
      }
    }
  }
}

export function makeForward(gemm: GemmNT) {
  return (out: Float32Array, inp: Float32Array, weight: Float32Array, bias: Float32Array | null,
    N: number, C: number, OC: number): void => gemm(out, inp, weight, bias, N, OC, C, false);
}

export function makeBackwardTransposed(gemm: GemmNT) {
  return (dinp: Float32Array, dweight: Float32Array, dbias: Float32Array | null,
    dout: Float32Array, inp: Float32Array, weight: Float32Array, N: number, C: number, OC: number): void => {
    const s = scratchOf(OC * C + OC * N + C * N);
    const weightT = s.subarray(0, C * OC);
    const doutT = s.subarray(C * OC, C * OC + OC * N);
    const inpT = s.subarray(C * OC + OC * N, C * OC + OC * N + C * N);
    transpose(weightT, weight, OC, C);
    gemm(dinp, dout, weightT, null, N, C, OC, true);
    transpose(doutT, dout, N, OC);
    transpose(inpT, inp, N, C);
    gemm(dweight, doutT, inpT, null, OC, C, N, true);
    if (dbias !== null) {
      for (let o = 0; o < OC; o++) {
        let sum = 0;
        const r = o * N;
        for (let n = 0; n < N; n++) sum += doutT[r + n];
        dbias[o] += sum;
      }
    }
  };
}

// ---------------------------------------------------------------------------------------------
// 3. Backward without transposes: axpy form (contiguous rows), float64 accumulation in a row of
//    scratch per output row. 4 rows of dout / weight at a time.

let rowScratch = new Float64Array(0);

export function backwardAxpy4(
  dinp: Float32Array, dweight: Float32Array, dbias: Float32Array | null,
  dout: Float32Array, inp: Float32Array, weight: Float32Array, N: number, C: number, OC: number,
): void {
  if (rowScratch.length < Math.max(C, 1)) rowScratch = new Float64Array(C);
  const acc = rowScratch;
  const OC4 = OC - (OC % 4), N4 = N - (N % 4);
  // dinp[n, :] += sum_o dout[n, o] weight[o, :]
  for (let n = 0; n < N; n++) {
    acc.fill(0, 0, C);
    const dn = n * OC;
    let o = 0;
    for (; o < OC4; o += 4) {
      const d0 = dout[dn + o], d1 = dout[dn + o + 1], d2 = dout[dn + o + 2], d3 = dout[dn + o + 3];
      const w0 = o * C, w1 = w0 + C, w2 = w1 + C, w3 = w2 + C;
      for (let c = 0; c < C; c++) acc[c] += d0 * weight[w0 + c] + d1 * weight[w1 + c] + d2 * weight[w2 + c] + d3 * weight[w3 + c];
    }
    for (; o < OC; o++) {
      const d = dout[dn + o], w = o * C;
      for (let c = 0; c < C; c++) acc[c] += d * weight[w + c];
    }
    const x = n * C;
    for (let c = 0; c < C; c++) dinp[x + c] += acc[c];
  }
  // dweight[o, :] += sum_n dout[n, o] inp[n, :]
  for (let o = 0; o < OC; o++) {
    acc.fill(0, 0, C);
    let n = 0;
    for (; n < N4; n += 4) {
      const d0 = dout[n * OC + o], d1 = dout[(n + 1) * OC + o], d2 = dout[(n + 2) * OC + o], d3 = dout[(n + 3) * OC + o];
      const x0 = n * C, x1 = x0 + C, x2 = x1 + C, x3 = x2 + C;
      for (let c = 0; c < C; c++) acc[c] += d0 * inp[x0 + c] + d1 * inp[x1 + c] + d2 * inp[x2 + c] + d3 * inp[x3 + c];
    }
    for (; n < N; n++) {
      const d = dout[n * OC + o], x = n * C;
      for (let c = 0; c < C; c++) acc[c] += d * inp[x + c];
    }
    const w = o * C;
    for (let c = 0; c < C; c++) dweight[w + c] += acc[c];
    if (dbias !== null) {
      let sum = 0;
      for (let n2 = 0; n2 < N; n2++) sum += dout[n2 * OC + o];
      dbias[o] += sum;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 4. More tiles, and blocking over K: the 4 (or 3) rows of a and b of one tile are 2 x 4 x K
//    floats; for K = 768 that is 24 KiB, most of a 32 KiB L1. Splitting K into chunks of KC keeps
//    the tile's working set small; partial sums wait in a float64 row buffer between chunks.

export function gemmNT3x4(
  c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null,
  M: number, N: number, K: number, accumulate: boolean,
): void {
  const M3 = M - (M % 3), N4 = N - (N % 4);
  for (let m = 0; m < M3; m += 3) {
    const a0 = m * K, a1 = a0 + K, a2 = a1 + K;
    for (let n = 0; n < N4; n += 4) {
      const b0 = n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
      let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
      for (let k = 0; k < K; k++) {
        const y0 = b[b0 + k], y1 = b[b1 + k], y2 = b[b2 + k], y3 = b[b3 + k];
        const x0 = a[a0 + k];
        s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
        const x1 = a[a1 + k];
        s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
        const x2 = a[a2 + k];
        s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
      }
      if (bias !== null) {
        const q0 = bias[n], q1 = bias[n + 1], q2 = bias[n + 2], q3 = bias[n + 3];
        s00 += q0; s01 += q1; s02 += q2; s03 += q3;
        s10 += q0; s11 += q1; s12 += q2; s13 += q3;
        s20 += q0; s21 += q1; s22 += q2; s23 += q3;
      }
      const i0 = m * N + n, i1 = i0 + N, i2 = i1 + N;
      if (accumulate) {
        c[i0] += s00; c[i0 + 1] += s01; c[i0 + 2] += s02; c[i0 + 3] += s03;
        c[i1] += s10; c[i1 + 1] += s11; c[i1 + 2] += s12; c[i1 + 3] += s13;
        c[i2] += s20; c[i2 + 1] += s21; c[i2 + 2] += s22; c[i2 + 3] += s23;
      } else {
        c[i0] = s00; c[i0 + 1] = s01; c[i0 + 2] = s02; c[i0 + 3] = s03;
        c[i1] = s10; c[i1 + 1] = s11; c[i1 + 2] = s12; c[i1 + 3] = s13;
        c[i2] = s20; c[i2 + 1] = s21; c[i2 + 2] = s22; c[i2 + 3] = s23;
      }
    }
  }
  gemmNTEdge(c, a, b, bias, 0, M3, N4, N, N, K, accumulate);
  gemmNTEdge(c, a, b, bias, M3, M, 0, N, N, K, accumulate);
}

let accRows = new Float64Array(0);

/** 3 x 3 tile with K split into chunks of KC; partial sums of 3 rows of c live in float64. */
export function makeGemmNT3x3K(KC: number): GemmNT {
  return (c, a, b, bias, M, N, K, accumulate) => {
    if (accRows.length < 3 * N) accRows = new Float64Array(3 * N);
    const acc = accRows;
    const M3 = M - (M % 3), N3 = N - (N % 3);
    for (let m = 0; m < M3; m += 3) {
      acc.fill(0, 0, 3 * N);
      for (let k0 = 0; k0 < K; k0 += KC) {
        const k1 = Math.min(k0 + KC, K);
        const a0 = m * K, a1 = a0 + K, a2 = a1 + K;
        for (let n = 0; n < N3; n += 3) {
          const b0 = n * K, b1 = b0 + K, b2 = b1 + K;
          let s00 = 0, s01 = 0, s02 = 0, s10 = 0, s11 = 0, s12 = 0, s20 = 0, s21 = 0, s22 = 0;
          for (let k = k0; k < k1; k++) {
            const x0 = a[a0 + k], x1 = a[a1 + k], x2 = a[a2 + k];
            const y0 = b[b0 + k], y1 = b[b1 + k], y2 = b[b2 + k];
            s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2;
            s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2;
            s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2;
          }
          acc[n] += s00; acc[n + 1] += s01; acc[n + 2] += s02;
          acc[N + n] += s10; acc[N + n + 1] += s11; acc[N + n + 2] += s12;
          acc[2 * N + n] += s20; acc[2 * N + n + 1] += s21; acc[2 * N + n + 2] += s22;
        }
      }
      for (let r = 0; r < 3; r++) {
        const row = (m + r) * N;
        for (let n = 0; n < N3; n++) {
          const s = acc[r * N + n] + (bias === null ? 0 : bias[n]);
          c[row + n] = accumulate ? c[row + n] + s : s;
        }
      }
    }
    gemmNTEdge(c, a, b, bias, 0, M3, N3, N, N, K, accumulate);
    gemmNTEdge(c, a, b, bias, M3, M, 0, N, N, K, accumulate);
  };
}

/** 4 x 4 tile with K split into chunks of KC. */
export function makeGemmNT4x4K(KC: number): GemmNT {
  return (c, a, b, bias, M, N, K, accumulate) => {
    if (accRows.length < 4 * N) accRows = new Float64Array(4 * N);
    const acc = accRows;
    const M4 = M - (M % 4), N4 = N - (N % 4);
    for (let m = 0; m < M4; m += 4) {
      acc.fill(0, 0, 4 * N);
      const a0 = m * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
      for (let k0 = 0; k0 < K; k0 += KC) {
        const k1 = Math.min(k0 + KC, K);
        for (let n = 0; n < N4; n += 4) {
          const b0 = n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
          let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
          let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
          let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
          let s30 = 0, s31 = 0, s32 = 0, s33 = 0;
          for (let k = k0; k < k1; k++) {
            const x0 = a[a0 + k], x1 = a[a1 + k], x2 = a[a2 + k], x3 = a[a3 + k];
            const y0 = b[b0 + k], y1 = b[b1 + k], y2 = b[b2 + k], y3 = b[b3 + k];
            s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
            s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
            s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
            s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3;
          }
          const r1 = N + n, r2 = r1 + N, r3 = r2 + N;
          acc[n] += s00; acc[n + 1] += s01; acc[n + 2] += s02; acc[n + 3] += s03;
          acc[r1] += s10; acc[r1 + 1] += s11; acc[r1 + 2] += s12; acc[r1 + 3] += s13;
          acc[r2] += s20; acc[r2 + 1] += s21; acc[r2 + 2] += s22; acc[r2 + 3] += s23;
          acc[r3] += s30; acc[r3 + 1] += s31; acc[r3 + 2] += s32; acc[r3 + 3] += s33;
        }
      }
      for (let r = 0; r < 4; r++) {
        const row = (m + r) * N;
        for (let n = 0; n < N4; n++) {
          const s = acc[r * N + n] + (bias === null ? 0 : bias[n]);
          c[row + n] = accumulate ? c[row + n] + s : s;
        }
      }
    }
    gemmNTEdge(c, a, b, bias, 0, M4, N4, N, N, K, accumulate);
    gemmNTEdge(c, a, b, bias, M4, M, 0, N, N, K, accumulate);
  };
}

// ---------------------------------------------------------------------------------------------
// 5. Packed panels (GotoBLAS style): b is repacked once per call into panels of 4 rows interleaved
//    by k (bp[panel][k][j]), a into one 4-row panel per block of rows, so the inner loop reads two
//    unit-stride streams through one index each. Float64 packing also removes the float32 -> float64
//    conversions from the inner loop, at twice the bytes.

let packA64 = new Float64Array(0), packB64 = new Float64Array(0);
let packA32 = new Float32Array(0), packB32 = new Float32Array(0);

function packRows4<T extends Float32Array | Float64Array>(dst: T, src: Float32Array, r0: number, K: number): void {
  const s0 = r0 * K, s1 = s0 + K, s2 = s1 + K, s3 = s2 + K;
  for (let k = 0, p = 0; k < K; k++, p += 4) {
    dst[p] = src[s0 + k]; dst[p + 1] = src[s1 + k]; dst[p + 2] = src[s2 + k]; dst[p + 3] = src[s3 + k];
  }
}

export function gemmNT4x4Packed64(
  c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null,
  M: number, N: number, K: number, accumulate: boolean,
): void {
  const M4 = M - (M % 4), N4 = N - (N % 4);
  if (packB64.length < N4 * K) packB64 = new Float64Array(N4 * K);
  if (packA64.length < 4 * K) packA64 = new Float64Array(4 * K);
  const bp = packB64, ap = packA64;
  for (let n = 0; n < N4; n += 4) packRows4(bp.subarray(n * K, (n + 4) * K), b, n, K);
  for (let m = 0; m < M4; m += 4) {
    packRows4(ap, a, m, K);
    for (let n = 0; n < N4; n += 4) {
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
      let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
      let s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      const end = 4 * K;
      for (let p = 0, q = n * K; p < end; p += 4, q += 4) {
        const x0 = ap[p], x1 = ap[p + 1], x2 = ap[p + 2], x3 = ap[p + 3];
        const y0 = bp[q], y1 = bp[q + 1], y2 = bp[q + 2], y3 = bp[q + 3];
        s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
        s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
        s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
        s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3;
      }
      if (bias !== null) {
        const q0 = bias[n], q1 = bias[n + 1], q2 = bias[n + 2], q3 = bias[n + 3];
        s00 += q0; s01 += q1; s02 += q2; s03 += q3;
        s10 += q0; s11 += q1; s12 += q2; s13 += q3;
        s20 += q0; s21 += q1; s22 += q2; s23 += q3;
        s30 += q0; s31 += q1; s32 += q2; s33 += q3;
      }
      const i0 = m * N + n, i1 = i0 + N, i2 = i1 + N, i3 = i2 + N;
      if (accumulate) {
        c[i0] += s00; c[i0 + 1] += s01; c[i0 + 2] += s02; c[i0 + 3] += s03;
        c[i1] += s10; c[i1 + 1] += s11; c[i1 + 2] += s12; c[i1 + 3] += s13;
        c[i2] += s20; c[i2 + 1] += s21; c[i2 + 2] += s22; c[i2 + 3] += s23;
        c[i3] += s30; c[i3 + 1] += s31; c[i3 + 2] += s32; c[i3 + 3] += s33;
      } else {
        c[i0] = s00; c[i0 + 1] = s01; c[i0 + 2] = s02; c[i0 + 3] = s03;
        c[i1] = s10; c[i1 + 1] = s11; c[i1 + 2] = s12; c[i1 + 3] = s13;
        c[i2] = s20; c[i2 + 1] = s21; c[i2 + 2] = s22; c[i2 + 3] = s23;
        c[i3] = s30; c[i3 + 1] = s31; c[i3 + 2] = s32; c[i3 + 3] = s33;
      }
    }
  }
  gemmNTEdge(c, a, b, bias, 0, M4, N4, N, N, K, accumulate);
  gemmNTEdge(c, a, b, bias, M4, M, 0, N, N, K, accumulate);
}

export function gemmNT4x4Packed32(
  c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null,
  M: number, N: number, K: number, accumulate: boolean,
): void {
  const M4 = M - (M % 4), N4 = N - (N % 4);
  if (packB32.length < N4 * K) packB32 = new Float32Array(N4 * K);
  if (packA32.length < 4 * K) packA32 = new Float32Array(4 * K);
  const bp = packB32, ap = packA32;
  for (let n = 0; n < N4; n += 4) packRows4(bp.subarray(n * K, (n + 4) * K), b, n, K);
  for (let m = 0; m < M4; m += 4) {
    packRows4(ap, a, m, K);
    for (let n = 0; n < N4; n += 4) {
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
      let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
      let s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      const end = 4 * K;
      for (let p = 0, q = n * K; p < end; p += 4, q += 4) {
        const x0 = ap[p], x1 = ap[p + 1], x2 = ap[p + 2], x3 = ap[p + 3];
        const y0 = bp[q], y1 = bp[q + 1], y2 = bp[q + 2], y3 = bp[q + 3];
        s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
        s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
        s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
        s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3;
      }
      if (bias !== null) {
        const q0 = bias[n], q1 = bias[n + 1], q2 = bias[n + 2], q3 = bias[n + 3];
        s00 += q0; s01 += q1; s02 += q2; s03 += q3;
        s10 += q0; s11 += q1; s12 += q2; s13 += q3;
        s20 += q0; s21 += q1; s22 += q2; s23 += q3;
        s30 += q0; s31 += q1; s32 += q2; s33 += q3;
      }
      const i0 = m * N + n, i1 = i0 + N, i2 = i1 + N, i3 = i2 + N;
      if (accumulate) {
        c[i0] += s00; c[i0 + 1] += s01; c[i0 + 2] += s02; c[i0 + 3] += s03;
        c[i1] += s10; c[i1 + 1] += s11; c[i1 + 2] += s12; c[i1 + 3] += s13;
        c[i2] += s20; c[i2 + 1] += s21; c[i2 + 2] += s22; c[i2 + 3] += s23;
        c[i3] += s30; c[i3 + 1] += s31; c[i3 + 2] += s32; c[i3 + 3] += s33;
      } else {
        c[i0] = s00; c[i0 + 1] = s01; c[i0 + 2] = s02; c[i0 + 3] = s03;
        c[i1] = s10; c[i1 + 1] = s11; c[i1 + 2] = s12; c[i1 + 3] = s13;
        c[i2] = s20; c[i2 + 1] = s21; c[i2 + 2] = s22; c[i2 + 3] = s23;
        c[i3] = s30; c[i3 + 1] = s31; c[i3 + 2] = s32; c[i3 + 3] = s33;
      }
    }
  }
  gemmNTEdge(c, a, b, bias, 0, M4, N4, N, N, K, accumulate);
  gemmNTEdge(c, a, b, bias, M4, M, 0, N, N, K, accumulate);
}

/** 3 x 4 tile over float64 panels: a packed 3 rows at a time, b in 4-row panels. */
export function gemmNT3x4Packed64(
  c: Float32Array, a: Float32Array, b: Float32Array, bias: Float32Array | null,
  M: number, N: number, K: number, accumulate: boolean,
): void {
  const M3 = M - (M % 3), N4 = N - (N % 4);
  if (packB64.length < N4 * K) packB64 = new Float64Array(N4 * K);
  if (packA64.length < 4 * K) packA64 = new Float64Array(4 * K);
  const bp = packB64, ap = packA64;
  for (let n = 0; n < N4; n += 4) packRows4(bp.subarray(n * K, (n + 4) * K), b, n, K);
  for (let m = 0; m < M3; m += 3) {
    const s0 = m * K, s1 = s0 + K, s2 = s1 + K;
    for (let k = 0, p = 0; k < K; k++, p += 3) {
      ap[p] = a[s0 + k]; ap[p + 1] = a[s1 + k]; ap[p + 2] = a[s2 + k];
    }
    for (let n = 0; n < N4; n += 4) {
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
      let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
      const end = 3 * K;
      for (let p = 0, q = n * K; p < end; p += 3, q += 4) {
        const y0 = bp[q], y1 = bp[q + 1], y2 = bp[q + 2], y3 = bp[q + 3];
        const x0 = ap[p];
        s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
        const x1 = ap[p + 1];
        s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
        const x2 = ap[p + 2];
        s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
      }
      if (bias !== null) {
        const q0 = bias[n], q1 = bias[n + 1], q2 = bias[n + 2], q3 = bias[n + 3];
        s00 += q0; s01 += q1; s02 += q2; s03 += q3;
        s10 += q0; s11 += q1; s12 += q2; s13 += q3;
        s20 += q0; s21 += q1; s22 += q2; s23 += q3;
      }
      const i0 = m * N + n, i1 = i0 + N, i2 = i1 + N;
      if (accumulate) {
        c[i0] += s00; c[i0 + 1] += s01; c[i0 + 2] += s02; c[i0 + 3] += s03;
        c[i1] += s10; c[i1 + 1] += s11; c[i1 + 2] += s12; c[i1 + 3] += s13;
        c[i2] += s20; c[i2 + 1] += s21; c[i2 + 2] += s22; c[i2 + 3] += s23;
      } else {
        c[i0] = s00; c[i0 + 1] = s01; c[i0 + 2] = s02; c[i0 + 3] = s03;
        c[i1] = s10; c[i1 + 1] = s11; c[i1 + 2] = s12; c[i1 + 3] = s13;
        c[i2] = s20; c[i2 + 1] = s21; c[i2 + 2] = s22; c[i2 + 3] = s23;
      }
    }
  }
  gemmNTEdge(c, a, b, bias, 0, M3, N4, N, N, K, accumulate);
  gemmNTEdge(c, a, b, bias, M3, M, 0, N, N, K, accumulate);
}
