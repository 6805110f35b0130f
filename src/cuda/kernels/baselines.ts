// CUDA source of the fixed, hash and qktopk baseline attentions (SPEC.md section 6), mirroring
// src/cpu/kernels/baselines.ts (the key sets) over src/cpu/kernels/attention.ts's pattern attention
// with every gate 1:
//
//   s_ij = scale q_i . k_j,   a_ij = softmax_j(s_ij) over keys(i),   o_i = sum_j a_ij v_j
//
// Keys of query i of query head hq (always j <= i):
//   fixed   the summary columns W-1, 2W-1, ... before i's block of W, then the block up to i.
//   hash    the keys j < i of hq's KV head whose bucket equals q_i's, then i itself. bucket(x) =
//           argmax over [x R_h, -x R_h] (ties to the lower index), R_h the CPU's planes.
//   qktopk  the top-K candidates j <= i - W (W = 0: j <= i) by (q_i . k_j, j), lexicographically,
//           then the window max(0, i-W+1)..i.
// Not here: dense and window (attention.ts), SparseK, bf16, tensor cores, sharing keys between
// queries. This is the first, plain version: one warp per row, fp32 with fp32 accumulators.
//
// Exactness of the key sets: the sets must equal the CPU's, ties and all, so every quantity that
// decides membership is computed as the CPU computes it, bit for bit: the hash projections as
// double mul-then-add in the CPU's order (__dmul_rn / __dadd_rn, which the compiler may not fuse),
// the qktopk dot products as a sequential double sum of exact float x float products (where one
// fma equals the CPU's mul + add, since the product is exact in double).
//
// Passes (per forward, then per backward):
//   hash      buckets:   thread per q or k row, its bucket (B, NH, T) / (B, NKV, T).
//             lists:     block per (b, head) row: positions grouped by bucket, ascending within a
//                        bucket (CSR: start (nb + 1), pos (T)); a warp per bucket ballots over the
//                        row, so the order is fixed (no atomics). Keys for the forward rows, queries
//                        for the backward key pass. O(nb T / 32) warp steps per row.
//   qktopk    select:    persistent block per query row: the row's candidate scores as 64-bit
//                        order keys in a global scratch row (T per block, L2-resident), the K-th
//                        largest by an 8-bit radix select (8 passes), the tie among equal scores
//                        by a second radix select over positions (4 passes, only when the K-th
//                        score is tied past K), then an ordered compaction: sel ascending.
//                        O(T HS) double fma per row (O(T^2 HS) per head), O(12 T) scratch reads.
//   forward   warp per (b, hq, i): 32 keys at a time, a lane per key computes s, online softmax,
//             the warp accumulates values a lane per output dimension. Saves lse_i.
//   backward  query pass: warp per (b, hq, i): D_i = do_i . o_i (saved), a_ij = exp(s_ij - lse_i),
//               dov_ij = do_i . v_j,  ds_ij = a_ij (dov_ij - D_i) scale,  dq_i = sum_j ds_ij k_j.
//             key pass: warp per (b, h, j), over the group's query heads and the queries that
//               attend j:  dk_j = sum_i ds_ij q_i,  dv_j = sum_i a_ij do_i. The attending queries:
//               fixed  the interval [j, e_j), e_j = T for a summary column, else the block's end;
//               hash   i = j, then the queries i > j of hq in bucket(k_j) (the query lists);
//               qktopk the window [j, j + W), then every i >= j + W (W = 0: i >= j) whose sel
//                      row holds j (a binary search in the ascending row): O(T^2 log K) per
//                      head, below the select pass's O(T^2 HS).
//             No atomics: every output is written by one warp, in a fixed order, so a run is
//             bit-for-bit repeatable.
// Work per (b, head) beyond the selection: fixed O(T (W + T/W) HS); hash O(sum of bucket sizes HS)
// (T^2 / nb expected); qktopk O(T (K + W) HS).
// Invariants the launcher (src/cuda/baselines-layer.ts) guarantees: NH % NKV == 0, HS <= 1024,
// B*NH*T*HS < 2^31, sel rows hold Kc = min(K, T) entries, fixed's W >= 1, hash's nb even >= 2.

