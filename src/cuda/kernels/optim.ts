// CUDA source of the optimizer's two ops, mirroring the CPU backend's (src/cpu/backend.ts and
// src/train/optim.ts): a sum of squares (for the global gradient norm) and one AdamW step on one
// tensor. The sum is two-pass and deterministic: per-block partial sums in double, added on the
// host in block order, like the CPU's float64 sum (not bit-identical: another order).
// SPEC.md: none directly (the trainer of section 8 on the GPU).

import type { KernelSource } from '../runtime.js';

export const OPTIM_BLOCK = 256;
/** Blocks of the sum of squares: fixed, so the partials buffer has a fixed size. */
export const SUMSQ_BLOCKS = 512;

/** partials[b] = sum over a grid-stride slice of x^2, in double. Launch: SUMSQ_BLOCKS x OPTIM_BLOCK. */
export function sumSquaresSource(): KernelSource {
  return {
    name: 'sum_squares',
    params: ['ptr', 'ptr', 'i32'],
    source: `
extern "C" __global__ void sum_squares(
    double* partials,    // (gridDim.x)
    const float* x,      // (n)
    int n) {
  __shared__ double s[${OPTIM_BLOCK}];
  double acc = 0.0;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)n; i += (size_t)gridDim.x * blockDim.x) {
    double v = x[i];
    acc += v * v;
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) s[threadIdx.x] += s[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = s[0];
}
`,
  };
}

/**
 * One AdamW step (torch.optim.AdamW's arithmetic), g first scaled by gradScale (clipping):
 *   g' = gradScale g;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2
 *   p -= lr ((m / bc1) / (sqrt(v / bc2) + eps) + wd p)
 * bc1 = 1 - b1^step and bc2 = 1 - b2^step come from the host. Elementwise: 4 reads, 3 writes.
 */
export function adamwSource(): KernelSource {
  return {
    name: 'adamw',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'f32', 'f32', 'f32', 'f32', 'f32', 'f32', 'f32', 'f32'],
    source: `
extern "C" __global__ void adamw(
    float* p, const float* g, float* m, float* v, int n,
    float lr, float b1, float b2, float eps, float wd, float bc1, float bc2, float gradScale) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  float gi = g[i] * gradScale;
  float mi = b1 * m[i] + (1.0f - b1) * gi;
  float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  float pi = p[i];
  p[i] = pi - lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * pi);
}
`,
  };
}
