// CUDA source of attention over SparseK's key pattern and its two plain special cases (SPEC.md
// section 4 and the dense / window baselines of section 6), mirroring src/cpu/kernels/attention.ts:
//
//   s_ij = scale q_i . k_j,   a_ij = softmax_j(s_ij),   o_i = sum_j a_ij g_ij v_j
//
// over the keys of query i: the window j in [i - W + 1, i] (gate 1), then, with SEL, the selected
// keys sel[i, 0 .. count_i) of selection-fast.ts (gate clip(u_j - tau_i, 0, 1)). dense is W = T and window
// is W without SEL. Not here: the selection itself (selection-fast.ts), the fixed / hash / qktopk
// baselines (still on the CPU), bf16, tensor cores, or any sharing of keys between queries: this is
// the first, plain version, one warp per query row, fp32 with fp32 accumulators.
//
// Passes:
//   forward       warp per (b, hq, i): 32 keys at a time, a lane per key computes s (its own dot
//                 product over HS), online softmax over the chunk, then the warp accumulates the
//                 chunk's gated values a lane per output dimension. Saves lse_i = m_i + log l_i.
//   backward dq   warp per (b, h, i), looping over the query heads of KV head h: recomputes
//                 a_ij = exp(s_ij - lse_i), D_i = do_i . o_i (saved for the next pass),
//                   dov_ij = do_i . v_j,  ds_ij = a_ij (g_ij dov_ij - D_i) scale,  dq_i = sum_j ds_ij k_j,
//                 and for selected keys dg_ij = a_ij dov_ij, summed over the group's heads into a
//                 key-ordered slot buffer, and the mean term's numerator sum_{j in Sel_i ∩ F_i} dg_ij.
//   backward dkdv warp per (b, h, j) over the queries that attend j, the interval [j, e_j)
//                 (selection.ts's key intervals; dense T, window min(T, j + W)), and the group's heads:
//                   dk_j = sum_i ds_ij q_i,   dv_j = sum_i a_ij g_ij do_i.
//                 No atomics: every output is written by one warp, sums are in a fixed order, so a
//                 run is bit-for-bit repeatable.
//   score grad    thread per (b, h, j): du_j = sum_{i : j in F_i} (dg_ij - mean_{F_i} dg_i), the CPU's
//                 interval method (scoreGradient): { i : j in F_i } is an interval found by binary
//                 search over the monotone tau, the direct term is a contiguous run of j's slots, the
//                 mean term a difference of prefix sums (row_prefix_double) of mean_i = numerator / |F_i|.
// Invariants the launcher guarantees: NH % NKV == 0, T*K < 2^31, VEC = 4 only when HS % 4 == 0 and
// q, k, v, dout are 16-byte aligned.

import type { KernelSource } from '../runtime.js';
import { blockReduceSource } from './reduce.js';

/** Warps (query rows) per block of the row kernels. */
export const ATTENTION_WARPS = 8;
/** Threads per block of the row prefix sums. */
export const PREFIX_BLOCK = 1024;

export interface AttentionVariant {
  HS: number;
  /** 4: float4 loads of q, k, v, dout rows; 1: scalar loads. */
  VEC: 1 | 4;
  /** Whether rows have selected keys after the window (SparseK). */
  SEL: boolean;
}

/** The entry point's name of kernel `base` for variant o (also the backend's cache key). */
export function attentionKernelName(base: string, o: AttentionVariant): string {
  return `${base}_hs${o.HS}_v${o.VEC}_${o.SEL ? 'sel' : 'win'}`;
}

