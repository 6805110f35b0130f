// Normalisation of each row of C features, one workgroup of 64 threads per row, as the CPU's
// rmsnormForward / layernormForward (src/cpu/kernels/norm.ts): RMSNorm x r w with
// r = 1 / sqrt(mean x^2 + eps); LayerNorm (x - mean) r w + b with the two-pass (biased) variance.
// Statistics in fp32 tree sums (the CPU uses float64; the difference is a few ulp at C <= 8192).
// Not here: saving mean/rstd for a backward.
import { REDUCE } from './common.js';

export function normSource(kind: 'rms' | 'layer'): string {
  const layer = kind === 'layer';
  return /* wgsl */ `
struct P { N: u32, C: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (N, C)
@group(0) @binding(2) var<storage, read> inp: array<f32>;       // (N, C)
@group(0) @binding(3) var<storage, read> weight: array<f32>;    // (C)
${layer ? '@group(0) @binding(4) var<storage, read> bias: array<f32>; // (C)' : ''}
${REDUCE}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = wg.y * nwg.x + wg.x;
  if (n >= p.N) { return; }
  let row = n * p.C;
${layer ? `
  var s = 0.0;
  for (var c = lid; c < p.C; c += 64u) { s += inp[row + c]; }
  let m = wg_sum_f(s, lid) / f32(p.C);
  var v = 0.0;
  for (var c = lid; c < p.C; c += 64u) { let d = inp[row + c] - m; v += d * d; }
  let r = 1.0 / sqrt(wg_sum_f(v, lid) / f32(p.C) + p.eps);
  for (var c = lid; c < p.C; c += 64u) { out[row + c] = (inp[row + c] - m) * r * weight[c] + bias[c]; }
` : `
  var ss = 0.0;
  for (var c = lid; c < p.C; c += 64u) { let x = inp[row + c]; ss += x * x; }
  let r = 1.0 / sqrt(wg_sum_f(ss, lid) / f32(p.C) + p.eps);
  for (var c = lid; c < p.C; c += 64u) { out[row + c] = inp[row + c] * r * weight[c]; }
`}
}
`;
}
