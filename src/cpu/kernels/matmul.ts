// Matrix multiply for the CPU trainer: the linear layer out = inp @ weight^T + bias and its backward
// (llm.c's matmul_forward / matmul_backward). It is the hot spot of CPU training: the projections,
// the MLP and the LM head are nearly all of a step's FLOPs. Not a general BLAS (dev/matmul holds
// the experiments and the variants that lost; `node --import tsx dev/matmul/bench.ts` times them:
// about 6 GFLOP/s per thread here against 1.7 for a naive triple loop forward and 1.0-1.3
// backward, on the 2-core AMD EPYC development VM).
//
// Threads (../threads.ts): a large call on SharedArrayBuffer-backed arrays is split into parts,
// forward and dinp over rows N, dweight and dbias over output channels OC. Every output element is
// then computed by exactly one thread with the same float64 sum over the same k order as one
// thread computes it, so results are bit-identical for any thread count (the 3 x 4 tiling does not
// matter: a tile's full and guarded stores round the same float64 value). Small calls (decoding,
// N = 1) and plain arrays run inline.
//
// All three products are one strided kernel, gemm: c (M, N) (+)= A (M, K) @ B (N, K)^T, where
// A[m, k] = a[m * am + k * ak] and B[n, k] = b[n * bn + k * bk], so the backward needs no transposed
// copies. The kernel packs B into float64 panels of 4 rows interleaved by k (once per call) and A
// into a panel of 3 rows (once per 3 rows of c), then every 3 x 4 tile of c is 12 dot products over
// two unit-stride streams: 12 accumulators + 5 loaded values fit the 16 x86 SSE registers, and the
// float64 panels take the float32 -> float64 conversions out of the inner loop. Partial tiles at the
// edges are packed with zero rows and stored through a guarded path. Accumulation is float64 over
// the whole of K; each output element is rounded to float32 once.
//
// Memory traffic per call: B packed once (N K floats read, 8 N K bytes written); A packed once per
// chunk of NC columns; the packed B is re-read once per 3 rows of c (8 N K ceil(M / 3) bytes, from
// L2/L3: measured not to be the bottleneck, V8's scalar float64 code is).
// No validation here (the model checks shapes once); invariants: every array is at least as long as
// its shape says, N, C, OC >= 1, and outputs do not alias inputs.
// SPEC.md: no section of its own; these are the model's layers, which section 8's trainer runs.

import { forkJoin, partsFor } from '../threads.js';

// Scratch, one set per thread: each worker loads its own copy of this module.
let panelA = new Float64Array(0); // (3, K) interleaved: panelA[k * 3 + i] = A[m + i, k]
let panelB = new Float64Array(0); // (ceil(NC / 4), K, 4): panelB[P * 4K + k * 4 + j] = B[n0 + 4P + j, k]
const tile = new Float64Array(12); // one 3 x 4 tile of c, for the guarded edge store
let biasSums = new Float64Array(0); // (OC) column sums of dout
// Cap on the packed B scratch. Blocking B to fit L2 (64 KiB - 1 MiB panels) measured slower here
// (repacking A per chunk costs more than the cache misses it saves), so this only bounds memory:
// an LM head with V = 50257, C = 768 would otherwise need a 309 MB panel.
const PANEL_BYTES = 8 * 1024 * 1024;

/**
 * c (M, N) = [c +] A (M, K) @ B (N, K)^T [+ bias (N)], A[m, k] = a[m*am + k*ak], B[n, k] = b[n*bn + k*bk].
 * The strides let one kernel serve inp @ weight^T, dout @ weight and dout^T @ inp.
 */
function gemm(
  c: Float32Array, a: Float32Array, am: number, ak: number, b: Float32Array, bn: number, bk: number,
  bias: Float32Array | null, M: number, N: number, K: number, accumulate: boolean,
): void {
  // Columns of c are done in chunks of NC so that the packed B (8 NC K bytes) stays under PANEL_BYTES.
  const NC = Math.max(4, Math.floor(PANEL_BYTES / (8 * K * 4)) * 4);
  const NP = Math.ceil(Math.min(N, NC) / 4);
  if (panelB.length < NP * 4 * K) panelB = new Float64Array(NP * 4 * K);
  if (panelA.length < 3 * K) panelA = new Float64Array(3 * K);
  for (let n0 = 0; n0 < N; n0 += NC) gemmColumns(c, a, am, ak, b, bn, bk, bias, M, N, K, accumulate, n0, Math.min(n0 + NC, N));
}