/** Defines, the lane dot product of a shared row with a global row, and warp reductions. */
function rowCommon(o: AttentionVariant): string {
  const dot = o.VEC === 4
    ? `
  const float4* b4 = reinterpret_cast<const float4*>(b);
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma unroll 4
  for (int d = 0; d < HS / 4; d++) {
    const float4 x = __ldg(b4 + d);
    s0 = fmaf(a[4 * d], x.x, s0);
    s1 = fmaf(a[4 * d + 1], x.y, s1);
    s2 = fmaf(a[4 * d + 2], x.z, s2);
    s3 = fmaf(a[4 * d + 3], x.w, s3);
  }
  return (s0 + s1) + (s2 + s3);`
    : `
  float s0 = 0.f, s1 = 0.f;
  int d = 0;
  for (; d + 1 < HS; d += 2) {
    s0 = fmaf(a[d], __ldg(b + d), s0);
    s1 = fmaf(a[d + 1], __ldg(b + d + 1), s1);
  }
  if (d < HS) s0 = fmaf(a[d], __ldg(b + d), s0);
  return s0 + s1;`;
  return `
#define HS ${o.HS}
#define NPL ((HS + 31) / 32)
#define WPB ${ATTENTION_WARPS}
#define SEL ${o.SEL ? 1 : 0}
#define FULL 0xffffffffu
#define FINF __int_as_float(0x7f800000)

// a (shared, HS) . b (global row, HS), by one lane
__device__ __forceinline__ float dot_row(const float* a, const float* __restrict__ b) {${dot}
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
  return v;
}
// SparseK's gate clip(u_j - tau_i, 0, 1), formed in double like the CPU's
__device__ __forceinline__ float gate(float uj, double ti) {
  const double d = (double)uj - ti;
  return d <= 0.0 ? 0.f : d >= 1.0 ? 1.f : (float)d;
}
`;
}

/**
 * Forward. Launch: grid (ceil(T / WPB), NH, B), block 32 WPB. Reads per row: q once, and HS floats
 * of k and of v per key (the window's keys are shared by neighbouring rows through L1/L2).
 */
export function attentionForwardSource(o: AttentionVariant): KernelSource {
  const name = attentionKernelName('attention_forward', o);
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32', 'f32'],
    source: `${rowCommon(o)}
extern "C" __global__ void __launch_bounds__(WPB * 32) ${name}(
    float* out,                       // (B, NH, T, HS)
    float* lse,                       // (B, NH, T): log sum_j exp(s_ij); -inf for a row without keys
    const float* __restrict__ q,      // (B, NH, T, HS)
    const float* __restrict__ k,      // (B, NKV, T, HS)
    const float* __restrict__ v,      // (B, NKV, T, HS)
    const float* __restrict__ u,      // (B, NKV, T)      SEL only
    const double* __restrict__ tau,   // (B, NKV, T)      SEL only
    const int* __restrict__ count,    // (B, NKV, T)      SEL only
    const int* __restrict__ sel,      // (B, NKV, T, K)   SEL only
    int T, int NH, int NKV, int K, int W, float scale) {
  __shared__ float qs[WPB][HS];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int i = blockIdx.x * WPB + w, hq = blockIdx.y, b = blockIdx.z;
  if (i >= T) return;
  const int h = hq / (NH / NKV);
  const size_t row = ((size_t)b * NH + hq) * T + i;
  const size_t kv0 = ((size_t)b * NKV + h) * T; // this KV head's first row
  const float* kb = k + kv0 * HS;
  const float* vb = v + kv0 * HS;
  for (int d = lane; d < HS; d += 32) qs[w][d] = q[row * HS + d];
  __syncwarp();
  const int nw = min(W, i + 1), lo = i - nw + 1;
  int ns = 0;
  const int* srow = nullptr;
  double ti = 0.0;
#if SEL
  ns = count[kv0 + i];
  srow = sel + (kv0 + i) * K;
  ti = tau[kv0 + i];
#endif
  const int n = nw + ns;
  float m = -FINF, l = 0.f, acc[NPL];
#pragma unroll
  for (int r = 0; r < NPL; r++) acc[r] = 0.f;
  for (int base = 0; base < n; base += 32) {
    const int c = base + lane;
    int j = 0;
    float g = 0.f, s = -FINF;
    if (c < n) {
      if (c < nw) { j = lo + c; g = 1.f; }
      else { j = srow[c - nw]; g = gate(u[kv0 + j], ti); }
      s = scale * dot_row(qs[w], kb + (size_t)j * HS);
    }
    const float mn = fmaxf(m, warp_max(s)); // finite: the chunk has a key
    const float corr = expf(m - mn);        // 0 on the first chunk
    const float p = c < n ? expf(s - mn) : 0.f;
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int r = 0; r < NPL; r++) acc[r] *= corr;
    const float pg = p * g;
    const int cnt = min(32, n - base);
    for (int t = 0; t < cnt; t++) {
      const float pt = __shfl_sync(FULL, pg, t);
      const int jt = __shfl_sync(FULL, j, t);
      if (pt != 0.f) {
        const float* vr = vb + (size_t)jt * HS;
#pragma unroll
        for (int r = 0; r < NPL; r++) {
          const int d = lane + 32 * r;
          if (d < HS) acc[r] = fmaf(pt, __ldg(vr + d), acc[r]);
        }
      }
    }
    m = mn;
  }
  const float inv = n > 0 ? 1.f / l : 0.f;
#pragma unroll
  for (int r = 0; r < NPL; r++) {
    const int d = lane + 32 * r;
    if (d < HS) out[row * HS + d] = acc[r] * inv;
  }
  if (lane == 0) lse[row] = n > 0 ? m + logf(l) : -FINF;
}
`,
  };
}

