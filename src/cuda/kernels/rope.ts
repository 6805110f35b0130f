// CUDA source of rotary position embedding in the Hugging Face `rotate_half` convention, mirroring
// src/cpu/kernels/rope.ts exactly, float32 roundings included:
//   inv_freq[i] = f32(1 / f32(theta ^ f32(2i / HS))),   angle[t, i] = f32((posOffset + t) * inv_freq[i])
//   cos/sin[t, i] = f32(cos/sin(angle))  (the math in double, as JavaScript's Math.cos)
//   out[i] = x[i] cos - x[i + HS/2] sin,   out[i + HS/2] = x[i + HS/2] cos + x[i] sin
// Pass 1 builds the (T, HS/2) cos and sin tables once per call (a scratch buffer from the arena),
// pass 2 rotates every (x[i], x[i + HS/2]) pair of every (b, h, t) row from them.
// Partial RoPE (GPT-NeoX) reuses the tables (built for a head of size R) with its own pass 2.
// Not in place; no scaling variants (NTK, YaRN). Invariants: HS even, posOffset a non-negative integer.
// SPEC.md: section 5's cached decoding relies on posOffset (position p rotates as row p of a full sequence).

import type { KernelSource } from '../runtime.js';

/**
 * Pass 1: cos[t, i], sin[t, i] for t < T, i < HS/2. Launch: grid ceil(T*HS/2 / 256), block 256.
 * Double pow, cos and sin, each result rounded to float where the CPU (and transformers) rounds.
 */
export function ropeTablesSource(): KernelSource {
  return {
    name: 'rope_tables',
    params: ['ptr', 'ptr', 'i32', 'i32', 'f64', 'f64'],
    source: `
extern "C" __global__ void rope_tables(
    float* cosT,         // (T, HS/2)
    float* sinT,         // (T, HS/2)
    int T, int HS, double theta, double posOffset) {
  int half = HS / 2;
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= T * half) return;
  int t = j / half, i = j % half;
  float e = (float)((2.0 * i) / HS);
  float p = (float)pow(theta, (double)e);
  float invFreq = (float)(1.0 / (double)p);
  float angle = (float)((posOffset + t) * (double)invFreq);
  cosT[j] = (float)cos((double)angle);
  sinT[j] = (float)sin((double)angle);
}
`,
  };
}

/**
 * Pass 2, forward, or with opts.backward the rotation by -angle (R^T = R(-angle)):
 *   forward   out[i] = x1 c - x2 s,           out[i + HS/2] = x2 c + x1 s          (overwrites)
 *   backward  dx[i] += dy1 c + dy2 s,         dx[i + HS/2] += dy2 c - dy1 s        (accumulates)
 * Each output is formed in double from float operands and rounded once, as the CPU does.
 * Launch: grid ceil(B*NH*T*HS/2 / 256), block 256; inp read and out written once, tables from L2.
 */
export function ropeRotateSource(opts: { backward: boolean }): KernelSource {
  const name = opts.backward ? 'rope_backward' : 'rope_forward';
  const store = opts.backward
    ? `out[row + i] = (float)((double)out[row + i] + (x1 * c + x2 * s));
  out[row + half + i] = (float)((double)out[row + half + i] + (x2 * c - x1 * s));`
    : `out[row + i] = (float)(x1 * c - x2 * s);
  out[row + half + i] = (float)(x2 * c + x1 * s);`;
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32'],
    source: `
extern "C" __global__ void ${name}(
    float* out,          // (B, NH, T, HS)${opts.backward ? ', accumulated into (dinp)' : ''}
    const float* inp,    // (B, NH, T, HS)${opts.backward ? ' (dout)' : ''}
    const float* cosT,   // (T, HS/2)
    const float* sinT,   // (T, HS/2)
    int BNH, int T, int HS) {
  int half = HS / 2;
  size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= (size_t)BNH * T * half) return;
  int i = (int)(j % half);
  size_t rowIndex = j / half;           // (b * NH + h) * T + t
  int t = (int)(rowIndex % T);
  size_t row = rowIndex * HS;
  double c = (double)cosT[t * half + i], s = (double)sinT[t * half + i];
  double x1 = (double)inp[row + i], x2 = (double)inp[row + half + i];
  ${store}
}
`,
  };
}

/**
 * Partial RoPE (GPT-NeoX's rotary_pct), pass 2: the first R features of each head rotate as a head
 * of size R would (pairs (i, i + R/2), tables from rope_tables built with HS = R), the other HS - R
 * pass through. With opts.backward the rotation is by -angle and everything ACCUMULATES:
 *   forward   out[i] = x1 c - x2 s,  out[i + R/2] = x2 c + x1 s,  out[k] = x[k]      (k >= R; overwrites)
 *   backward  dx[i] += dy1 c + dy2 s, dx[i + R/2] += dy2 c - dy1 s, dx[k] += dy[k]   (k >= R)
 * One thread per pair or passed-through feature: HS - R/2 threads per (b, h, t) row.
 * Launch: grid ceil(B*NH*T*(HS - R/2) / 256), block 256; inp read and out written once.
 */
export function ropePartialRotateSource(opts: { backward: boolean }): KernelSource {
  const name = opts.backward ? 'rope_partial_backward' : 'rope_partial_forward';
  const store = opts.backward
    ? `out[row + i] = (float)((double)out[row + i] + (x1 * c + x2 * s));
    out[row + half + i] = (float)((double)out[row + half + i] + (x2 * c - x1 * s));`
    : `out[row + i] = (float)(x1 * c - x2 * s);
    out[row + half + i] = (float)(x2 * c + x1 * s);`;
  const pass = opts.backward ? 'out[row + k] += inp[row + k];' : 'out[row + k] = inp[row + k];';
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32'],
    source: `
extern "C" __global__ void ${name}(
    float* out,          // (B, NH, T, HS)${opts.backward ? ', accumulated into (dinp)' : ''}
    const float* inp,    // (B, NH, T, HS)${opts.backward ? ' (dout)' : ''}
    const float* cosT,   // (T, R/2)
    const float* sinT,   // (T, R/2)
    int BNH, int T, int HS, int R) {
  int half = R / 2;
  int W = HS - half;                    // threads per row: R/2 pairs, HS - R passed through
  size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= (size_t)BNH * T * W) return;
  int i = (int)(j % W);
  size_t rowIndex = j / W;              // (b * NH + h) * T + t
  int t = (int)(rowIndex % T);
  size_t row = rowIndex * HS;
  if (i < half) {
    double c = (double)cosT[t * half + i], s = (double)sinT[t * half + i];
    double x1 = (double)inp[row + i], x2 = (double)inp[row + half + i];
    ${store}
  } else {
    int k = R + (i - half);
    ${pass}
  }
}
`,
  };
}
