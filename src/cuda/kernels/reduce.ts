// Shared pieces of the CUDA kernels: a deterministic block sum in double (a C snippet the row
// kernels include), and the two-pass column sum that the weight gradients use (rmsnorm's dweight,
// matmul's dbias). Not atomics: every sum here is taken in a fixed order, so a run is bit-for-bit
// repeatable, as the CPU path is. Double accumulators, like the CPU kernels' float64 sums.
// SPEC.md: none directly (layer plumbing for section 8's trainer on the GPU).

import { ArgumentError } from '../../core/errors.js';
import type { KernelSource } from '../runtime.js';

/**
 * C source of `block_sum(v)` and `block_max(v)` for a block of BLOCK threads (a multiple of 32):
 * every thread gets the same result, summed warp by warp in a fixed order. Each may be called
 * several times in one kernel (the leading __syncthreads protects the shared slots).
 */
export function blockReduceSource(BLOCK: number): string {
  if (BLOCK % 32 !== 0 || BLOCK < 32 || BLOCK > 1024) throw new ArgumentError('BLOCK', 'a multiple of 32 in [32, 1024]', BLOCK);
  return `
#define BLOCK ${BLOCK}
#define WARPS (BLOCK / 32)
__device__ double block_sum(double v) {
  __shared__ double warp_sums[WARPS];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
  __syncthreads();
  double s = 0.0;
  for (int w = 0; w < WARPS; w++) s += warp_sums[w];
  return s;
}
__device__ float block_max(float v) {
  __shared__ float warp_maxs[WARPS];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) warp_maxs[threadIdx.x >> 5] = v;
  __syncthreads();
  float m = warp_maxs[0];
  for (int w = 1; w < WARPS; w++) m = fmaxf(m, warp_maxs[w]);
  return m;
}
`;
}

/** Rows per partial sum in the column sums (pass 1 below); the scratch is ceil(N / ROWS) x C doubles. */
export const COLUMN_ROWS = 32;

/**
 * Column sums, pass 1 of 2: partial[p, c] = sum over rows n in chunk p of x[n, c] (double).
 * Launch: grid (ceil(N / ROWS), ceil(C / 128)), block 128 (chunks on x: y is limited to 65535); reads N*C floats once, coalesced along c.
 */
export function columnPartialsSource(): KernelSource {
  return {
    name: 'column_partials',
    params: ['ptr', 'ptr', 'i32', 'i32'],
    source: `
extern "C" __global__ void column_partials(
    double* partial,     // (ceil(N / ROWS), C)
    const float* x,      // (N, C)
    int N, int C) {
  int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  int n0 = blockIdx.x * ${COLUMN_ROWS};
  int n1 = min(N, n0 + ${COLUMN_ROWS});
  double acc = 0.0;
  for (int n = n0; n < n1; n++) acc += (double)x[(size_t)n * C + c];
  partial[(size_t)blockIdx.x * C + c] = acc;
}
`,
  };
}

/**
 * Column sums, pass 2 of 2: out[c] += sum over p of partial[p, c], in order of p, rounded to
 * float once (as the CPU kernels add their float64 sums into float32 gradients).
 * Launch: grid ceil(C / 128), block 128; reads P*C doubles.
 */
export function columnFinishSource(): KernelSource {
  return {
    name: 'column_finish',
    params: ['ptr', 'ptr', 'i32', 'i32'],
    source: `
extern "C" __global__ void column_finish(
    float* out,              // (C), accumulated into
    const double* partial,   // (P, C)
    int P, int C) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double acc = 0.0;
  for (int p = 0; p < P; p++) acc += partial[(size_t)p * C + c];
  out[c] = (float)((double)out[c] + acc);
}
`,
  };
}