/**
 * Backward, pass 1 of 2 (query rows): dq (overwritten), D, and with SEL the gate gradients in
 * key order, dgk[row, off_j + i - (j + W)] = sum over the group's heads of a_ij dov_ij, and
 * mean_i = (sum of those over Sel_i ∩ F_i) / |F_i| (0 when F_i is empty).
 * Launch: grid (ceil(T / WPB), NKV, B), block 32 WPB. Reads per row and head: q, do, o once; k and
 * v rows per key (twice for k: the lane's dot and the warp's dq sum).
 */
export function attentionBackwardQuerySource(o: AttentionVariant): KernelSource {
  const name = attentionKernelName('attention_backward_query', o);
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr',
      'i32', 'i32', 'i32', 'i32', 'i32', 'f32'],
    source: `${rowCommon(o)}
extern "C" __global__ void __launch_bounds__(WPB * 32) ${name}(
    float* dq,                        // (B, NH, T, HS)
    float* D,                         // (B, NH, T): do_i . o_i
    double* mean,                     // (B, NKV, T)              SEL only
    float* dgk,                       // (B, NKV, T*K) key-ordered gate gradients, SEL only
    const float* __restrict__ dout,   // (B, NH, T, HS)
    const float* __restrict__ out,    // (B, NH, T, HS) the forward's
    const float* __restrict__ lse,    // (B, NH, T) the forward's
    const float* __restrict__ q,      // (B, NH, T, HS)
    const float* __restrict__ k,      // (B, NKV, T, HS)
    const float* __restrict__ v,      // (B, NKV, T, HS)
    const float* __restrict__ u,      // (B, NKV, T)              SEL only
    const double* __restrict__ tau,   // (B, NKV, T)              SEL only
    const int* __restrict__ count,    // (B, NKV, T)              SEL only
    const int* __restrict__ sel,      // (B, NKV, T, K)           SEL only
    const int* __restrict__ nfree,    // (B, NKV, T) |F_i|        SEL only
    const int* __restrict__ off,      // (B, NKV, T + 1) key j's first slot in dgk, SEL only
    int T, int NH, int NKV, int K, int W, float scale) {
  __shared__ float qs[WPB][HS], gs[WPB][HS]; // q_i and do_i of the current head
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int i = blockIdx.x * WPB + w, h = blockIdx.y, b = blockIdx.z;
  if (i >= T) return;
  const int G = NH / NKV;
  const size_t kv0 = ((size_t)b * NKV + h) * T;
  const float* kb = k + kv0 * HS;
  const float* vb = v + kv0 * HS;
  const int nw = min(W, i + 1), lo = i - nw + 1;
  int ns = 0;
  const int* srow = nullptr;
  double ti = 0.0;
#if SEL
  ns = count[kv0 + i];
  srow = sel + (kv0 + i) * K;
  ti = tau[kv0 + i];
  const size_t dg0 = ((size_t)b * NKV + h) * T * K;
  const int* offr = off + ((size_t)b * NKV + h) * (T + 1);
  double num = 0.0;
#endif
  const int n = nw + ns;
  for (int gi = 0; gi < G; gi++) {
    const size_t row = ((size_t)b * NH + h * G + gi) * T + i;
    float dp = 0.f;
    for (int d = lane; d < HS; d += 32) {
      const float x = dout[row * HS + d];
      gs[w][d] = x;
      qs[w][d] = q[row * HS + d];
      dp = fmaf(x, out[row * HS + d], dp);
    }
    __syncwarp();
    const float Di = warp_sum(dp);
    if (lane == 0) D[row] = Di;
    const float L = lse[row];
    float acc[NPL];
#pragma unroll
    for (int r = 0; r < NPL; r++) acc[r] = 0.f;
    for (int base = 0; base < n; base += 32) {
      const int c = base + lane;
      int j = 0;
      float ds = 0.f;
      if (c < n) {
        float g = 1.f;
        const bool selected = c >= nw;
        j = selected ? srow[c - nw] : lo + c;
        if (selected) g = gate(u[kv0 + j], ti);
        const float a = expf(scale * dot_row(qs[w], kb + (size_t)j * HS) - L);
        const float dov = dot_row(gs[w], vb + (size_t)j * HS);
        ds = a * (g * dov - Di) * scale;
#if SEL
        if (selected) {
          const float dg = a * dov;
          float* slot = dgk + dg0 + offr[j] + (i - j - W);
          *slot = gi == 0 ? dg : *slot + dg; // this lane owns the slot for every head: no race
          const double uj = u[kv0 + j];
          if (uj > ti && uj - ti < 1.0) num += dg;
        }
#endif
      }
      const int cnt = min(32, n - base);
      for (int t = 0; t < cnt; t++) {
        const float dst = __shfl_sync(FULL, ds, t);
        const int jt = __shfl_sync(FULL, j, t);
        if (dst != 0.f) {
          const float* kr = kb + (size_t)jt * HS;
#pragma unroll
          for (int r = 0; r < NPL; r++) {
            const int d = lane + 32 * r;
            if (d < HS) acc[r] = fmaf(dst, __ldg(kr + d), acc[r]);
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < NPL; r++) {
      const int d = lane + 32 * r;
      if (d < HS) dq[row * HS + d] = acc[r];
    }
    __syncwarp(); // the next head overwrites qs, gs
  }
#if SEL
  num = warp_sum_d(num);
  if (lane == 0) {
    const int nf = nfree[kv0 + i];
    mean[kv0 + i] = nf > 0 ? num / nf : 0.0;
  }
#endif
}
`,
  };
}

