// CUDA source of the layout moves and the residual add, mirroring src/cpu/kernels/layout.ts and the
// score transposes of src/model/gpt.ts:
//   toHeads       out (B, NH, T, HS) = inp (B, T, NH*HS) regrouped by head       (overwrites)
//   fromHeads     out (B, T, NH*HS)  = inp (B, NH, T, HS) with heads concatenated (overwrites)
//   scoresToHeads u (B, NKV, T) = uFlat (B*T, NKV) transposed, + eps * t           (overwrites)
//   scoresFromHeads duFlat (B*T, NKV) = du (B, NKV, T) transposed                  (overwrites)
//   addInPlace    out += a                                                          (accumulates)
// One thread per output element, 256 per block, grid ceil(n / 256): writes are coalesced; reads are
// coalesced along HS for the head moves and strided for the score transposes (NKV is small).
// Not the accumulating variants (toHeadsBackward etc.): the backend interface does not use them.
// SPEC.md: section 7's (B, NH, T, HS) and (B, NKV, T) layouts.

import type { KernelSource } from '../runtime.js';

/** Threads per block of every kernel in this file. */
export const LAYOUT_BLOCK = 256;

export function toHeadsSource(): KernelSource {
  return {
    name: 'to_heads',
    params: ['ptr', 'ptr', 'i32', 'i32', 'i32', 'i32'],
    source: `
extern "C" __global__ void to_heads(
    float* out,          // (B, NH, T, HS)
    const float* inp,    // (B, T, NH*HS)
    int B, int T, int NH, int HS) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)B * NH * T * HS) return;
  int d = (int)(i % HS);
  int t = (int)((i / HS) % T);
  int h = (int)((i / ((size_t)HS * T)) % NH);
  size_t b = i / ((size_t)HS * T * NH);
  out[i] = inp[(b * T + t) * ((size_t)NH * HS) + (size_t)h * HS + d];
}
`,
  };
}

export function fromHeadsSource(): KernelSource {
  return {
    name: 'from_heads',
    params: ['ptr', 'ptr', 'i32', 'i32', 'i32', 'i32'],
    source: `
extern "C" __global__ void from_heads(
    float* out,          // (B, T, NH*HS)
    const float* inp,    // (B, NH, T, HS)
    int B, int T, int NH, int HS) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)B * T * NH * HS) return;
  int d = (int)(i % HS);
  int h = (int)((i / HS) % NH);
  int t = (int)((i / ((size_t)HS * NH)) % T);
  size_t b = i / ((size_t)HS * NH * T);
  out[i] = inp[((b * NH + h) * T + t) * HS + d];
}
`,
  };
}

/** u = uFlat transposed + eps * t, computed in double and rounded once (as the CPU does). */
export function scoresToHeadsSource(): KernelSource {
  return {
    name: 'scores_to_heads',
    params: ['ptr', 'ptr', 'i32', 'i32', 'i32', 'f64'],
    source: `
extern "C" __global__ void scores_to_heads(
    float* u,              // (B, NKV, T)
    const float* uFlat,    // (B*T, NKV)
    int B, int T, int NKV, double eps) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)B * NKV * T) return;
  int t = (int)(i % T);
  int h = (int)((i / T) % NKV);
  size_t b = i / ((size_t)T * NKV);
  u[i] = (float)((double)uFlat[(b * T + t) * NKV + h] + eps * (double)t);
}
`,
  };
}

/** The transpose back; the slope eps * t is a constant and has no gradient. */
export function scoresFromHeadsSource(): KernelSource {
  return {
    name: 'scores_from_heads',
    params: ['ptr', 'ptr', 'i32', 'i32', 'i32'],
    source: `
extern "C" __global__ void scores_from_heads(
    float* duFlat,         // (B*T, NKV)
    const float* du,       // (B, NKV, T)
    int B, int T, int NKV) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)B * T * NKV) return;
  int h = (int)(i % NKV);
  int t = (int)((i / NKV) % T);
  size_t b = i / ((size_t)NKV * T);
  duFlat[i] = du[(b * NKV + h) * T + t];
}
`,
  };
}

export function addInPlaceSource(): KernelSource {
  return {
    name: 'add_in_place',
    params: ['ptr', 'ptr', 'i32'],
    source: `
extern "C" __global__ void add_in_place(
    float* out,          // (n), accumulated into
    const float* a,      // (n)
    int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (size_t)n) out[i] += a[i];
}
`,
  };
}
