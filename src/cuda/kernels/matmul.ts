// CUDA source for the linear layer's bias, mirroring src/cpu/kernels/matmul.ts. The products
// themselves are cuBLAS's (backend.ts calls cublasSgemm_v2 with the transposes written down there);
// this file holds only what cuBLAS does not do: adding the bias after out = inp @ weight^T.
// The bias gradient (column sums of dout) is reduce.ts's two-pass column sum.
// SPEC.md: none directly (a layer of the model that section 8 trains).

import type { KernelSource } from '../runtime.js';

/**
 * out[n, o] += bias[o]. Launch: grid ceil(N*OC / 256), block 256; out read and written once.
 * (Adding after the product rounds twice where the CPU rounds once: within fp32 tolerance.)
 */
export function addBiasSource(): KernelSource {
  return {
    name: 'add_bias',
    params: ['ptr', 'ptr', 'i32', 'i32'],
    source: `
extern "C" __global__ void add_bias(
    float* out,           // (N, OC), accumulated into
    const float* bias,    // (OC)
    int N, int OC) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (size_t)N * OC) out[i] += bias[i % OC];
}
`,
  };
}