/** Columns [n0, n1) of gemm. */
function gemmColumns(
  c: Float32Array, a: Float32Array, am: number, ak: number, b: Float32Array, bn: number, bk: number,
  bias: Float32Array | null, M: number, N: number, K: number, accumulate: boolean, n0: number, n1: number,
): void {
  const pb = panelB, pa = panelA;
  const NP = Math.ceil((n1 - n0) / 4);
  // Pack B. A partial last panel is padded with zero rows: edge tiles run the same inner loop, and
  // the padding's accumulators (never stored) stay finite whatever an earlier call left there.
  for (let P = 0; P < NP; P++) {
    const base = P * 4 * K;
    for (let j = 0; j < 4; j++) {
      const n = n0 + P * 4 + j;
      if (n < n1) {
        const row = n * bn;
        for (let k = 0, p = base + j; k < K; k++, p += 4) pb[p] = b[row + k * bk];
      } else {
        for (let k = 0, p = base + j; k < K; k++, p += 4) pb[p] = 0;
      }
    }
  }
  for (let m = 0; m < M; m += 3) {
    const rows = Math.min(3, M - m);
    for (let i = 0; i < 3; i++) {
      if (i < rows) {
        const row = (m + i) * am;
        for (let k = 0, p = i; k < K; k++, p += 3) pa[p] = a[row + k * ak];
      } else {
        for (let k = 0, p = i; k < K; k++, p += 3) pa[p] = 0;
      }
    }
    const end = 3 * K;
    for (let P = 0; P < NP; P++) {
      const n = n0 + P * 4;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
      let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
      for (let p = 0, q = P * 4 * K; p < end; p += 3, q += 4) {
        const y0 = pb[q], y1 = pb[q + 1], y2 = pb[q + 2], y3 = pb[q + 3];
        // x loaded one at a time: keeps live values at 12 accumulators + 5 (no register spills)
        const x0 = pa[p];
        s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
        const x1 = pa[p + 1];
        s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
        const x2 = pa[p + 2];
        s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
      }
      const cols = Math.min(4, n1 - n);
      if (rows === 3 && cols === 4) {
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
      } else {
        tile[0] = s00; tile[1] = s01; tile[2] = s02; tile[3] = s03;
        tile[4] = s10; tile[5] = s11; tile[6] = s12; tile[7] = s13;
        tile[8] = s20; tile[9] = s21; tile[10] = s22; tile[11] = s23;
        for (let i = 0; i < rows; i++) {
          for (let j = 0; j < cols; j++) {
            const s = tile[i * 4 + j] + (bias === null ? 0 : bias[n + j]);
            const idx = (m + i) * N + n + j;
            c[idx] = accumulate ? c[idx] + s : s;
          }
        }
      }
    }
  }
}


/** A forward call as plain data, for a worker thread (threads.ts). */
export interface MatmulForwardTask {
  op: 'matmulForward';
  out: Float32Array; // (N, OC)
  inp: Float32Array; // (N, C)
  weight: Float32Array; // (OC, C)
  bias: Float32Array | null; // (OC)
  N: number; C: number; OC: number;
}

/** A backward call as plain data, for a worker thread (threads.ts). */
export interface MatmulBackwardTask {
  op: 'matmulBackward';
  dinp: Float32Array; // (N, C)
  dweight: Float32Array; // (OC, C)
  dbias: Float32Array | null; // (OC)
  dout: Float32Array; // (N, OC)
  inp: Float32Array; // (N, C)
  weight: Float32Array; // (OC, C)
  N: number; C: number; OC: number;
}

/**
 * Linear layer forward: out[n, o] = bias[o] + sum_c inp[n, c] * weight[o, c].
 * @example
 *   matmulForward(out, x, w, b, B * T, C, 3 * C); // QKV projection, out (B*T, 3C)
 */
export function matmulForward(
  out: Float32Array, // (N, OC), overwritten
  inp: Float32Array, // (N, C)
  weight: Float32Array, // (OC, C), PyTorch's nn.Linear layout
  bias: Float32Array | null, // (OC) or null
  N: number, C: number, OC: number,
): void {
  const parts = partsFor(N * C * OC, Math.ceil(N / 3), [out, inp, weight, bias]);
  if (parts === 1) matmulForwardSerial(out, inp, weight, bias, N, C, OC);
  else forkJoin({ op: 'matmulForward', out, inp, weight, bias, N, C, OC }, parts, matmulForwardPart);
}

/**
 * Backward of out = inp @ weight^T + bias, ACCUMULATING into all three gradients:
 *   dinp[n, c]    += sum_o dout[n, o] * weight[o, c]
 *   dweight[o, c] += sum_n dout[n, o] * inp[n, c]
 *   dbias[o]      += sum_n dout[n, o]
 * @example
 *   matmulBackward(dx, dw, db, dout, x, w, B * T, C, OC); // caller zeroed dx, dw, db once per step
 */
