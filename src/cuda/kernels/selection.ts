// CUDA source of the key intervals of SparseK's causal selection (SPEC.md section 3): for each key j,
// the queries that attend it form the interval [j, e_j) (its window, then the queries that select
// it, which are contiguous because a key that leaves a selection never returns). The backward's
// key-ordered gate-gradient buffer gives j one slot per selecting query. The selection itself is
// selection-fast.ts; the first GPU selection (tiles of 256 queries with a shared-memory set and a
// global fallback) is kept in dev/cuda-attention/selection-tiles.ts for comparison.

import type { KernelSource } from '../runtime.js';

/**
 * CUDA text: ord_of(), a float score as an unsigned that orders as the float does (-0 as +0). A selection
 * key is ord_of(u_j) << 32 | j, whose order is the CPU's (score, position) order; every kernel that builds
 * or compares such keys takes this one definition.
 */
export const ORD_OF = `__device__ __forceinline__ unsigned ord_of(float x) {
  unsigned b = __float_as_uint(x == 0.0f ? 0.0f : x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
`;

/**
 * The queries that attend key j: Win and Sel together are the interval [j, e_j). j is in Sel_i
 * exactly when i >= j + W and key_j >= key_i (key_i, the weakest selected key, never decreases), so
 * e_j = the first i >= j + W with key_i > key_j, or T. len_j = e_j - (j + W) (>= 0) counts the
 * queries that select j: the backward's key-ordered gate-gradient buffer gives j that many slots.
 * Launch: grid ceil(B*NKV*T / 256), block 256; a binary search over thk per key.
 */
export function keyIntervalsSource(): KernelSource {
  return {
    name: 'sparsek_key_intervals',
    params: ['ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32'],
    source: `
typedef unsigned long long u64;
${ORD_OF}extern "C" __global__ void sparsek_key_intervals(
    int* e,              // (B*NKV, T)
    const float* u,      // (B*NKV, T)
    const u64* thk,      // (B*NKV, T)
    int BH, int T, int W) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)BH * T) return;
  const int j = (int)(idx % T);
  const u64* th = thk + (idx - j);
  const long long start = (long long)j + W;
  int lo = (int)(start < T ? start : T), hi = T;
  const u64 key = ((u64)ord_of(u[idx]) << 32) | (unsigned)j;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (th[mid] > key) hi = mid;
    else lo = mid + 1;
  }
  e[idx] = lo;
}
`,
  };
}