import type { KernelSource } from '../runtime.js';

export type BaselineKernelKind = 'fixed' | 'hash' | 'qktopk';

/** Warps (rows) per block of the row kernels: 8, or 4 for heads too wide for 8 rows of k and v in 48 KiB of shared memory. */
export function baselineWarps(HS: number): number {
  return HS <= 768 ? 8 : 4;
}

/** Threads per block of the qktopk selection and of the bucket lists. */
export const SELECT_BLOCK = 256;
/** Threads per block of the bucket kernel. */
export const BUCKET_BLOCK = 128;

/** Defines, the lane dot product of a shared row with a global row, and warp reductions. */
function rowCommon(HS: number): string {
  return `
#define HS ${HS}
#define NPL ((HS + 31) / 32)
#define WPB ${baselineWarps(HS)}
#define FULL 0xffffffffu
#define FINF __int_as_float(0x7f800000)

// a (shared, HS) . b (global row, HS), by one lane
__device__ __forceinline__ float dot_row(const float* a, const float* __restrict__ b) {
  float s0 = 0.f, s1 = 0.f;
  int d = 0;
  for (; d + 1 < HS; d += 2) {
    s0 = fmaf(a[d], __ldg(b + d), s0);
    s1 = fmaf(a[d + 1], __ldg(b + d + 1), s1);
  }
  if (d < HS) s0 = fmaf(a[d], __ldg(b + d), s0);
  return s0 + s1;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
  return v;
}
`;
}

/** The kind's extra kernel parameters of the row kernels (forward, backward query), after q, k, v. */
function rowParams(kind: BaselineKernelKind): { c: string; params: ('ptr' | 'i32')[] } {
  switch (kind) {
    case 'fixed':
      return { c: '', params: [] };
    case 'hash':
      return {
        c: `
    const int* __restrict__ qbucket,  // (B, NH, T) bucket of each query
    const int* __restrict__ kstart,   // (B, NKV, nb + 1) key lists: bucket c is kpos[start[c] .. start[c + 1])
    const int* __restrict__ kpos,     // (B, NKV, T) key positions by bucket, ascending within one
    int nb,`,
        params: ['ptr', 'ptr', 'ptr', 'i32'],
      };
    case 'qktopk':
      return {
        c: `
    const int* __restrict__ count,    // (B, NH, T) selected candidates of each query
    const int* __restrict__ sel,      // (B, NH, T, Kc) ascending, the first count of each row
    int Kc,`,
        params: ['ptr', 'ptr', 'i32'],
      };
  }
}

/**
 * C statements defining query i's keys: `n` and `key(c)` for c in [0, n). In scope: b, hq, h, i,
 * row ((b, hq, i)'s index), kv0 ((b, h)'s first key row), T, NKV, W and the kind's parameters.
 */
function rowKeys(kind: BaselineKernelKind): string {
  switch (kind) {
    case 'fixed':
      // floor(i/W) summary columns (one per earlier block), then i's block from its start to i
      return `
  const int nsum = i / W, start = nsum * W;
  const int n = nsum + (i - start) + 1;
  auto key = [&](int c) { return c < nsum ? c * W + (W - 1) : start + (c - nsum); };`;
    case 'hash':
      // the bucket's keys before i (binary search in the ascending list), then i itself
      return `
  const int* st = kstart + ((size_t)b * NKV + h) * (nb + 1);
  const int* lp = kpos + kv0;
  const int qb = qbucket[row];
  const int s0 = st[qb];
  int lo = s0, hi = st[qb + 1];
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (lp[mid] < i) lo = mid + 1;
    else hi = mid;
  }
  const int earlier = lo - s0, n = earlier + 1;
  auto key = [&](int c) { return c < earlier ? lp[s0 + c] : i; };`;
    case 'qktopk':
      // the selected candidates, then the window
      return `
  const int cnt = count[row];
  const int* srow = sel + row * Kc;
  const int nw = W > 0 ? min(W, i + 1) : 0;
  const int n = cnt + nw, wlo = i - nw + 1;
  auto key = [&](int c) { return c < cnt ? srow[c] : wlo + (c - cnt); };`;
  }
}

