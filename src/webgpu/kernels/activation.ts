// Elementwise MLP activations, as the CPU's (src/cpu/kernels/activation.ts): SwiGLU
// silu(gate) up, GELU with the tanh approximation (GPT-2's gelu_new), and exact GELU x Phi(x)
// (NeoX) with erf from Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7, below fp32's
// resolution of Phi near 1). One thread per element.
import { FLAT_ARGS, FLAT_INDEX } from './common.js';

export type ActivationKind = 'swiglu' | 'gelu_tanh' | 'gelu_erf';

export function activationSource(kind: ActivationKind): string {
  const swiglu = kind === 'swiglu';
  const body = swiglu
    // exp(-g) overflows to +inf for g < -88: g / inf = -0, silu's limit.
    ? 'let g = a[idx]; out[idx] = g / (1.0 + exp(-g)) * b[idx];'
    : kind === 'gelu_tanh'
      // tanh of a clamped argument: some drivers compute tanh as a ratio of exponentials (inf / inf).
      ? 'let x = a[idx]; out[idx] = 0.5 * x * (1.0 + tanh(clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -15.0, 15.0)));'
      : 'let x = a[idx]; out[idx] = 0.5 * x * (1.0 + erf(x * 0.7071067811865476));';
  return /* wgsl */ `
struct P { n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (n)
@group(0) @binding(2) var<storage, read> a: array<f32>;         // (n) gate, or the GELU input
${swiglu ? '@group(0) @binding(3) var<storage, read> b: array<f32>; // (n) up' : ''}

fn erf(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * z);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-z * z);
  return select(-y, y, x >= 0.0);
}

@compute @workgroup_size(64)
fn main(${FLAT_ARGS}) {
  ${FLAT_INDEX}
  if (idx >= p.n) { return; }
  ${body}
}
`;
}
