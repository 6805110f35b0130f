// CUDA source of the token embedding, mirroring src/cpu/kernels/embedding.ts: out[n] = wte[ids[n]]
// and its backward, dwte[v] += sum of dout[n] over the positions n with ids[n] = v.
// The backward is deterministic without atomics or a sort: the blocks of position n first check
// whether n is the first occurrence of its id; only those sum all occurrences (in position order,
// in double) and add the sum into dwte once, exactly the CPU kernel's order and rounding.
// Not a position table (positions come from RoPE). An id outside [0, V) (a caller's bug the model
// checks for) gives a NaN row forward and no gradient, instead of an access out of bounds.
// Invariant the launcher guarantees: buffers as long as their shapes.
// SPEC.md: none directly (a layer of the model that section 8 trains).

import type { KernelSource } from '../runtime.js';

/**
 * out[n, :] = wte[ids[n], :]. Launch: grid N, block 128 (threads stride over C).
 * Traffic: N*C floats read and written.
 */
export function embeddingForwardSource(): KernelSource {
  return {
    name: 'embedding_forward',
    params: ['ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32'],
    source: `
extern "C" __global__ void embedding_forward(
    float* out,          // (N, C)
    const int* ids,      // (N), in [0, V)
    const float* wte,    // (V, C)
    int N, int C, int V) {
  int n = blockIdx.x;
  int id = ids[n];
  float* dst = out + (size_t)n * C;
  if (id < 0 || id >= V) {
    for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = __int_as_float(0x7fc00000); // NaN
    return;
  }
  const float* src = wte + (size_t)id * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
}
`,
  };
}

/** Threads per block of the backward (one column c per thread); the grid's y covers C in chunks of it. */
export const EMBEDDING_BLOCK = 128;

/**
 * Backward of out[n] = wte[ids[n]]:  dwte[v, :] += sum over n with ids[n] = v of dout[n, :].
 * Launch: grid (N, ceil(C / 128)), block 128, one column per thread.
 * Pass 1 (every block): is any m < n with ids[m] = ids[n]? If so the block exits.
 * Pass 2 (first occurrences only): the occurrences m >= n are found 128 positions at a time (one
 * coalesced load of ids, a warp ballot, compacted in position order into shared memory), and each
 * thread adds dout[m, c] of every one into its double accumulator; dwte is rounded into once.
 * Traffic: N*C floats of dout read once in all; ids read N / 128 times per block in coalesced
 * 512-byte loads. The O(N^2) compares dominate: 0.32 ms on an H100 at N = 8192, C = 768 (all ids
 * distinct or all equal alike; a first version that rescanned ids per column took 15 ms). A
 * stable sort by id would make it O(N log N) when that matters.
 */
export function embeddingBackwardSource(): KernelSource {
  return {
    name: 'embedding_backward',
    params: ['ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32'],
    source: `
#define BLOCK ${EMBEDDING_BLOCK}
extern "C" __global__ void __launch_bounds__(BLOCK) embedding_backward(
    float* dwte,         // (V, C), accumulated into
    const float* dout,   // (N, C)
    const int* ids,      // (N), in [0, V)
    int N, int C, int V) {
  __shared__ int list[BLOCK];          // positions of this chunk's occurrences, in order
  __shared__ int warpHits[BLOCK / 32];
  int n = blockIdx.x;
  int c = blockIdx.y * BLOCK + threadIdx.x;
  int id = ids[n];
  if (id < 0 || id >= V) return;       // uniform over the block
  // pass 1: only the first occurrence of id does the work
  int earlier = 0;
  for (int m = threadIdx.x; m < n; m += BLOCK) earlier |= (ids[m] == id);
  if (__syncthreads_or(earlier)) return;
  // pass 2: sum every occurrence in position order
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double acc = 0.0;
  for (int m0 = n; m0 < N; m0 += BLOCK) {
    int m = m0 + threadIdx.x;
    bool hit = m < N && ids[m] == id;
    unsigned mask = __ballot_sync(0xffffffffu, hit);
    if (lane == 0) warpHits[warp] = __popc(mask);
    __syncthreads();
    int before = 0, hits = 0;
    for (int w = 0; w < BLOCK / 32; w++) {
      before += w < warp ? warpHits[w] : 0;
      hits += warpHits[w];
    }
    if (hit) list[before + __popc(mask & ((1u << lane) - 1u))] = m;
    __syncthreads();
    if (c < C) {
      for (int j = 0; j < hits; j++) acc += (double)dout[(size_t)list[j] * C + c];
    }
    __syncthreads();                   // list and warpHits are rewritten by the next chunk
  }
  if (c < C) {
    float* dst = dwte + (size_t)id * C + c;
    *dst = (float)((double)*dst + acc);
  }
}
`,
  };
}