/** The entry point's name of kernel `base` for kind and HS (also the layer's cache key). */
export function baselineKernelName(base: string, kind: BaselineKernelKind, HS: number): string {
  return `baseline_${base}_${kind}_hs${HS}`;
}

/**
 * Forward. Launch: grid (ceil(T / WPB), NH, B), block 32 WPB. Reads per row: q once, and HS floats
 * of k and of v per key. out and lse are overwritten; a row without keys (qktopk with K = W = 0)
 * gets out 0 and lse -inf.
 */
export function baselineForwardSource(kind: BaselineKernelKind, HS: number): KernelSource {
  const name = baselineKernelName('forward', kind, HS);
  const extra = rowParams(kind);
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', ...extra.params, 'i32', 'i32', 'i32', 'i32', 'f32'],
    source: `${rowCommon(HS)}
extern "C" __global__ void __launch_bounds__(WPB * 32) ${name}(
    float* out,                       // (B, NH, T, HS)
    float* lse,                       // (B, NH, T): log sum_j exp(s_ij); -inf for a row without keys
    const float* __restrict__ q,      // (B, NH, T, HS)
    const float* __restrict__ k,      // (B, NKV, T, HS)
    const float* __restrict__ v,      // (B, NKV, T, HS)${extra.c}
    int T, int NH, int NKV, int W, float scale) {
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
${rowKeys(kind)}
  float m = -FINF, l = 0.f, acc[NPL];
#pragma unroll
  for (int r = 0; r < NPL; r++) acc[r] = 0.f;
  for (int base = 0; base < n; base += 32) {
    const int c = base + lane;
    int j = 0;
    float s = -FINF;
    if (c < n) {
      j = key(c);
      s = scale * dot_row(qs[w], kb + (size_t)j * HS);
    }
    const float mn = fmaxf(m, warp_max(s)); // finite: the chunk has a key
    const float corr = expf(m - mn);        // 0 on the first chunk
    const float p = c < n ? expf(s - mn) : 0.f;
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int r = 0; r < NPL; r++) acc[r] *= corr;
    const int cnt = min(32, n - base);
    for (int t = 0; t < cnt; t++) {
      const float pt = __shfl_sync(FULL, p, t);
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
 * Backward, pass 1 of 2 (query rows): dq (overwritten) and D_i = do_i . o_i.
 * Launch: grid (ceil(T / WPB), NH, B), block 32 WPB. Reads per row: q, do, o once; k and v rows
 * per key (k twice: the lane's dot and the warp's dq sum).
 */
export function baselineBackwardQuerySource(kind: BaselineKernelKind, HS: number): KernelSource {
  const name = baselineKernelName('backward_query', kind, HS);
  const extra = rowParams(kind);
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', ...extra.params, 'i32', 'i32', 'i32', 'i32', 'f32'],
    source: `${rowCommon(HS)}
extern "C" __global__ void __launch_bounds__(WPB * 32) ${name}(
    float* dq,                        // (B, NH, T, HS)
    float* D,                         // (B, NH, T): do_i . o_i
    const float* __restrict__ dout,   // (B, NH, T, HS)
    const float* __restrict__ out,    // (B, NH, T, HS) the forward's
    const float* __restrict__ lse,    // (B, NH, T) the forward's
    const float* __restrict__ q,      // (B, NH, T, HS)
    const float* __restrict__ k,      // (B, NKV, T, HS)
    const float* __restrict__ v,      // (B, NKV, T, HS)${extra.c}
    int T, int NH, int NKV, int W, float scale) {
  __shared__ float qs[WPB][HS], gs[WPB][HS]; // q_i and do_i
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int i = blockIdx.x * WPB + w, hq = blockIdx.y, b = blockIdx.z;
  if (i >= T) return;
  const int h = hq / (NH / NKV);
  const size_t row = ((size_t)b * NH + hq) * T + i;
  const size_t kv0 = ((size_t)b * NKV + h) * T;
  const float* kb = k + kv0 * HS;
  const float* vb = v + kv0 * HS;
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
${rowKeys(kind)}
  float acc[NPL];
#pragma unroll
  for (int r = 0; r < NPL; r++) acc[r] = 0.f;
  for (int base = 0; base < n; base += 32) {
    const int c = base + lane;
    int j = 0;
    float ds = 0.f;
    if (c < n) {
      j = key(c);
      const float a = expf(scale * dot_row(qs[w], kb + (size_t)j * HS) - L);
      const float dov = dot_row(gs[w], vb + (size_t)j * HS);
      ds = a * (dov - Di) * scale;
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
}
`,
  };
}

/** The kind's extra parameters of the key pass. */
function keyParams(kind: BaselineKernelKind): { c: string; params: ('ptr' | 'i32')[] } {
  switch (kind) {
    case 'fixed':
      return { c: '', params: [] };
    case 'hash':
      return {
        c: `
    const int* __restrict__ kbucket,  // (B, NKV, T) bucket of each key
    const int* __restrict__ qstart,   // (B, NH, nb + 1) query lists: bucket c is qpos[start[c] .. start[c + 1])
    const int* __restrict__ qpos,     // (B, NH, T) query positions by bucket, ascending within one
    int nb,`,
        params: ['ptr', 'ptr', 'ptr', 'i32'],
      };
    case 'qktopk':
      return rowParams('qktopk');
  }
}

/**
 * C statements defining the queries of head hq that may attend key j: `m` and `query(c)` for c in
 * [0, m), which is the query's position, or -1 where it does not attend j. In scope: b, hq, h, j,
 * kv (index of (b, h, j)), r0 ((b, hq)'s first query row), T, NH, W and the kind's parameters.
 */
function keyQueries(kind: BaselineKernelKind): string {
  switch (kind) {
    case 'fixed':
      // a summary column (j mod W = W-1) is attended by every later query, any other key by the
      // rest of its own block
      return `
    const int m = (j % W == W - 1 ? T : min(T, (j / W + 1) * W)) - j;
    auto query = [&](int c) { return j + c; };`;
    case 'hash':
      // query j itself, then the queries after j in k_j's bucket (binary search for the first > j)
      return `
    const int* st = qstart + ((size_t)b * NH + hq) * (nb + 1);
    const int* lp = qpos + r0;
    const int kbk = kbucket[kv];
    int lo = st[kbk], hi = st[kbk + 1];
    const int q1 = hi;
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (lp[mid] <= j) lo = mid + 1;
      else hi = mid;
    }
    const int ub = lo, m = 1 + (q1 - ub);
    auto query = [&](int c) { return c == 0 ? j : lp[ub + c - 1]; };`;
    case 'qktopk':
      // queries j .. T-1: the window's (i - j < W) attend j; the others where their sel row holds j
      return `
    const int m = T - j;
    auto query = [&](int c) {
      const int i = j + c;
      if (c < W) return i;
      const int* srow = sel + (r0 + i) * Kc;
      int lo = 0, hi = count[r0 + i];
      while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (srow[mid] < j) lo = mid + 1;
        else hi = mid;
      }
      return lo < count[r0 + i] && srow[lo] == j ? i : -1;
    };`;
  }
}

/**
 * Backward, pass 2 of 2 (key rows): dk and dv (overwritten), from pass 1's D.
 * Launch: grid (ceil(T / WPB), NKV, B), block 32 WPB. Reads per key and attending query: its q and
 * do rows (twice: the lane's dot and the warp's sum).
 */
export function baselineBackwardKeySource(kind: BaselineKernelKind, HS: number): KernelSource {
  const name = baselineKernelName('backward_key', kind, HS);
  const extra = keyParams(kind);
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', ...extra.params, 'i32', 'i32', 'i32', 'i32', 'f32'],
    source: `${rowCommon(HS)}
extern "C" __global__ void __launch_bounds__(WPB * 32) ${name}(
    float* dk,                        // (B, NKV, T, HS)
    float* dv,                        // (B, NKV, T, HS)
    const float* __restrict__ dout,   // (B, NH, T, HS)
    const float* __restrict__ lse,    // (B, NH, T)
    const float* __restrict__ D,      // (B, NH, T)
    const float* __restrict__ q,      // (B, NH, T, HS)
    const float* __restrict__ k,      // (B, NKV, T, HS)
    const float* __restrict__ v,      // (B, NKV, T, HS)${extra.c}
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
  float dka[NPL], dva[NPL];
#pragma unroll
  for (int r = 0; r < NPL; r++) { dka[r] = 0.f; dva[r] = 0.f; }
  for (int gi = 0; gi < G; gi++) {
    const int hq = h * G + gi;
    const size_t r0 = ((size_t)b * NH + hq) * T; // the head's first row
${keyQueries(kind)}
    for (int base = 0; base < m; base += 32) {
      const int c = base + lane;
      int i = -1;
      float ds = 0.f, a = 0.f;
      if (c < m) i = query(c);
      if (i >= 0) {
        const size_t row = r0 + i;
        a = expf(scale * dot_row(ks[w], q + row * HS) - lse[row]);
        const float dov = dot_row(vs[w], dout + row * HS);
        ds = a * (dov - D[row]) * scale;
      }
      const int cnt = min(32, m - base);
      for (int t = 0; t < cnt; t++) {
        const int it = __shfl_sync(FULL, i, t);
        const float dst = __shfl_sync(FULL, ds, t);
        const float at = __shfl_sync(FULL, a, t);
        if (it < 0) continue; // the same for every lane
        const size_t rt = (r0 + it) * HS;
#pragma unroll
        for (int r = 0; r < NPL; r++) {
          const int d = lane + 32 * r;
          if (d < HS) {
            dka[r] = fmaf(dst, __ldg(q + rt + d), dka[r]);
            dva[r] = fmaf(at, __ldg(dout + rt + d), dva[r]);
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

/**
 * hash, pass 1: the bucket of each row of x, argmax over [x R, -x R] with R = planes of the row's
 * KV head (HS, half), ties to the lower index, with the CPU's double arithmetic and order.
 * Launch: grid ceil(rows / BUCKET_BLOCK), block BUCKET_BLOCK. Reads x once, R (L1/L2) per row.
 */
export function hashBucketsSource(): KernelSource {
  return {
    name: 'baseline_hash_buckets',
    params: ['ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'],
    source: `
extern "C" __global__ void __launch_bounds__(${BUCKET_BLOCK}) baseline_hash_buckets(
    int* bucket,                        // (rows): rows = B * heads * T
    const float* __restrict__ x,        // (rows, HS)
    const double* __restrict__ planes,  // (NKV, HS, half)
    int rows, int T, int heads, int group, int HS, int half) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const double* R = planes + (size_t)(((r / T) % heads) / group) * HS * half;
  const float* xr = x + (size_t)r * HS;
  // the largest of +dot_c (first c) and of -dot_c (first c); the + side has the lower indices
  double bestP = -__longlong_as_double(0x7ff0000000000000ll), bestN = bestP;
  int argP = 0, argN = 0;
  for (int c = 0; c < half; c++) {
    double dot = 0.0;
    for (int d = 0; d < HS; d++) dot = __dadd_rn(dot, __dmul_rn((double)xr[d], R[(size_t)d * half + c]));
    if (dot > bestP) { bestP = dot; argP = c; }
    if (-dot > bestN) { bestN = -dot; argN = c; }
  }
  bucket[r] = bestP >= bestN ? argP : half + argN;
}
`,
  };
}

/**
 * hash, pass 2: per row of buckets (B*heads rows of T), the positions grouped by bucket, ascending
 * within a bucket: start (nb + 1) and pos (T). A warp per bucket counts by ballots, thread 0 sums
 * the counts, the warp writes its bucket's positions in order.
 * Launch: grid rows, block SELECT_BLOCK. Reads the row's buckets nb / 32 times per warp (L1).
 */
export function bucketListsSource(): KernelSource {
  return {
    name: 'baseline_bucket_lists',
    params: ['ptr', 'ptr', 'ptr', 'i32', 'i32'],
    source: `
#define SB ${SELECT_BLOCK}
extern "C" __global__ void __launch_bounds__(SB) baseline_bucket_lists(
    int* start,                         // (rows, nb + 1)
    int* pos,                           // (rows, T)
    const int* __restrict__ bucket,     // (rows, T)
    int T, int nb) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int* bk = bucket + (size_t)blockIdx.x * T;
  int* st = start + (size_t)blockIdx.x * (nb + 1);
  int* ps = pos + (size_t)blockIdx.x * T;
  for (int c = w; c < nb; c += SB / 32) {
    int n = 0;
    for (int base = 0; base < T; base += 32) {
      const int x = base + lane;
      n += __popc(__ballot_sync(0xffffffffu, x < T && bk[x] == c));
    }
    if (lane == 0) st[c + 1] = n;
  }
  __syncthreads(); // global writes of the block are visible to it after the barrier
  if (threadIdx.x == 0) {
    st[0] = 0;
    for (int c = 0; c < nb; c++) st[c + 1] += st[c];
  }
  __syncthreads();
  for (int c = w; c < nb; c += SB / 32) {
    int off = st[c];
    for (int base = 0; base < T; base += 32) {
      const int x = base + lane;
      const bool hit = x < T && bk[x] == c;
      const unsigned m = __ballot_sync(0xffffffffu, hit);
      if (hit) ps[off + __popc(m & ((1u << lane) - 1u))] = x;
      off += __popc(m);
    }
  }
}
`,
  };
}

/**
 * qktopk selection: for each query row (b, hq, i), count = min(K, |Cand_i|) and sel = the top
 * count candidates j <= i - W (W = 0: j <= i) by (q_i . k_j, j), ascending. All candidates when
 * there are at most K (no scores). Otherwise the scores, as order-preserving 64-bit keys, go to
 * the block's scratch row; the K-th largest key s* comes from a radix select; when fewer ties at
 * s* are wanted than there are, a radix select over positions finds j*, the smallest tied
 * position taken (the more recent win). Selected: key > s*, or key == s* and j >= j*.
 * Launch: grid G (persistent blocks striding over the B*NH*T rows), block SELECT_BLOCK; scratch
 * (G, T) u64. Work per scored row: n HS double fma, 8 passes over n keys (+ 4 on a tie), one
 * compaction pass.
 */
export function qktopkSelectSource(HS: number): KernelSource {
  const name = `baseline_qktopk_select_hs${HS}`;
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'],
    source: `
#define HS ${HS}
#define SB ${SELECT_BLOCK}
typedef unsigned long long u64;

// Monotone map of a double to u64 (no NaN): -0 is first made +0, as the CPU compares them equal.
__device__ __forceinline__ u64 order_key(double s) {
  const long long bits = __double_as_longlong(s == 0.0 ? 0.0 : s);
  return bits < 0 ? ~(u64)bits : (u64)bits | 0x8000000000000000ull;
}

// The kth largest (1-based) of the keys key(x) of the x in [0, n) with in(x), kth <= their number,
// 8 bits a pass from bit topbit down. *need: how many elements equal to the result are among the
// kth largest; *equal: how many there are. Every thread of the block must call it.
template <typename F>
__device__ u64 radix_kth(int n, int kth, int topbit, F get, int* need, int* equal) {
  __shared__ unsigned int hist[256];
  __shared__ u64 sh_prefix;
  __shared__ int sh_k, sh_eq;
  __syncthreads(); // the previous call's readers of sh_*
  if (threadIdx.x == 0) { sh_prefix = 0ull; sh_k = kth; }
  u64 mask = 0ull;
  for (int shift = topbit; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += SB) hist[d] = 0u;
    __syncthreads();
    const u64 prefix = sh_prefix;
    for (int x = threadIdx.x; x < n; x += SB) {
      u64 key;
      if (get(x, key) && (key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // the digit d where the count of keys with digit >= d first reaches k: lane l holds digits
      // 8l .. 8l+7; a suffix sum over lanes finds the lane, a walk down its 8 digits the digit
      const int lane = threadIdx.x;
      unsigned int c[8];
      int tot = 0;
#pragma unroll
      for (int t = 0; t < 8; t++) {
        c[t] = hist[lane * 8 + t];
        tot += (int)c[t];
      }
      int incl = tot; // keys with a digit in lanes >= lane
      for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_down_sync(0xffffffffu, incl, o);
        if (lane + o < 32) incl += y;
      }
      const int above = incl - tot, k = sh_k;
      __syncwarp(); // every lane has read sh_k before one lane writes it
      if (above < k && k <= incl) { // exactly one lane
        int kk = k - above, d = 7;
        for (; d > 0; d--) {
          if ((int)c[d] >= kk) break;
          kk -= (int)c[d];
        }
        sh_k = kk;
        sh_eq = (int)c[d];
        sh_prefix = prefix | ((u64)(lane * 8 + d) << shift);
      }
    }
    mask |= 255ull << shift;
    __syncthreads();
  }
  *need = sh_k;
  *equal = sh_eq;
  return sh_prefix;
}

extern "C" __global__ void __launch_bounds__(SB) ${name}(
    int* count,                       // (B, NH, T)
    int* sel,                         // (B, NH, T, Kc)
    u64* scratch,                     // (gridDim.x, T)
    const float* __restrict__ q,      // (B, NH, T, HS)
    const float* __restrict__ k,      // (B, NKV, T, HS)
    int B, int T, int NH, int NKV, int K, int Kc, int W) {
  __shared__ float qs[HS];
  __shared__ int wcount[SB / 32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  u64* keys = scratch + (size_t)blockIdx.x * T;
  const size_t rows = (size_t)B * NH * T;
  for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
    // every branch below is uniform over the block: it depends on r alone
    const int i = (int)(r % T), hq = (int)((r / T) % NH), b = (int)(r / ((size_t)T * NH));
    const int h = hq / (NH / NKV);
    const int n = (W > 0 ? i - W : i) + 1; // candidates 0 .. n-1
    int* srow = sel + r * Kc;
    if (K == 0 || n <= 0) {
      if (threadIdx.x == 0) count[r] = 0;
      continue;
    }
    if (n <= K) {
      for (int x = threadIdx.x; x < n; x += SB) srow[x] = x;
      if (threadIdx.x == 0) count[r] = n;
      continue;
    }
    __syncthreads(); // the previous row is done with qs and keys
    for (int d = threadIdx.x; d < HS; d += SB) qs[d] = q[r * HS + d];
    __syncthreads();
    const float* kb = k + ((size_t)b * NKV + h) * T * HS;
    for (int x = threadIdx.x; x < n; x += SB) {
      // the CPU's sum: sequential in d, double, of exact float products (so fma == mul + add)
      const float* kr = kb + (size_t)x * HS;
      double dot = 0.0;
      for (int d = 0; d < HS; d++) dot = __fma_rn((double)qs[d], (double)__ldg(kr + d), dot);
      keys[x] = order_key(dot);
    }
    __syncthreads();
    int need, equal, unused0, unused1;
    const u64 s = radix_kth(n, K, 56, [&](int x, u64& key) { key = keys[x]; return true; }, &need, &equal);
    int jstar = 0;
    if (need < equal) {
      jstar = (int)radix_kth(n, need, 24, [&](int x, u64& key) { key = (u64)x; return keys[x] == s; }, &unused0, &unused1);
    }
    // ordered compaction: sel ascending
    int base = 0;
    for (int x0 = 0; x0 < n; x0 += SB) {
      const int x = x0 + threadIdx.x;
      bool take = false;
      if (x < n) {
        const u64 key = keys[x];
        take = key > s || (key == s && x >= jstar);
      }
      const unsigned m = __ballot_sync(0xffffffffu, take);
      if (lane == 0) wcount[w] = __popc(m);
      __syncthreads();
      int before = 0, total = 0;
      for (int v = 0; v < SB / 32; v++) {
        if (v < w) before += wcount[v];
        total += wcount[v];
      }
      if (take) srow[base + before + __popc(m & ((1u << lane) - 1u))] = x;
      base += total;
      __syncthreads(); // wcount is rewritten next chunk
    }
    if (threadIdx.x == 0) count[r] = K;
  }
}
`,
  };
}