export function matmulBackward(
  dinp: Float32Array, // (N, C), accumulated into
  dweight: Float32Array, // (OC, C), accumulated into
  dbias: Float32Array | null, // (OC) or null, accumulated into
  dout: Float32Array, // (N, OC)
  inp: Float32Array, // (N, C)
  weight: Float32Array, // (OC, C)
  N: number, C: number, OC: number,
): void {
  const parts = partsFor(N * C * OC, Math.max(Math.ceil(N / 3), Math.ceil(OC / 3)), [dinp, dweight, dbias, dout, inp, weight]);
  if (parts === 1) matmulBackwardSerial(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
  else forkJoin({ op: 'matmulBackward', dinp, dweight, dbias, dout, inp, weight, N, C, OC }, parts, matmulBackwardPart);
}

/** matmulForward on the calling thread alone (the kernel every part runs; the tests' oracle). */
export function matmulForwardSerial(
  out: Float32Array, inp: Float32Array, weight: Float32Array, bias: Float32Array | null, N: number, C: number, OC: number,
): void {
  matmulForwardRows(out, inp, weight, bias, C, OC, 0, N);
}

/** matmulBackward on the calling thread alone (the kernel every part runs; the tests' oracle). */
export function matmulBackwardSerial(
  dinp: Float32Array, dweight: Float32Array, dbias: Float32Array | null, dout: Float32Array, inp: Float32Array,
  weight: Float32Array, N: number, C: number, OC: number,
): void {
  matmulBackwardRanges(dinp, dweight, dbias, dout, inp, weight, N, C, OC, 0, N, 0, OC);
}

/** Part `part` of `parts` of a forward: rows [n0, n1) of out, in whole 3-row tiles. */
export function matmulForwardPart(t: MatmulForwardTask, part: number, parts: number): void {
  matmulForwardRows(t.out, t.inp, t.weight, t.bias, t.C, t.OC, share(t.N, 3, part, parts), share(t.N, 3, part + 1, parts));
}

/** Part `part` of `parts` of a backward: rows [n0, n1) of dinp and channels [o0, o1) of dweight and dbias. */
export function matmulBackwardPart(t: MatmulBackwardTask, part: number, parts: number): void {
  matmulBackwardRanges(
    t.dinp, t.dweight, t.dbias, t.dout, t.inp, t.weight, t.N, t.C, t.OC,
    share(t.N, 3, part, parts), share(t.N, 3, part + 1, parts), share(t.OC, 3, part, parts), share(t.OC, 3, part + 1, parts),
  );
}

/** Start of part `part` of `parts` of [0, total), cut at multiples of `align` (part = parts gives total). */
function share(total: number, align: number, part: number, parts: number): number {
  return Math.min(total, Math.floor((Math.ceil(total / align) * part) / parts) * align);
}

/** Rows [n0, n1) of out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias. */
function matmulForwardRows(
  out: Float32Array, inp: Float32Array, weight: Float32Array, bias: Float32Array | null, C: number, OC: number, n0: number, n1: number,
): void {
  if (n1 <= n0) return;
  gemm(out.subarray(n0 * OC), inp.subarray(n0 * C), C, 1, weight, C, 1, bias, n1 - n0, OC, C, false);
}

/** Rows [n0, n1) of dinp, rows [o0, o1) of dweight and entries [o0, o1) of dbias, accumulated into. */
function matmulBackwardRanges(
  dinp: Float32Array, dweight: Float32Array, dbias: Float32Array | null, dout: Float32Array, inp: Float32Array,
  weight: Float32Array, N: number, C: number, OC: number, n0: number, n1: number, o0: number, o1: number,
): void {
  // dinp (N, C) += dout (N, OC) @ weight (OC, C): B[c, o] = weight[o * C + c]
  if (n1 > n0) gemm(dinp.subarray(n0 * C), dout.subarray(n0 * OC), OC, 1, weight, 1, C, null, n1 - n0, C, OC, true);
  if (o1 <= o0) return;
  // dweight (OC, C) += dout^T (OC, N) @ inp (N, C): A[o, n] = dout[n * OC + o], B[c, n] = inp[n * C + c]
  gemm(dweight.subarray(o0 * C), dout.subarray(o0), 1, OC, inp, 1, C, null, o1 - o0, C, N, true);
  if (dbias !== null) {
    // dbias (OC) += column sums of dout, walked row by row (contiguous) into float64 sums
    const W = o1 - o0;
    if (biasSums.length < W) biasSums = new Float64Array(W);
    const sums = biasSums;
    sums.fill(0, 0, W);
    for (let n = 0; n < N; n++) {
      const row = n * OC + o0;
      for (let o = 0; o < W; o++) sums[o] += dout[row + o];
    }
    for (let o = 0; o < W; o++) dbias[o0 + o] += sums[o];
  }
}