/**
 * Backward, pass 2 of 2 (key rows): dk and dv (overwritten), from pass 1's D.
 * Launch: grid (ceil(T / WPB), NKV, B), block 32 WPB. Reads per key and head: q and do rows of each
 * attending query (twice: the lane's dot and the warp's sum).
 */
export function attentionBackwardKeySource(o: AttentionVariant): KernelSource {
  const name = attentionKernelName('attention_backward_key', o);
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'f32'],
    source: `${rowCommon(o)}
extern "C" __global__ void __launch_bounds__(WPB * 32) ${name}(
    float* dk,                        // (B, NKV, T, HS)
    float* dv,                        // (B, NKV, T, HS)
    const float* __restrict__ dout,   // (B, NH, T, HS)
    const float* __restrict__ lse,    // (B, NH, T)
    const float* __restrict__ D,      // (B, NH, T)
    const float* __restrict__ q,      // (B, NH, T, HS)
    const float* __restrict__ k,      // (B, NKV, T, HS)
    const float* __restrict__ v,      // (B, NKV, T, HS)
    const float* __restrict__ u,      // (B, NKV, T)   SEL only
    const double* __restrict__ tau,   // (B, NKV, T)   SEL only
    const int* __restrict__ e,        // (B, NKV, T)   SEL only: the attending queries are [j, e_j)
    int T, int NH, int NKV, int W, float scale) {
  __shared__ float ks[WPB][HS], vs[WPB][HS];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int j = blockIdx.x * WPB + w, h = blockIdx.y, b = blockIdx.z;
  if (j >= T) return;
  const int G = NH / NKV;
  const size_t kv = ((size_t)b * NKV + h) * T + j;
  for (int d = lane; d < HS; d += 32) {
    ks[w][d] = k[kv * HS + d];
    vs[w][d] = v[kv * HS + d];
  }
  __syncwarp();
#if SEL
  const int ej = e[kv];
  const float uj = u[kv];
  const double* ta = tau + (kv - j);
#else
  const int ej = W >= T - j ? T : j + W; // min(T, j + W) without overflow
#endif
  float dka[NPL], dva[NPL];
#pragma unroll
  for (int r = 0; r < NPL; r++) { dka[r] = 0.f; dva[r] = 0.f; }
  for (int gi = 0; gi < G; gi++) {
    const size_t r0 = ((size_t)b * NH + h * G + gi) * T; // the head's first row
    for (int base = j; base < ej; base += 32) {
      const int i = base + lane;
      float ds = 0.f, ag = 0.f;
      if (i < ej) {
        const size_t row = r0 + i;
        const float a = expf(scale * dot_row(ks[w], q + row * HS) - lse[row]);
        const float dov = dot_row(vs[w], dout + row * HS);
        float g = 1.f;
#if SEL
        if (i - j >= W) g = gate(uj, ta[i]);
#endif
        ds = a * (g * dov - D[row]) * scale;
        ag = a * g;
      }
      const int cnt = min(32, ej - base);
      for (int t = 0; t < cnt; t++) {
        const float dst = __shfl_sync(FULL, ds, t);
        const float agt = __shfl_sync(FULL, ag, t);
        const size_t rt = (r0 + base + t) * HS;
#pragma unroll
        for (int r = 0; r < NPL; r++) {
          const int d = lane + 32 * r;
          if (d < HS) {
            dka[r] = fmaf(dst, __ldg(q + rt + d), dka[r]);
            dva[r] = fmaf(agt, __ldg(dout + rt + d), dva[r]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < NPL; r++) {
    const int d = lane + 32 * r;
    if (d < HS) {
      dk[kv * HS + d] = dka[r];
      dv[kv * HS + d] = dva[r];
    }
  }
}
`,
  };
}

