// CUDA source of RMSNorm and LayerNorm, mirroring src/cpu/kernels/norm.ts:
//   out[n, c] = inp[n, c] * rstd[n] * weight[c],   rstd[n] = 1 / sqrt(mean_c inp[n, c]^2 + eps)
// (LayerNorm centres first and adds a bias; its functions below say how.)
// One block per row; the row statistics are summed in double (the CPU kernel's float64), and each
// output is computed in double from the same operands in the same order, then rounded once.
// The weight gradient is a column sum over rows, taken in two deterministic passes (a partial sum
// per chunk of rows here, then reduce.ts's column_finish), not with atomics. Invariants the launcher
// guarantees: N, C >= 1, eps > 0.
// SPEC.md: none directly (a layer of the model that section 8 trains).

import type { KernelSource } from '../runtime.js';
import { blockReduceSource, COLUMN_ROWS } from './reduce.js';

/**
 * RMSNorm forward. Launch: grid N, block BLOCK. Pass 1: ss = sum_c x^2 (block sum, double).
 * Pass 2: out = x * r * w. Traffic: inp read twice (the second time mostly from L1/L2), out written once.
 */
export function rmsnormForwardSource(opts: { BLOCK: number }): KernelSource {
  return {
    name: 'rmsnorm_forward',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'f64'],
    source: `${blockReduceSource(opts.BLOCK)}
extern "C" __global__ void __launch_bounds__(BLOCK) rmsnorm_forward(
    float* out,            // (N, C)
    float* rstd,           // (N)
    const float* inp,      // (N, C)
    const float* weight,   // (C)
    int N, int C, double eps) {
  size_t row = (size_t)blockIdx.x * C;
  const auto* x = inp + row;  // float or bf16 storage (storage.ts)
  // pass 1
  double ss = 0.0;
  for (int c = threadIdx.x; c < C; c += BLOCK) ss += (double)x[c] * (double)x[c];
  ss = block_sum(ss);
  double r = 1.0 / sqrt(ss / C + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = (float)r;
  // pass 2
  for (int c = threadIdx.x; c < C; c += BLOCK) out[row + c] = (float)((double)x[c] * r * (double)weight[c]);
}
`,
  };
}

/**
 * Backward of y_c = x_c r w_c, r = (mean_j x_j^2 + eps)^(-1/2), dr/dx_j = -r^3 x_j / C, for dinp:
 *   dx_j += r g_j - r^3 x_j / C * sum_c g_c x_c,   g_c = dy_c w_c
 * Launch: grid N, block BLOCK. Pass 1: gx = sum_c dy_c w_c x_c (block sum, double). Pass 2: dinp.
 * Traffic: dout and inp read twice, dinp read and written once.
 */
export function rmsnormBackwardSource(opts: { BLOCK: number }): KernelSource {
  return {
    name: 'rmsnorm_backward',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32'],
    source: `${blockReduceSource(opts.BLOCK)}
extern "C" __global__ void __launch_bounds__(BLOCK) rmsnorm_backward(
    float* dinp,           // (N, C), accumulated into
    const float* dout,     // (N, C)
    const float* inp,      // (N, C)
    const float* weight,   // (C)
    const float* rstd,     // (N), from the forward
    int N, int C) {
  size_t row = (size_t)blockIdx.x * C;
  double r = (double)rstd[blockIdx.x];
  // pass 1
  double gx = 0.0;
  for (int c = threadIdx.x; c < C; c += BLOCK) gx += (double)dout[row + c] * (double)weight[c] * (double)inp[row + c];
  gx = block_sum(gx);
  double k = r * r * r * gx / C;
  // pass 2
  for (int c = threadIdx.x; c < C; c += BLOCK) {
    double d = r * (double)dout[row + c] * (double)weight[c] - k * (double)inp[row + c];
    dinp[row + c] = (float)((double)dinp[row + c] + d);
  }
}
`,
  };
}

/**
 * The weight gradient of RMSNorm, pass 1 of 2:  partial[p, c] = sum over rows n of chunk p of
 * dy[n, c] x[n, c] r[n]  (double); pass 2 is reduce.ts's column_finish into dweight.
 * Launch: grid (ceil(N / COLUMN_ROWS), ceil(C / 128)), block 128; dout and inp read once, coalesced.
 */
export function rmsnormWeightPartialsSource(): KernelSource {
  return {
    name: 'rmsnorm_weight_partials',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32'],
    source: `
extern "C" __global__ void rmsnorm_weight_partials(
    double* partial,       // (ceil(N / ROWS), C)
    const float* dout,     // (N, C)
    const float* inp,      // (N, C)
    const float* rstd,     // (N)
    int N, int C) {
  int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  int n0 = blockIdx.x * ${COLUMN_ROWS};
  int n1 = min(N, n0 + ${COLUMN_ROWS});
  double acc = 0.0;
  for (int n = n0; n < n1; n++) {
    size_t i = (size_t)n * C + c;
    acc += (double)dout[i] * (double)inp[i] * (double)rstd[n];
  }
  partial[(size_t)blockIdx.x * C + c] = acc;
}
`,
  };
}

