// CUDA source of SwiGLU, mirroring src/cpu/kernels/activation.ts: out = silu(gate) * up,
// silu(x) = x * sigmoid(x). Elementwise, one thread per element, 256 per block. The math is in
// float (expf, not the fast __expf): the CPU computes in float64, so results differ by a few ulp,
// well inside fp32 tolerances; double math would cost 64x on consumer GPUs for no visible gain.
// Not GELU (GPT-2 imports run on the CPU for now). Backward ACCUMULATES into dgate and dup.
// SPEC.md: none directly (a layer of the model that section 8 trains).

import type { KernelSource } from '../runtime.js';

/** out = gate / (1 + exp(-gate)) * up. Launch: grid ceil(n / 256), block 256; 2 reads, 1 write per element. */
export function swigluForwardSource(): KernelSource {
  return {
    name: 'swiglu_forward',
    params: ['ptr', 'ptr', 'ptr', 'i32'],
    source: `
extern "C" __global__ void swiglu_forward(
    float* out,          // (n)
    const float* gate,   // (n)
    const float* up,     // (n)
    int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  float g = gate[i];
  // expf(-g) overflows to inf for g < -88: g / inf = -0, the limit, as on the CPU
  out[i] = g / (1.0f + expf(-g)) * up[i];
}
`,
  };
}

/**
 * Backward of out = silu(g) u, s = sigmoid(g), silu'(g) = s (1 + g (1 - s)):
 *   dgate += dout u s (1 + g (1 - s));   dup += dout g s
 * Launch: grid ceil(n / 256), block 256; 5 reads, 2 writes per element.
 */
export function swigluBackwardSource(): KernelSource {
  return {
    name: 'swiglu_backward',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32'],
    source: `
extern "C" __global__ void swiglu_backward(
    float* dgate,        // (n), accumulated into
    float* dup,          // (n), accumulated into
    const float* dout,   // (n)
    const float* gate,   // (n)
    const float* up,     // (n)
    int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  float g = gate[i], d = dout[i];
  float s = 1.0f / (1.0f + expf(-g));
  dgate[i] += d * up[i] * s * (1.0f + g * (1.0f - s));
  dup[i] += d * g * s;
}
`,
  };
}