/** The shared block prefix sum of the two kernels below: out[0] = 0, out[x + 1] = out[x] + get(x). */
function rowPrefixCommon(): string {
  return `
#define PB ${PREFIX_BLOCK}
template <typename V, typename F>
__device__ void row_prefix(V* out, int n, F get) {
  __shared__ V wsum[PB / 32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  V carry = 0;
  for (int base = 0; base < n; base += PB) {
    const int x = base + threadIdx.x;
    const V val = x < n ? get(x) : (V)0;
    V incl = val;
    for (int o = 1; o < 32; o <<= 1) {
      const V y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    __syncthreads();
    if (lane == 31) wsum[w] = incl;
    __syncthreads();
    V before = 0, tot = 0;
    for (int k = 0; k < PB / 32; k++) {
      if (k < w) before += wsum[k];
      tot += wsum[k];
    }
    if (x < n) out[x + 1] = carry + before + incl;
    carry += tot;
  }
  if (threadIdx.x == 0) out[0] = 0;
}
`;
}

/**
 * off[row, j] = sum_{j' < j} len_j', len_j = e_j - (j + W) (>= 0): each key's first slot in the
 * key-ordered gate-gradient buffer (off[row, T] = the row's total <= T*K).
 * Launch: grid B*NKV, block PREFIX_BLOCK.
 */
export function keyOffsetsSource(): KernelSource {
  return {
    name: 'sparsek_key_offsets',
    params: ['ptr', 'ptr', 'i32', 'i32'],
    source: `${rowPrefixCommon()}
extern "C" __global__ void __launch_bounds__(PB) sparsek_key_offsets(
    int* off,            // (B*NKV, T + 1)
    const int* e,        // (B*NKV, T)
    int T, int W) {
  const int* er = e + (size_t)blockIdx.x * T;
  row_prefix(off + (size_t)blockIdx.x * (T + 1), T, [&](int j) { return max(0, er[j] - (j + W)); });
}
`,
  };
}

/**
 * P[row, i] = sum_{i' < i} mean[row, i'], in double, in a fixed order, in chunks of PREFIX_BLOCK
 * values a block (a row is long and there are few rows: one block per row left the GPU idle), each
 * thread MEAN_VALUES consecutive ones (H100, 64K, 16 rows: 0.008 + 0.010 ms, against 0.010 + 0.020 at
 * a value a thread; session 20). sparsek_mean_chunks sums each chunk; sparsek_mean_prefix then
 * scans its chunk from the sum of the chunks before it. Launch both: grid (meanChunks(T), B*NKV),
 * block MEAN_THREADS; sums holds B*NKV*meanChunks(T) doubles.
 */
