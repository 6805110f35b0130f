// CUDA source of one decoding step's attention (SPEC.md section 5): each query head attends the
// cached keys of its KV head, the window ring (gate 1) and the selected set (gate p from the
// host's CausalSelector), with the CPU decoder's formula (src/model/decode.ts attend()).
// One block per query head; threads stride over keys for the scores, then over HS for the sum.
// Memory traffic per head: (nRing + nSel) * 2 * HS floats read once; scores go through a global
// scratch row (maxKeys floats per head), since dense decoding can attend tens of thousands of keys.

import type { KernelSource } from '../runtime.js';
import { blockReduceSource } from './reduce.js';

export const DECODE_BLOCK = 128;

export function decodeAttentionSource(): KernelSource {
  return {
    name: 'decode_attention',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'ptr', 'i32', 'i32', 'i32', 'i32', 'f32'],
    source: `${blockReduceSource(DECODE_BLOCK)}
extern "C" __global__ void decode_attention(
    float* out,            // (NH, HS)
    const float* q,        // (NH, HS), rotated
    const float* kRing,    // (NKV, ringCap, HS): window slots (or every position, dense)
    const float* vRing,    // (NKV, ringCap, HS)
    int nRing, int ringCap,
    const float* kSel,     // (NKV, selCap, HS): selected slots
    const float* vSel,     // (NKV, selCap, HS)
    const float* gates,    // (NKV, selCap): p of each selected slot
    int nSel, int selCap,  // every KV head holds min(K, candidates) selected slots: the same count
    float* scores,         // (NH, maxKeys) scratch
    int maxKeys, int NH, int NKV, int HS, float scale) {
  int hq = blockIdx.x;
  int h = hq / (NH / NKV);
  const float* qh = q + (size_t)hq * HS;
  const float* kr = kRing + (size_t)h * ringCap * HS;
  const float* vr = vRing + (size_t)h * ringCap * HS;
  const float* ks = kSel + (size_t)h * selCap * HS;
  const float* vs = vSel + (size_t)h * selCap * HS;
  const float* g = gates + (size_t)h * selCap;
  float* s = scores + (size_t)hq * maxKeys;
  int n = nRing + nSel;
  float m = -__int_as_float(0x7f800000); // -inf: NVRTC has no math.h, hence no INFINITY
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const float* kj = j < nRing ? kr + (size_t)j * HS : ks + (size_t)(j - nRing) * HS;
    float d = 0.0f;
    for (int c = 0; c < HS; c++) d += qh[c] * kj[c];
    d *= scale;
    s[j] = d;
    m = fmaxf(m, d);
  }
  m = block_max(m);
  double part = 0.0;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    float e = expf(s[j] - m);
    s[j] = e;
    part += e;
  }
  double sum = block_sum(part); // its __syncthreads also publishes s[] to the whole block
  for (int d = threadIdx.x; d < HS; d += blockDim.x) {
    double acc = 0.0;
    for (int j = 0; j < nRing; j++) acc += (double)s[j] * vr[(size_t)j * HS + d];
    for (int j = 0; j < nSel; j++) acc += (double)s[nRing + j] * g[j] * vs[(size_t)j * HS + d];
    out[(size_t)hq * HS + d] = (float)(acc / sum);
  }
}
`,
  };
}

/**
 * The new position's K/V into every KV head's ring slot: kRing[h, slot, :] = k[h, :], same for v.
 * One launch instead of 2 * NKV copies. Launch: grid NKV, block min(HS, 128).
 */
export function kvWriteSource(): KernelSource {
  return {
    name: 'kv_write',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32'],
    source: `
extern "C" __global__ void kv_write(
    float* kRing,          // (NKV, ringCap, HS)
    float* vRing,          // (NKV, ringCap, HS)
    const float* k,        // (NKV, HS)
    const float* v,        // (NKV, HS)
    int slot, int ringCap, int HS) {
  int h = blockIdx.x;
  size_t dst = ((size_t)h * ringCap + slot) * HS;
  for (int d = threadIdx.x; d < HS; d += blockDim.x) {
    kRing[dst + d] = k[(size_t)h * HS + d];
    vRing[dst + d] = v[(size_t)h * HS + d];
  }
}
`,
  };
}