/**
 * LayerNorm forward, mirroring src/cpu/kernels/norm.ts's layernormForward:
 *   m = mean_c x_c,  r = 1 / sqrt(mean_c (x_c - m)^2 + eps),  out_c = (x_c - m) r w_c + b_c
 * Launch: grid N, block BLOCK. Pass 1: the mean; pass 2: the variance about it (two passes, as on
 * the CPU: no cancellation when |mean| >> std), both block sums in double; pass 3: out, formed in
 * double and rounded once. mean and rstd are saved (rounded to float) for the backward.
 */
export function layernormForwardSource(opts: { BLOCK: number }): KernelSource {
  return {
    name: 'layernorm_forward',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'f64'],
    source: `${blockReduceSource(opts.BLOCK)}
extern "C" __global__ void __launch_bounds__(BLOCK) layernorm_forward(
    float* out,            // (N, C)
    float* mean,           // (N)
    float* rstd,           // (N)
    const float* inp,      // (N, C)
    const float* weight,   // (C)
    const float* bias,     // (C)
    int N, int C, double eps) {
  size_t row = (size_t)blockIdx.x * C;
  const auto* x = inp + row;  // float or bf16 storage (storage.ts)
  // pass 1
  double s = 0.0;
  for (int c = threadIdx.x; c < C; c += BLOCK) s += (double)x[c];
  double m = block_sum(s) / C;
  // pass 2
  double v = 0.0;
  for (int c = threadIdx.x; c < C; c += BLOCK) {
    double d = (double)x[c] - m;
    v += d * d;
  }
  v = block_sum(v);
  double r = 1.0 / sqrt(v / C + eps);
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = (float)m;
    rstd[blockIdx.x] = (float)r;
  }
  // pass 3
  for (int c = threadIdx.x; c < C; c += BLOCK) out[row + c] = (float)(((double)x[c] - m) * r * (double)weight[c] + (double)bias[c]);
}
`,
  };
}

/**
 * Backward of y_c = xhat_c w_c + b_c, xhat_c = (x_c - mean) r, for dinp (llm.c's layernorm_backward):
 *   dx_c += r (g_c - mean_j g_j - xhat_c mean_j g_j xhat_j),   g_c = dy_c w_c
 * mean and r are the forward's saved floats, as on the CPU. Launch: grid N, block BLOCK.
 * Pass 1: both means (block sums, double); pass 2: dinp. dweight and dbias are column sums
 * (layernormWeightPartialsSource and reduce.ts), not summed here.
 */
export function layernormBackwardSource(opts: { BLOCK: number }): KernelSource {
  return {
    name: 'layernorm_backward',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32'],
    source: `${blockReduceSource(opts.BLOCK)}
extern "C" __global__ void __launch_bounds__(BLOCK) layernorm_backward(
    float* dinp,           // (N, C), accumulated into
    const float* dout,     // (N, C)
    const float* inp,      // (N, C)
    const float* weight,   // (C)
    const float* mean,     // (N), from the forward
    const float* rstd,     // (N), from the forward
    int N, int C) {
  size_t row = (size_t)blockIdx.x * C;
  double m = (double)mean[blockIdx.x], r = (double)rstd[blockIdx.x];
  // pass 1
  double gs = 0.0, gxs = 0.0;
  for (int c = threadIdx.x; c < C; c += BLOCK) {
    double xhat = ((double)inp[row + c] - m) * r;
    double g = (double)dout[row + c] * (double)weight[c];
    gs += g;
    gxs += g * xhat;
  }
  double gMean = block_sum(gs) / C;
  double gxMean = block_sum(gxs) / C;
  // pass 2
  for (int c = threadIdx.x; c < C; c += BLOCK) {
    double xhat = ((double)inp[row + c] - m) * r;
    double g = (double)dout[row + c] * (double)weight[c];
    dinp[row + c] = (float)((double)dinp[row + c] + r * (g - gMean - xhat * gxMean));
  }
}
`,
  };
}

/**
 * The weight gradient of LayerNorm, pass 1 of 2:  partial[p, c] = sum over rows n of chunk p of
 * dy[n, c] (x[n, c] - mean[n]) rstd[n]  (double); pass 2 is reduce.ts's column_finish into dweight.
 * (dbias is the plain column sum of dout: reduce.ts's column_partials.)
 * Launch: grid (ceil(N / COLUMN_ROWS), ceil(C / 128)), block 128; dout and inp read once, coalesced.
 */
export function layernormWeightPartialsSource(): KernelSource {
  return {
    name: 'layernorm_weight_partials',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32'],
    source: `
extern "C" __global__ void layernorm_weight_partials(
    double* partial,       // (ceil(N / ROWS), C)
    const float* dout,     // (N, C)
    const float* inp,      // (N, C)
    const float* mean,     // (N)
    const float* rstd,     // (N)
    int N, int C) {
  int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  int n0 = blockIdx.x * ${COLUMN_ROWS};
  int n1 = min(N, n0 + ${COLUMN_ROWS});
  double acc = 0.0;
  for (int n = n0; n < n1; n++) {
    size_t i = (size_t)n * C + c;
    acc += (double)dout[i] * (((double)inp[i] - (double)mean[n]) * (double)rstd[n]);
  }
  partial[(size_t)blockIdx.x * C + c] = acc;
}
`,
  };
}