export function meanPrefixSource(): KernelSource {
  return {
    name: 'sparsek_mean_prefix',
    params: ['ptr', 'ptr', 'ptr', 'i32'],
    source: `${chunkCommon()}
extern "C" __global__ void __launch_bounds__(BLOCK) sparsek_mean_prefix(
    double* P,           // (B*NKV, T + 1)
    const double* sums,  // (B*NKV, nch) each chunk's sum
    const double* mean,  // (B*NKV, T)
    int T) {
  __shared__ double wsum[WARPS];
  const int nch = gridDim.x, c = blockIdx.x, row = blockIdx.y, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  // the chunks before this one
  double part = 0.0;
  for (int k = threadIdx.x; k < c; k += BLOCK) part += sums[(size_t)row * nch + k];
  const double carry = block_sum(part);
  // this thread's values, scanned in order; then the threads' totals across the warp and the block
  const int x0 = c * PB + threadIdx.x * MV;
  const double* m = mean + (size_t)row * T;
  double run[MV];
#pragma unroll
  for (int q = 0; q < MV; q++) run[q] = (q > 0 ? run[q - 1] : 0.0) + (x0 + q < T ? m[x0 + q] : 0.0);
  double incl = run[MV - 1];
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  const double excl = __shfl_up_sync(0xffffffffu, incl, 1);
  if (lane == 31) wsum[w] = incl;
  __syncthreads();
  double before = carry;
  for (int k = 0; k < w; k++) before += wsum[k];
  if (lane > 0) before += excl;
  double* out = P + (size_t)row * (T + 1);
#pragma unroll
  for (int q = 0; q < MV; q++) if (x0 + q < T) out[x0 + q + 1] = before + run[q];
  if (c == 0 && threadIdx.x == 0) out[0] = 0.0;
}
`,
  };
}

/** Chunks of PREFIX_BLOCK values in a row of T (the grid x of both mean-prefix kernels). */
export function meanChunks(T: number): number {
  return Math.ceil(T / PREFIX_BLOCK);
}

/** Threads a block of both mean-prefix kernels, and the values each thread takes of a chunk. */
export const MEAN_THREADS = 256;
const MEAN_VALUES = PREFIX_BLOCK / MEAN_THREADS;

/** Each chunk's sum of mean (see meanPrefixSource). */
export function meanChunksSource(): KernelSource {
  return {
    name: 'sparsek_mean_chunks',
    params: ['ptr', 'ptr', 'i32'],
    source: `${chunkCommon()}
extern "C" __global__ void __launch_bounds__(BLOCK) sparsek_mean_chunks(
    double* sums,        // (B*NKV, nch)
    const double* mean,  // (B*NKV, T)
    int T) {
  const int x0 = blockIdx.x * PB + threadIdx.x * MV;
  const double* m = mean + (size_t)blockIdx.y * T;
  double v = 0.0;
#pragma unroll
  for (int q = 0; q < MV; q++) v += x0 + q < T ? m[x0 + q] : 0.0;
  const double s = block_sum(v);
  if (threadIdx.x == 0) sums[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = s;
}
`,
  };
}

/** What both mean-prefix kernels share: PB, MV, and reduce.ts's fixed-order block_sum over BLOCK threads. */
function chunkCommon(): string {
  return `
#define PB ${PREFIX_BLOCK}
#define MV ${MEAN_VALUES}
${blockReduceSource(MEAN_THREADS)}`;
}

/**
 * du (overwritten), SparseK's backward (SPEC section 1) through every query's threshold:
 *   du_j = sum_{i in [a, e)} dg_ij [j in Sel_i] - (P[e] - P[a]),
 * [a, e) = { i >= j + W : 0 < u_j - tau_i < 1 }: a = max(j + W, first i with u_j - tau_i < 1),
 * e = first i with u_j <= tau_i (tau never decreases). The first sum comes from
 *   'slots': the gate gradients in dgk (attention_backward_query's layout: j is in Sel_i for i in
 *            [j + W, e_j), its slots from off_j on), summed here in double;
 *   'sums':  dsel_j, that sum already made by the tensor-core backward (spk_bwd_sel).
 * Both searches first bisect a sample of the row's tau in shared memory (every C-th value), then the
 * C - 1 values between two samples in global memory: the same boundary as one bisection of the whole
 * row, with log2(C) of its loads from global memory instead of log2(T) (H100, T = 64K, 16 rows:
 * 0.061 ms against 0.069 for the plain bisection; bench/RESULTS.md, session 19).
 * Launch: scoreGradLaunch(T, B*NKV).
 */
