// Normalisation layers of the CPU model: RMSNorm (the Llama pre-norm) and LayerNorm (GPT-2 imports),
// as llm.c-style forward/backward pairs over preallocated buffers. Each row of C features is
// normalised on its own; statistics are computed in float64 and the per-row 1/std (and mean) are
// saved for the backward. Not fused with the residual add or the following matmul.
// Backward functions ACCUMULATE (+=) into dinp, dweight and dbias; the caller zeroes them once per step.
// No validation here (the model checks shapes once); invariants: N, C >= 1, eps > 0, every buffer
// at least as long as its shape, outputs do not alias inputs.
// SPEC.md: no section of its own; these are the model's layers, which section 8's trainer runs.

// (C) float64 sums of the weight (and bias) gradients over the N rows, added to dweight once per call
// so that long batches do not accumulate rounding in float32.
let wsum = new Float64Array(0);
let bsum = new Float64Array(0);
function sums(C: number): void {
  if (wsum.length < C) {
    wsum = new Float64Array(C);
    bsum = new Float64Array(C);
  }
  wsum.fill(0, 0, C);
  bsum.fill(0, 0, C);
}

/**
 * RMSNorm: out[n, c] = inp[n, c] * rstd[n] * weight[c],  rstd[n] = 1 / sqrt(mean_c inp[n, c]^2 + eps).
 * @example
 *   rmsnormForward(xn, rstd, x, lnWeight, B * T, C, 1e-5);
 */
export function rmsnormForward(
  out: Float32Array, // (N, C)
  rstd: Float32Array, // (N), saved for the backward
  inp: Float32Array, // (N, C)
  weight: Float32Array, // (C)
  N: number, C: number, eps: number,
): void {
  for (let n = 0; n < N; n++) {
    const row = n * C;
    let ss = 0;
    for (let c = 0; c < C; c++) ss += inp[row + c] * inp[row + c];
    const r = 1 / Math.sqrt(ss / C + eps);
    rstd[n] = r;
    for (let c = 0; c < C; c++) out[row + c] = inp[row + c] * r * weight[c];
  }
}

/**
 * Backward of y_c = x_c r w_c with r = (mean_j x_j^2 + eps)^(-1/2), so dr/dx_j = -r^3 x_j / C:
 *   dweight_c += sum_n dy_c x_c r
 *   dx_j      += r g_j - r^3 x_j / C * sum_c g_c x_c,    g_c = dy_c w_c
 * The saved rstd is float32; recomputing it in float64 is not worth a second pass (it is 1 ulp).
 */
export function rmsnormBackward(
  dinp: Float32Array, // (N, C), accumulated into
  dweight: Float32Array, // (C), accumulated into
  dout: Float32Array, // (N, C)
  inp: Float32Array, // (N, C)
  weight: Float32Array, // (C)
  rstd: Float32Array, // (N), from the forward
  N: number, C: number,
): void {
  sums(C);
  const dw = wsum;
  for (let n = 0; n < N; n++) {
    const row = n * C;
    const r = rstd[n];
    let gx = 0;
    for (let c = 0; c < C; c++) {
      const x = inp[row + c], d = dout[row + c];
      gx += d * weight[c] * x;
      dw[c] += d * x * r;
    }
    const k = (r * r * r * gx) / C;
    for (let c = 0; c < C; c++) dinp[row + c] += r * dout[row + c] * weight[c] - k * inp[row + c];
  }
  for (let c = 0; c < C; c++) dweight[c] += dw[c];
}

/**
 * LayerNorm: out[n, c] = (inp[n, c] - mean[n]) * rstd[n] * weight[c] + bias[c],
 * rstd[n] = 1 / sqrt(var_c inp[n, :] + eps) with the biased (1/C) variance, as PyTorch.
 * @example
 *   layernormForward(xn, mean, rstd, x, lnW, lnB, B * T, C, 1e-5);
 */
export function layernormForward(
  out: Float32Array, // (N, C)
  mean: Float32Array, // (N), saved for the backward
  rstd: Float32Array, // (N), saved for the backward
  inp: Float32Array, // (N, C)
  weight: Float32Array, // (C)
  bias: Float32Array, // (C)
  N: number, C: number, eps: number,
): void {
  for (let n = 0; n < N; n++) {
    const row = n * C;
    let s = 0;
    for (let c = 0; c < C; c++) s += inp[row + c];
    const m = s / C;
    // two passes: the variance of (x - m) does not cancel catastrophically when |mean| >> std
    let v = 0;
    for (let c = 0; c < C; c++) {
      const d = inp[row + c] - m;
      v += d * d;
    }
    const r = 1 / Math.sqrt(v / C + eps);
    mean[n] = m;
    rstd[n] = r;
    for (let c = 0; c < C; c++) out[row + c] = (inp[row + c] - m) * r * weight[c] + bias[c];
  }
}

/**
 * Backward of y_c = xhat_c w_c + b_c, xhat_c = (x_c - mean) r (llm.c's layernorm_backward):
 *   dbias_c   += sum_n dy_c;     dweight_c += sum_n dy_c xhat_c
 *   dx_c      += r (g_c - mean_j g_j - xhat_c mean_j g_j xhat_j),    g_c = dy_c w_c
 */
export function layernormBackward(
  dinp: Float32Array, // (N, C), accumulated into
  dweight: Float32Array, // (C), accumulated into
  dbias: Float32Array, // (C), accumulated into
  dout: Float32Array, // (N, C)
  inp: Float32Array, // (N, C)
  weight: Float32Array, // (C)
  mean: Float32Array, // (N), from the forward
  rstd: Float32Array, // (N), from the forward
  N: number, C: number,
): void {
  sums(C);
  const dw = wsum, db = bsum;
  for (let n = 0; n < N; n++) {
    const row = n * C;
    const m = mean[n], r = rstd[n];
    let gMean = 0, gxMean = 0;
    for (let c = 0; c < C; c++) {
      const xhat = (inp[row + c] - m) * r;
      const d = dout[row + c];
      const g = d * weight[c];
      gMean += g;
      gxMean += g * xhat;
      db[c] += d;
      dw[c] += d * xhat;
    }
    gMean /= C;
    gxMean /= C;
    for (let c = 0; c < C; c++) {
      const xhat = (inp[row + c] - m) * r;
      const g = dout[row + c] * weight[c];
      dinp[row + c] += r * (g - gMean - xhat * gxMean);
    }
  }
  for (let c = 0; c < C; c++) {
    dweight[c] += dw[c];
    dbias[c] += db[c];
  }
}
