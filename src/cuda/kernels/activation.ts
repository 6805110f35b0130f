// CUDA source of SwiGLU and GELU, mirroring src/cpu/kernels/activation.ts: out = silu(gate) * up,
// silu(x) = x * sigmoid(x). Elementwise, one thread per element, 256 per block. The math is in
// float (expf, not the fast __expf): the CPU computes in float64, so results differ by a few ulp,
// well inside fp32 tolerances; double math would cost 64x on consumer GPUs for no visible gain.
// GELU (erf and tanh forms, for GPT-2 / GPT-NeoX imports) follows the same rules. Backward
// ACCUMULATES into the input gradients.
// SPEC.md: none directly (a layer of the model that section 8 trains).

import type { GeluForm } from '../../backend.js';
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

/**
 * GELU forward in either form (src/cpu/kernels/activation.ts's geluErfForward / geluForward):
 *   erf   out = 0.5 x (1 + erf(x / sqrt 2))
 *   tanh  out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
 * Float math (erff, tanhf), as swiglu. Launch: grid ceil(n / 256), block 256; 1 read, 1 write per element.
 */
export function geluForwardSource(opts: { form: GeluForm }): KernelSource {
  const name = `gelu_${opts.form}_forward`;
  const body = opts.form === 'erf'
    ? 'out[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));'
    : 'out[i] = 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));';
  return {
    name,
    params: ['ptr', 'ptr', 'i32'],
    source: `
extern "C" __global__ void ${name}(
    float* out,          // (n)
    const float* inp,    // (n)
    int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  float x = inp[i];
  ${body}
}
`,
  };
}

/**
 * Backward of GELU, ACCUMULATING:
 *   erf   dinp += dout (Phi(x) + x phi(x)),  Phi(x) = 0.5 (1 + erf(x / sqrt 2)), phi(x) = exp(-x^2/2) / sqrt(2 pi)
 *   tanh  dinp += dout (0.5 (1 + th) + 0.5 x (1 - th^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)),  th = tanh(u)
 * (1 - th^2 rather than 1 / cosh^2, as on the CPU: no overflow.) expf(-x^2/2) underflows to 0 for
 * large |x|, the limit. Launch: grid ceil(n / 256), block 256; 3 reads, 1 write per element.
 */
export function geluBackwardSource(opts: { form: GeluForm }): KernelSource {
  const name = `gelu_${opts.form}_backward`;
  const local = opts.form === 'erf'
    ? 'float local = 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * 0.39894228040143268f * expf(-0.5f * x * x);'
    : `float th = tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x));
  float local = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * 0.79788456080286536f * (1.0f + 3.0f * 0.044715f * x * x);`;
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'i32'],
    source: `
extern "C" __global__ void ${name}(
    float* dinp,         // (n), accumulated into
    const float* dout,   // (n)
    const float* inp,    // (n)
    int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  float x = inp[i];
  ${local}
  dinp[i] += dout[i] * local;
}
`,
  };
}