export function scoreGradSource(from: 'slots' | 'sums' = 'slots'): KernelSource {
  const slots = from === 'slots';
  const name = slots ? 'sparsek_score_grad' : 'sparsek_score_grad_sums';
  return {
    name,
    params: slots ? ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32'] : ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32'],
    source: `
#define SG_THREADS ${SCORE_GRAD_THREADS}
#define SG_KEYS ${SCORE_GRAD_KEYS}
// The first i in [0, T) with pred(tau[i]) (T if none), pred false up to some i and true from there on:
// first among the samples coarse[t] = tau[t C], t < NT, then among the values between two samples.
template <class Pred>
__device__ int first_true(const double* coarse, int NT, const double* ta, int T, int C, Pred pred) {
  int lo = 0, hi = NT;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (pred(coarse[mid])) hi = mid;
    else lo = mid + 1;
  }
  if (lo == 0) return 0;
  // pred is false at (lo - 1) C and true at lo C (or nowhere before T, when lo == NT)
  int l = (lo - 1) * C + 1, h = min(lo * C, T);
  while (l < h) {
    const int mid = (l + h) >> 1;
    if (pred(ta[mid])) h = mid;
    else l = mid + 1;
  }
  return l;
}

extern "C" __global__ void __launch_bounds__(SG_THREADS) ${name}(
    float* du,           // (B*NKV, T)
    const float* u,      // (B*NKV, T)
    const double* tau,   // (B*NKV, T)
${slots ? `    const int* e,        // (B*NKV, T)
    const int* off,      // (B*NKV, T + 1)
    const float* dgk,    // (B*NKV, T*K)` : `    const double* dsel,  // (B*NKV, T)`}
    const double* P,     // (B*NKV, T + 1)
    int BH, int T, int K, int W,
    int C) {             // the sample's stride (scoreGradLaunch)
  extern __shared__ double coarse[]; // tau[bh, t C], t < ceil(T / C)
  const size_t bh = blockIdx.y;
  const double* ta = tau + bh * T;
  const int NT = (T + C - 1) / C;
  for (int t = threadIdx.x; t < NT; t += SG_THREADS) coarse[t] = ta[(size_t)t * C];
  __syncthreads();
  for (int j = blockIdx.x * SG_KEYS + threadIdx.x; j < min(T, (int)(blockIdx.x + 1) * SG_KEYS); j += SG_THREADS) {
    const size_t idx = bh * T + j;
    const long long start = (long long)j + W;
    double r = 0.0;
    if (K > 0 && start < T) {
      const double uj = u[idx];
      const int a = max((int)start, first_true(coarse, NT, ta, T, C, [&](double t) { return uj - t < 1.0; }));
      const int en = first_true(coarse, NT, ta, T, C, [&](double t) { return !(uj > t); });
      if (en > a) {
${slots ? `        const int stop = min(en, e[idx]);
        const float* g = dgk + bh * T * K + off[bh * (T + 1) + j]; // g[i - (j + W)]: query i's slot
        double direct = 0.0;
        for (int i = a; i < stop; i++) direct += (double)g[i - start];` : `        const double direct = dsel[idx];`}
        const double* Pr = P + bh * (T + 1);
        r = direct - (Pr[en] - Pr[a]);
      }
    }
    du[idx] = (float)r;
  }
}
`,
  };
}

/** Threads and keys a block of the score-gradient kernels. */
const SCORE_GRAD_THREADS = 256;
const SCORE_GRAD_KEYS = 512;

/**
 * The score-gradient kernels' launch for rows of T (scoreGradSource): the grid over BH rows, the
 * stride C of the shared sample of tau (a power of two from 64, so that the sample stays within 32
 * KiB), and its dynamic shared bytes. C is passed as the kernel's last argument.
 */
export function scoreGradLaunch(T: number, BH: number): { grid: [number, number, number]; block: number; C: number; shared: number } {
  let C = 64;
  while (Math.ceil(T / C) > 4096) C *= 2;
  return { grid: [Math.ceil(T / SCORE_GRAD_KEYS), BH, 1], block: SCORE_GRAD_THREADS, C, shared: 8 * Math.ceil(T / C) };
}
