// CUDA source generators (NVRTC, no headers) of a fast exact SparseK causal selection (SPEC.md sections 1
// and 3), what CudaBackend runs (variants and timings: dev/cuda-selection-fast): the same outputs as
// the first GPU selection, dev/cuda-attention/selection-tiles.ts (per query tau
// (double), thk (u64 key of Sel_i's weakest member, 0 when every candidate is selected, ~0 when K = 0
// and some candidate exists), count, nfree; sel rows) in O(T log^2 T) work per row, parallel over
// queries. emulate.ts is the same algorithm in TypeScript, checked exactly against CausalSelector.
// Not here: attention, the key intervals e_j (src's sparsek_key_intervals reads thk unchanged), launching
// (bench.ts shows the order).
//
// Passes, per row (b, KV head) of length T, candidates of query i: positions j < n_i = clamp(i - W + 1, 0, T):
//  1. tree: a merge-sort tree over x = j + d (d = (W - 1) mod 64, so that each block's candidate prefix
//     is a union of whole leaves): level l holds nodes of 64 << l positions, keys sorted ascending,
//     with inclusive prefix sums of the values. Built by sparsek_fs_merge, launched once per node size
//     1, 2, 4, ... (each element finds its rank in its sibling: a binary search), the levels below 64 in
//     scratch. CS(n, kappa) = (count, sum of u) over candidates j < n with key >= kappa costs one binary
//     search per set bit of the prefix's leaf count plus < 64 tail elements: one warp, a lane per level.
//  2. anchors (sparsek_fs_anchor, a warp each): for block b = 0..nb (nb = ceil(T / 64)), at the base query
//     a_b = max(64 b, K + W) (the first full query of the block or later), thk and tau of its candidate
//     set: thk = the largest key of the node's sorted keys with CS(n, key).count >= K, by a search down to
//     512 keys, then a ballot walk through them; tau on the segment between breakpoints (u: F -> Z, u - 1:
//     U -> F) where f(t) = sum clip(u - t, 0, 1) crosses K, found by Newton steps (f is linear on a
//     segment, and one pair of counts at t, with the nearest keys, gives t's segment and its line; about
//     2 pairs an anchor), then solved exactly on it.
//  3. rows (sparsek_fs_rows, a block each): Sel_{64 b} = the candidates with key >= thk_b, from the tree
//     nodes' suffixes through a bitmap over positions, so the row comes out ascending; into a compact
//     (nb, K) array per row, or row 64 b of a (T, K) array.
//  4. queries (sparsek_fs_block, 64 threads a block, a thread per query i of [64 b, 64 b + 64)):
//     monotonicity gives thk_{a_b} <= thk_i <= thk_{a_{b+1}} and tau_{a_b} <= tau_i <= tau_{a_{b+1}}, and
//     Cand_i = Cand_{a_b} + at most 63 new candidates. So thk_i is a walk down the sorted keys (of the
//     smallest first tree node that holds the block's candidates, the root for late blocks) from
//     thk_{a_{b+1}}, counting keys at positions < n_i; tau_i is a walk up through the breakpoints in
//     (tau_lo, tau_hi], which are two contiguous ranges of those keys (values in (tau_lo, tau_hi] and
//     [tau_lo + 1, tau_hi + 1]); everything outside them enters as CS aggregates of Cand_{a_b} plus the
//     new candidates. The value ranges (tau_b, tau_{b+1}] of different blocks are disjoint, so the walks
//     of a row touch O(T) root entries per query slot in all (each block's 64 threads walk the same range).
//     With ALL, every query's row is also written: Sel_{64 b} and the new candidates, those >= thk_i.
// Work per row: O(T log T) tree, O((T / 64) log^2 T) anchors, O(T) walks x 64 query slots, O(T/64 K) rows.
// Sums and thresholds in double like the CPU; thresholds on float values via key_gt / key_ge (smallest
// float above / at least a double).

import type { KernelSource } from '../runtime.js';
import { ORD_OF } from './selection.js';

export const FS_CHUNK = 64;

function common(): string {
  return `
typedef unsigned long long u64;
#define CHUNK ${FS_CHUNK}
#define FULL 0xffffffffu
#define DINF __longlong_as_double(0x7ff0000000000000LL)
${ORD_OF}__device__ __forceinline__ double val_of(u64 key) {
  unsigned o = (unsigned)(key >> 32);
  return (double)__uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}
__device__ __forceinline__ u64 key_of(float x, int j) { return ((u64)ord_of(x) << 32) | (unsigned)j; }
__device__ __forceinline__ int pos_of(u64 key) { return (int)(unsigned)(key & 0xffffffffull); }
// smallest key whose value is > t / >= t (t a double)
__device__ __forceinline__ u64 key_gt(double t) {
  const float f = __double2float_rn(t);
  return (u64)(ord_of(f) + ((double)f <= t ? 1u : 0u)) << 32;
}
__device__ __forceinline__ u64 key_ge(double t) {
  const float f = __double2float_rn(t);
  return (u64)(ord_of(f) + ((double)f < t ? 1u : 0u)) << 32;
}
__device__ __forceinline__ int lower_bound(const u64* a, int lo, int hi, u64 k) {
  while (lo < hi) {
    const int m = (lo + hi) >> 1;
    if (a[m] < k) lo = m + 1; else hi = m;
  }
  return lo;
}
// lower_bound by a whole warp, 32 pivots a step (33-ary: about 4 dependent loads for 64K keys, not 16)
__device__ int warp_lower_bound(const u64* a, int lo, int hi, u64 k) {
  const int lane = threadIdx.x & 31;
  while (hi - lo > 32) {
    const long long len = hi - lo;
    const bool lt = a[lo + (int)((len * (lane + 1)) / 33)] < k;
    const int c = __popc(__ballot_sync(FULL, lt)); // pivots below k: a prefix of the lanes
    const int nlo = c > 0 ? lo + (int)((len * c) / 33) + 1 : lo;
    hi = c < 32 ? lo + (int)((len * (c + 1)) / 33) : hi;
    lo = nlo;
  }
  return lo + __popc(__ballot_sync(FULL, lane < hi - lo && a[lo + lane] < k));
}
__device__ __forceinline__ int clampn(long long x, int T) { return (int)(x < 0 ? 0 : x > T ? T : x); }

// The tree of one row: level l at tk + (l BH + row) Tx (keys) and tp + ... (inclusive prefix sums per node).
struct Tree {
  const u64* tk; const double* tp; const float* u; int NL, BH, Tx, d, row;
  __device__ const u64* keys(int l) const { return tk + ((size_t)l * BH + row) * Tx; }
  __device__ const double* psum(int l) const { return tp + ((size_t)l * BH + row) * Tx; }
};
struct CS { int c; double s; };

// Count and sum over candidates j < n with key >= kappa; a group of L lanes calls it (L = 32, a whole
// warp, or 16, each half of a warp with its own n and kappa when NL <= 16): lane l of the group takes level l.
template <int L>
__device__ CS cs_lanes(const Tree& tr, int n, u64 kappa) {
  const int lane = threadIdx.x & (L - 1);
  const int m = (n + tr.d) / CHUNK;
  int c = 0;
  double s = 0.0;
  if (lane < tr.NL && ((m >> lane) & 1)) {
    const int start = (m >> (lane + 1)) << (lane + 1);
    const int x0 = start * CHUNK, x1 = min(tr.Tx, x0 + (CHUNK << lane));
    const u64* k = tr.keys(lane);
    const double* p = tr.psum(lane);
    const int lb = lower_bound(k, x0, x1, kappa);
    c = x1 - lb;
    s = p[x1 - 1] - (lb > x0 ? p[lb - 1] : 0.0);
  }
  for (int j = max(0, m * CHUNK - tr.d) + lane; j < n; j += L) {
    const float v = tr.u[j];
    if (key_of(v, j) >= kappa) { c++; s += (double)v; }
  }
  for (int o = L / 2; o > 0; o >>= 1) {
    c += __shfl_xor_sync(FULL, c, o);
    s += __shfl_xor_sync(FULL, s, o);
  }
  CS r; r.c = c; r.s = s;
  return r;
}
__device__ __forceinline__ CS cs_warp(const Tree& tr, int n, u64 kappa) { return cs_lanes<32>(tr, n, kappa); }
`;
}

/** Writes the row's keys and values at x = j + d (pads: key 0, value 0). Launch: ceil(BH Tx / 256) x 256. */
export function fsInitSource(): KernelSource {
  return {
    name: 'sparsek_fs_init',
    params: ['ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32'],
    source: `${common()}
extern "C" __global__ void sparsek_fs_init(
    u64* keys,           // (BH, Tx)
    double* psum,        // (BH, Tx)
    const float* u,      // (BH, T)
    int BH, int T, int Tx, int d) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)BH * Tx) return;
  const int row = (int)(idx / Tx), x = (int)(idx % Tx), j = x - d;
  const bool real = j >= 0 && j < T;
  const float v = real ? u[(size_t)row * T + j] : 0.f;
  keys[idx] = real ? key_of(v, j) : 0ull;
  psum[idx] = (double)v;
}
`,
  };
}

/**
 * One tree level: nodes of s sorted keys (with per-node inclusive prefix sums) merged pairwise into
 * nodes of 2 s. Each element's output slot is its index in its node plus its rank in the sibling
 * (lower bound from the left node, upper bound from the right: pads, all key 0, stay stable).
 * Launch: ceil(BH Tx / 256) x 256.
 */
export function fsMergeSource(): KernelSource {
  return {
    name: 'sparsek_fs_merge',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32'],
    source: `${common()}
extern "C" __global__ void sparsek_fs_merge(
    u64* okeys,          // (BH, Tx) nodes of 2 s
    double* opsum,       // (BH, Tx)
    const u64* keys,     // (BH, Tx) nodes of s
    const double* psum,  // (BH, Tx)
    int BH, int Tx, int s) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)BH * Tx) return;
  const size_t r0 = idx - idx % Tx;
  const int x = (int)(idx % Tx), node = x / s, a = x - node * s;
  const int sb0 = (node ^ 1) * s;
  const u64 k = keys[idx];
  int rb = 0;
  if (sb0 < Tx) {
    const u64* sk = keys + r0;
    int lo = sb0, hi = min(Tx, sb0 + s);
    if ((node & 1) == 0) {
      while (lo < hi) { const int m = (lo + hi) >> 1; if (sk[m] < k) lo = m + 1; else hi = m; }
    } else {
      while (lo < hi) { const int m = (lo + hi) >> 1; if (sk[m] <= k) lo = m + 1; else hi = m; }
    }
    rb = lo - sb0;
  }
  const size_t out = r0 + (size_t)((node & ~1) * s + a + rb);
  okeys[out] = k;
  opsum[out] = psum[idx] + (rb > 0 ? psum[r0 + sb0 + rb - 1] : 0.0);
}
`,
  };
}

/**
 * Two tree levels in one launch: nodes of s merged into nodes of 2 s (okeys2, opsum2) and of 4 s
 * (okeys4, opsum4), with the same results, bits included, as two sparsek_fs_merge launches. Each element
 * ranks itself in the three other runs of its 4 s node (its sibling, and both runs of the other pair: their
 * ranks add up to its rank in the other pair's merged node) in one loop of power-of-two steps, the three
 * loads of a step independent. Its 4 s prefix sum adds the other pair's prefix at that rank, which is the
 * sum of the two runs' prefixes at theirs (the last element of the other pair below it, in either run,
 * carried exactly that sum at the 2 s level). s must be a power of two. Launch: ceil(BH Tx / 256) x 256.
 */
export function fsMerge2Source(): KernelSource {
  return {
    name: 'sparsek_fs_merge2',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32'],
    source: `${common()}
// the elements of a run that go before key k: those < k (the run lies right of k's side), or <= k (left)
__device__ __forceinline__ bool before(u64 x, u64 k, bool strict) { return strict ? x < k : x <= k; }
extern "C" __global__ void sparsek_fs_merge2(
    u64* okeys2,         // (BH, Tx) nodes of 2 s
    double* opsum2,      // (BH, Tx)
    u64* okeys4,         // (BH, Tx) nodes of 4 s
    double* opsum4,      // (BH, Tx)
    const u64* keys,     // (BH, Tx) nodes of s
    const double* psum,  // (BH, Tx)
    int BH, int Tx, int s) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)BH * Tx) return;
  const size_t r0 = idx - idx % Tx;
  const int x = (int)(idx % Tx), node = x / s, a = x - node * s;
  const u64* rk = keys + r0;
  const double* rp = psum + r0;
  const u64 k = rk[x];
  // runs: the sibling (node ^ 1), then the other pair's two (c, c + 1); lengths clipped at Tx
  const int bs = (node ^ 1) * s, bc = ((node ^ 2) & ~1) * s, bd = bc + s;
  const int ls = max(0, min(s, Tx - bs)), lc = max(0, min(s, Tx - bc)), ld = max(0, min(s, Tx - bd));
  const bool ss = (node & 1) == 0, sq = (node & 2) == 0;
  int rs = 0, rc = 0, rd = 0;
  for (int st = s; st >= 1; st >>= 1) {
    const bool ts = rs + st <= ls && before(rk[bs + rs + st - 1], k, ss);
    const bool tc = rc + st <= lc && before(rk[bc + rc + st - 1], k, sq);
    const bool td = rd + st <= ld && before(rk[bd + rd + st - 1], k, sq);
    if (ts) rs += st;
    if (tc) rc += st;
    if (td) rd += st;
  }
  const int a2 = a + rs, rb = rc + rd;
  const double p2 = rp[x] + (rs > 0 ? rp[bs + rs - 1] : 0.0);
  const double pq = (rc > 0 ? rp[bc + rc - 1] : 0.0) + (rd > 0 ? rp[bd + rd - 1] : 0.0);
  const size_t o2 = r0 + (size_t)((node & ~1) * s + a2), o4 = r0 + (size_t)((node & ~3) * s + a2 + rb);
  okeys2[o2] = k;
  opsum2[o2] = p2;
  okeys4[o4] = k;
  opsum4[o4] = p2 + (rb > 0 ? pq : 0.0);
}
`,
  };
}

/** Most positions (rows x Tx) for which the tree's merges run two levels a launch (fsMerges). */
export const FS_MERGE2_MAX = 1 << 19;

/**
 * The merges that finish the tree above sparsek_fs_leaves' levels, from node size s = FS_LEAVES: two levels a
 * launch (sparsek_fs_merge2, s x 4) while two remain, where the merges wait on their loads' latency (rows x
 * Tx <= FS_MERGE2_MAX); else one (sparsek_fs_merge, s x 2), where they wait on L2 traffic, of which
 * sparsek_fs_merge2 makes 1.5 times as much. H100, 16 rows, session 13: 16K, 0.072 to 0.057 ms; 64K,
 * 0.155 to 0.196.
 */
export function fsMerges(Tx: number, rows: number): { s: number; two: boolean }[] {
  const out: { s: number; two: boolean }[] = [];
  for (let s = FS_LEAVES; s < Tx;) {
    const two = 2 * s < Tx && rows * Tx <= FS_MERGE2_MAX;
    out.push({ s, two });
    s *= two ? 4 : 2;
  }
  return out;
}

/** Positions of a row that one sparsek_fs_leaves block sorts in shared memory (its threads). */
export const FS_LEAVES = 1024;

/**
 * sparsek_fs_init and the merges of node sizes s = 1 .. FS_LEAVES / 2 (while s < Tx) in one launch:
 * each block takes FS_LEAVES consecutive positions of one row into shared memory and runs
 * sparsek_fs_merge's passes there, with the same ranks and the same arithmetic (so the same bits),
 * writing the levels of node size >= 64 to tk, tp. What it leaves to the merges: node sizes FS_LEAVES
 * and up. The block's positions past the row's end (Tx) take the key ~1, above every real key, so every
 * node is whole: they sort last and rank below no real key. The passes are unrolled, so each rank is
 * log2(s) + 1 steps of a search without branches, since the kernel is bound by issued instructions (H100,
 * 64K x 16 rows, session 16: 81% of cycles issuing with loops; 0.09 to 0.07 ms unrolled).
 * Launch: grid (ceil(Tx / FS_LEAVES), BH), FS_LEAVES threads.
 */
export function fsLeavesSource(): KernelSource {
  return {
    name: 'sparsek_fs_leaves',
    params: ['ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32'],
    source: `${common()}
#define SB ${FS_LEAVES}
#define LOG_SB ${Math.log2(FS_LEAVES)}
#define LOG_CHUNK ${Math.log2(FS_CHUNK)}
extern "C" __global__ void __launch_bounds__(SB) sparsek_fs_leaves(
    u64* tk,             // (NL, BH, Tx) tree keys: the levels of node size 64 .. SB written here
    double* tp,          // (NL, BH, Tx) tree prefix sums
    const float* u,      // (BH, T)
    int BH, int T, int Tx, int d) {
  __shared__ u64 ks[2][SB];
  __shared__ double ps[2][SB];
  const int row = blockIdx.y, x0 = blockIdx.x * SB, a = threadIdx.x, len = min(SB, Tx - x0);
  const size_t r0 = (size_t)row * Tx;
  { // sparsek_fs_init
    const int j = x0 + a - d;
    const bool real = j >= 0 && j < T;
    const float v = real ? u[(size_t)row * T + j] : 0.f;
    ks[0][a] = a >= len ? ~1ull : real ? key_of(v, j) : 0ull;
    ps[0][a] = (double)v;
  }
  __syncthreads();
#pragma unroll
  for (int lg = 0; lg < LOG_SB; lg++) { // sparsek_fs_merge, node size s = 2^lg, in shared memory
    const int s = 1 << lg, cur = lg & 1;
    if (s >= Tx) break;
    const int node = a >> lg, sb0 = (node ^ 1) << lg;
    const u64 k = ks[cur][a];
    // rank in the sibling: its keys < k from the left node, <= k (< k + 1: no key is ~0) from the right
    const u64 kk = k + (u64)(node & 1);
    int p = sb0;
#pragma unroll
    for (int st = s >> 1; st > 0; st >>= 1) p += ks[cur][p + st - 1] < kk ? st : 0;
    p += ks[cur][p] < kk ? 1 : 0;
    const int rb = p - sb0, out = ((node & ~1) << lg) + (a & (s - 1)) + rb;
    ks[cur ^ 1][out] = k;
    ps[cur ^ 1][out] = ps[cur][a] + (rb > 0 ? ps[cur][sb0 + rb - 1] : 0.0);
    __syncthreads();
    if (lg + 1 >= LOG_CHUNK && a < len) {
      const size_t l = (size_t)(lg + 1 - LOG_CHUNK); // level: node size CHUNK << l
      tk[(l * BH) * Tx + r0 + x0 + a] = ks[cur ^ 1][a];
      tp[(l * BH) * Tx + r0 + x0 + a] = ps[cur ^ 1][a];
    }
  }
}
`,
  };
}

/** Threads of a sparsek_fs_anchor block: four warps, one anchor each or one anchor together. */
export const FS_ANCHOR_THREADS = 128;

/**
 * Warps per anchor: 4 while there are few anchors (latency is the cost: H100, 16 rows of 4K), else 1
 * (the tree's memory traffic is the cost, and 5-ary rounds do more of it: 16 rows of 16K already).
 */
export function fsAnchorWarps(anchors: number, multiprocessors: number): 1 | 4 {
  return anchors < 16 * multiprocessors ? 4 : 1;
}

/** Grid of sparsek_fs_anchor for `anchors` = BH (nb + 1) anchors. */
export function fsAnchorGrid(anchors: number, AW: 1 | 4): number {
  return Math.ceil((anchors * AW) / (FS_ANCHOR_THREADS / 32));
}

/** Phase 1 of the anchors takes every FS_ANCHOR_STRIDE-th one (and the last) of a row. */
export const FS_ANCHOR_STRIDE = 16;

/**
 * The launches of sparsek_fs_anchor for BH rows of nb + 1 anchors, in order. Where K > 0 and the
 * anchors would take more than one wave of warps (more than 32 per SM): phase 1, every
 * FS_ANCHOR_STRIDE-th anchor and the last, with full searches; then phase 2, the others, each
 * searching between the keys of the two phase-1 anchors around it (thk and tau never decrease with
 * i). Otherwise one launch of every anchor (phase 0): each anchor is a chain of dependent loads, and
 * two phases in one wave only add a second chain (H100: 0.136 against 0.072 ms at T = 4K, 16 rows;
 * 0.357 against 0.634 at 64K). Arguments after the kernel's others: S = FS_ANCHOR_STRIDE, phase.
 */
export function fsAnchorLaunches(BH: number, nb: number, K: number, multiprocessors: number): { phase: 0 | 1 | 2; AW: 1 | 4; grid: number }[] {
  const S = FS_ANCHOR_STRIDE, all = BH * (nb + 1);
  if (K === 0 || nb + 1 <= 2 * S || all <= 32 * multiprocessors) {
    const AW = fsAnchorWarps(all, multiprocessors);
    return [{ phase: 0, AW, grid: fsAnchorGrid(all, AW) }];
  }
  const first = BH * (Math.floor(nb / S) + 1 + (nb % S !== 0 ? 1 : 0));
  const AW1 = fsAnchorWarps(first, multiprocessors), AW2 = fsAnchorWarps(all - first, multiprocessors);
  return [{ phase: 1, AW: AW1, grid: fsAnchorGrid(first, AW1) }, { phase: 2, AW: AW2, grid: fsAnchorGrid(all, AW2) }];
}

/**
 * Phase A: thk and tau at each block's base query a_b = max(64 b, K + W), b = 0..nb; AW warps per
 * (b, row), grid fsAnchorGrid. athk = 0 and atau = -inf where the base has <= K candidates.
 * thk's search runs over the sorted keys of the smallest first tree node that holds the candidates
 * (as fs_block's walks) and is (AW + 1)-ary (each warp tests one pivot, a count CS over the tree, per
 * round) down to 512 keys, which a walk finishes. tau: Newton steps between breakpoints (tau_segment;
 * the AW warps compute the same steps), with the old breakpoint searches as the fallback (8 steps or
 * no progress; the emulation never needed it: dev/cuda-selection-fast).
 */
export function fsAnchorSource(AW: 1 | 4): KernelSource {
  return {
    name: `sparsek_fs_anchor_w${AW}`,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'],
    source: `${common()}
#define AW ${AW}
__device__ __forceinline__ void group_sync() {
#if AW == 1
  __syncwarp();
#else
  __syncthreads();
#endif
}
// Narrows [lo, hi], which holds the smallest m in [lo, hi) with pred(m) (hi if none; pred false then true
// as m grows; pred(hi) is never evaluated), until hi - lo <= stop. The anchor's AW warps call it; each
// evaluates pred at one pivot per round.
template <class Pred>
__device__ void narrow(int& lo, int& hi, Pred pred, int* flags, int stop) {
  const int w = (threadIdx.x >> 5) % AW;
  while (hi - lo > stop) {
    const int s = hi - lo, p = lo + ((w + 1) * s) / (AW + 1);
    const bool t = pred(p);
    if ((threadIdx.x & 31) == 0) flags[w] = t ? 1 : 0;
    group_sync();
    int nlo = lo, nhi = hi;
    for (int x = 0; x < AW; x++) {
      const int px = lo + ((x + 1) * s) / (AW + 1);
      if (flags[x]) { nhi = min(nhi, px); }
      else nlo = max(nlo, px + 1);
    }
    group_sync();
    lo = nlo;
    hi = max(nlo, nhi);
  }
}
template <class Pred>
__device__ int smallest_true(int lo, int hi, Pred pred, int* flags) {
  narrow(lo, hi, pred, flags, 0);
  return lo;
}
// The index of the need-th candidate (position < n, need >= 1) of keys[lo, hi) counting down from hi - 1,
// 128 keys a step (ballots); the caller knows it is there.
__device__ int kth_down(const u64* keys, int lo, int hi, int n, int need) {
  const int lane = threadIdx.x & 31;
  for (int top = hi; top > lo; top -= 128) {
    bool cand[4];
#pragma unroll
    for (int q = 0; q < 4; q++) { const int y = top - 1 - 32 * q - lane; cand[q] = y >= lo && pos_of(keys[y]) < n; }
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const unsigned bits = __ballot_sync(FULL, cand[q]);
      const int c = __popc(bits);
      if (need <= c) {
        const bool at = ((bits >> lane) & 1) && __popc(bits & ((2u << lane) - 1u)) == need;
        return top - 1 - 32 * q - (__ffs(__ballot_sync(FULL, at)) - 1);
      }
      need -= c;
    }
  }
  return lo;
}
// cs_lanes, and the candidates' keys nearest kappa: up, the smallest >= kappa (~0 if none), dn, the
// largest below it (0 if none: pads have key 0). A copy, not cs_lanes' base: nvcc keeps unused shuffles,
// so cs_lanes written on it cost fs_block 56 more shuffles (measured on the PTX, session 13).
struct CSN { int c; double s; u64 up, dn; };
template <int L>
__device__ CSN csn_lanes(const Tree& tr, int n, u64 kappa) {
  const int lane = threadIdx.x & (L - 1);
  const int m = (n + tr.d) / CHUNK;
  int c = 0;
  double s = 0.0;
  u64 up = ~0ull, dn = 0ull;
  if (lane < tr.NL && ((m >> lane) & 1)) {
    const int start = (m >> (lane + 1)) << (lane + 1);
    const int x0 = start * CHUNK, x1 = min(tr.Tx, x0 + (CHUNK << lane));
    const u64* k = tr.keys(lane);
    const double* p = tr.psum(lane);
    const int lb = lower_bound(k, x0, x1, kappa);
    c = x1 - lb;
    s = p[x1 - 1] - (lb > x0 ? p[lb - 1] : 0.0);
    if (lb < x1) up = k[lb];
    if (lb > x0) dn = k[lb - 1];
  }
  for (int j = max(0, m * CHUNK - tr.d) + lane; j < n; j += L) {
    const float v = tr.u[j];
    const u64 kj = key_of(v, j);
    if (kj >= kappa) { c++; s += (double)v; up = min(up, kj); }
    else dn = max(dn, kj);
  }
  for (int o = L / 2; o > 0; o >>= 1) {
    c += __shfl_xor_sync(FULL, c, o);
    s += __shfl_xor_sync(FULL, s, o);
    up = min(up, __shfl_xor_sync(FULL, up, o));
    dn = max(dn, __shfl_xor_sync(FULL, dn, o));
  }
  CSN r; r.c = c; r.s = s; r.up = up; r.dn = dn;
  return r;
}
__device__ __forceinline__ CSN shfl_csn(const CSN& x, int src) {
  CSN r; r.c = __shfl_sync(FULL, x.c, src); r.s = __shfl_sync(FULL, x.s, src);
  r.up = __shfl_sync(FULL, x.up, src); r.dn = __shfl_sync(FULL, x.dn, src);
  return r;
}
// Two counts side by side, at kappa0 and kappa1: half warps when NL <= 16, else one after the other.
__device__ void csn_pair(const Tree& tr, int n, u64 kappa0, u64 kappa1, CSN& a, CSN& b) {
  if (tr.NL <= 16) {
    const CSN x = csn_lanes<16>(tr, n, (threadIdx.x & 16) ? kappa1 : kappa0);
    a = shfl_csn(x, 0);
    b = shfl_csn(x, 16);
  } else {
    a = csn_lanes<32>(tr, n, kappa0);
    b = csn_lanes<32>(tr, n, kappa1);
  }
}
// The segment [lo, hi] between adjacent breakpoints (candidate values v and v - 1) where f(t) = sum
// clip(u - t, 0, 1) crosses K, by safeguarded Newton steps: f is linear between breakpoints, so one
// evaluation at t (counts and sums above t and at or above t + 1, with the nearest keys) gives t's
// segment and the root of its line. A root inside the segment ends the search; otherwise the next t is
// that root, or the midpoint of the bracket [a, b] of tau when the root leaves it. t0: the first guess.
// false after 8 evaluations, or without progress (the caller then searches the breakpoints).
__device__ bool tau_segment(const Tree& tr, int n, int K, double a, double b, double t0, double& lo, double& hi) {
  double t = fmin(b, fmax(a, t0));
  for (int it = 0; it < 8; it++) {
    CSN A, B;
    csn_pair(tr, n, key_gt(t), key_ge(t + 1.0), A, B);
    const int nF = A.c - B.c;
    const double sF = A.s - B.s;
    const double L = fmax(A.dn ? val_of(A.dn) : -DINF, B.dn ? val_of(B.dn) - 1.0 : -DINF);
    const double H = fmin(A.up != ~0ull ? val_of(A.up) : DINF, B.up != ~0ull ? val_of(B.up) - 1.0 : DINF);
    const double root = nF > 0 ? ((double)B.c + sF - (double)K) / (double)nF : B.c > K ? DINF : -DINF;
    if (root >= L && root <= H) { lo = L; hi = H; return true; }
    if (root > H) a = fmax(a, H);
    else b = fmin(b, L);
    const double nx = root > a && root < b ? root : 0.5 * (a + b);
    if (nx == t) return false;
    t = nx;
  }
  return false;
}
extern "C" __global__ void __launch_bounds__(${FS_ANCHOR_THREADS}) sparsek_fs_anchor_w${AW}(
    u64* athk,           // (BH, nb + 1)
    double* atau,        // (BH, nb + 1)
    const u64* tk,       // (NL, BH, Tx) tree keys
    const double* tp,    // (NL, BH, Tx) tree prefix sums
    const float* u,      // (BH, T)
    int BH, int T, int K, int W, int Tx, int d, int NL, int nb,
    int S, int phase) { // phase 0: every anchor; 1: b % S == 0 and nb; 2: the others, bracketed by those (K > 0)
  __shared__ int allFlags[${FS_ANCHOR_THREADS} / 32];
  const int gw = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / (32 * AW)); // this warp's anchor
  // phase 1 numbers its anchors b = 0, S, 2 S, ..., nb per row; phases 0 and 2 every b (2 skips phase 1's)
  const int per = phase == 1 ? nb / S + 1 + (nb % S != 0 ? 1 : 0) : nb + 1;
  if (gw >= BH * per) return; // (AW 1 only: with AW 4 a block is one anchor)
  int* flags = allFlags + (threadIdx.x >> 5) / AW * AW;
  const int row = gw / per, b = phase == 1 ? min((gw % per) * S, nb) : gw % per;
  if (phase == 2 && (b % S == 0 || b == nb)) return;
  const size_t ai = (size_t)row * (nb + 1) + b;
  Tree tr; tr.tk = tk; tr.tp = tp; tr.u = u + (size_t)row * T; tr.NL = NL; tr.BH = BH; tr.Tx = Tx; tr.d = d; tr.row = row;
  const int n = clampn((long long)max(CHUNK * b, K + W) - W + 1, T);
  const bool w0 = threadIdx.x % (32 * AW) == 0;
  if (n <= K) {
    if (w0) { athk[ai] = 0ull; atau[ai] = -DINF; }
    return;
  }
  // keys[first, N): the real positions of the first node holding x = j + d < n + d (pads, key 0, below)
  int L = 0;
  while (L < NL - 1 && (CHUNK << L) < n + d) L++;
  const u64* keys = tr.keys(L);
  const int N = min(Tx, CHUNK << L), first = N - (min(N, T + d) - d);
  // the r-th largest candidate key (r = max(K, 1)), keys[m]: m + 1 is the smallest index y with fewer than r
  // candidates at or above keys[y]. Phase 2: thk and tau never decrease with i, so the anchors b0 = b - b % S
  // and b1 = min(b0 + S, nb), made in phase 1, bracket this one's: m + 1 lies in [lb(thk_b0) + 1, lb(thk_b1) + 1].
  // Searches narrow that range to 512 keys; then a count above it and a walk down through it.
  const int r = max(K, 1);
  const auto below = [&](int y) { return cs_warp(tr, n, keys[y]).c < r; };
  const int b0 = b - b % S, b1 = min(b0 + S, nb);
  const size_t a0 = (size_t)row * (nb + 1) + b0, a1 = (size_t)row * (nb + 1) + b1;
  int ylo = first + 1, yhi = N;
  if (phase == 2) {
    ylo = max(first + 1, lower_bound(keys, first, N, athk[a0]) + 1);
    yhi = min(N, lower_bound(keys, first, N, athk[a1]) + 1);
  }
  narrow(ylo, yhi, below, flags, 512);
  const int m = kth_down(keys, ylo - 1, yhi, n, r - (yhi < N ? cs_warp(tr, n, keys[yhi]).c : 0));
  if (K == 0) {
    if (w0) { athk[ai] = ~0ull; atau[ai] = val_of(keys[m]); }
    return;
  }
  const u64 thk = keys[m];
  // the next candidate below it (positions < n; the node holds at most about as many later ones)
  int y = m - 1;
  while (pos_of(keys[y]) >= n) y--;
  const double next = val_of(keys[y]);
  const double theta = val_of(thk);
  double tau;
  if (next <= theta - 1.0) tau = next;
  else {
    // the segment where f crosses K: Newton steps from theta - 1 (phase 2: from between tau_b0 and tau_b1),
    // else (rare) two binary searches over the breakpoints, smallest y with f(g(keys[y])) <= K, g(v) = v
    // (entry) and v - 1 (exit)
    double ta = theta - 1.0, tb = theta, t0 = theta - 1.0;
    if (phase == 2) {
      const double l0 = atau[a0], l1 = atau[a1];
      ta = fmax(ta, l0);
      tb = fmin(tb, l1);
      if (l0 > -DINF) t0 = l0 + (l1 - l0) * (double)(b - b0) / (double)(b1 - b0);
    }
    double lo, hi;
    if (!tau_segment(tr, n, K, ta, tb, t0, lo, hi)) {
      int ys[2];
      for (int q = 0; q < 2; q++) {
        const auto settled = [&](int x) {
          const double t = val_of(keys[x]) - (double)q;
          const CS a = cs_warp(tr, n, key_gt(t)), c = cs_warp(tr, n, key_ge(t + 1.0));
          const int nF = a.c - c.c;
          const double sF = a.s - c.s, nFt = (double)nF * t, f = (double)c.c + sF - nFt;
          const double tol = 4.0 * 2.220446049250313e-16 * ((double)c.c + fabs(sF) + fabs(nFt));
          return f <= (double)K + tol;
        };
        ys[q] = smallest_true(first, N, settled, flags);
      }
      lo = -DINF;
      hi = DINF;
      if (ys[0] > first) lo = fmax(lo, val_of(keys[ys[0] - 1]));
      if (ys[1] > first) lo = fmax(lo, val_of(keys[ys[1] - 1]) - 1.0);
      if (ys[0] < N) hi = fmin(hi, val_of(keys[ys[0]]));
      if (ys[1] < N) hi = fmin(hi, val_of(keys[ys[1]]) - 1.0);
    }
    // on [lo, hi], f = |U| + sum_F u - |F| t with U = {u > t + 1}, F = {t < u <= t + 1} taken at t = lo
    if (!(lo < hi)) tau = lo;
    else {
      CSN a, c;
      csn_pair(tr, n, key_gt(lo), key_gt(lo + 1.0), a, c);
      const int nF = a.c - c.c;
      const double t = nF > 0 ? (a.s - c.s + (double)c.c - (double)K) / (double)nF : lo;
      tau = t < lo ? lo : t > hi ? hi : t;
    }
  }
  if (w0) { athk[ai] = thk; atau[ai] = tau; }
}
`,
  };
}

/** Threads of sparsek_fs_rows. */
export const FS_ROWS_THREADS = 256;

/**
 * The sel rows of the block starts i0 = 64 b (b < nb): all candidates while there are <= K, else those
 * with key >= thk_b, ascending, marked in a bitmap over x then compacted. Row of (row, b) at
 * sel + (row * rowsPerBh + (b << rowShift)) * K: compact (rowsPerBh = nb, rowShift 0) or the (T, K)
 * layout (rowsPerBh = T, rowShift 6). Only the rows of blocks b with b % f == 0 or b % g == 0 when their
 * readers tile 64 f and 64 g queries (the others are left as they were; their blocks return at once).
 * Launch: grid (nb, BH), 256 threads, dynamic shared 4 ceil(Tx / 32) bytes.
 */
export function fsRowsSource(): KernelSource {
  return {
    name: 'sparsek_fs_rows',
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'],
    source: `${common()}
#define NTHR ${FS_ROWS_THREADS}
extern "C" __global__ void __launch_bounds__(NTHR) sparsek_fs_rows(
    int* sel,            // rows, see above
    const u64* athk,     // (BH, nb + 1)
    const u64* tk,       // (NL, BH, Tx)
    const float* u,      // (BH, T)
    int BH, int T, int K, int W, int Tx, int d, int NL, int nb, int rowsPerBh, int rowShift,
    int f, int g) {      // the rows of blocks b with b % f == 0 or b % g == 0
  extern __shared__ unsigned bm[];
  __shared__ int wsum[NTHR / 32];
  const int b = blockIdx.x, row = blockIdx.y, tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  if (b % f != 0 && b % g != 0) return;
  int* out = sel + ((size_t)row * rowsPerBh + ((size_t)b << rowShift)) * K;
  const int n = clampn((long long)CHUNK * b - W + 1, T);
  if (n <= K) {
    for (int j = tid; j < n; j += NTHR) out[j] = j;
    return;
  }
  if (K == 0) return;
  const u64 thk = athk[(size_t)row * (nb + 1) + b];
  const float* ur = u + (size_t)row * T;
  const int nw = (n + d + 31) / 32;
  for (int x = tid; x < nw; x += NTHR) bm[x] = 0u;
  __syncthreads();
  const int m = (n + d) / CHUNK;
  for (int l = w; l < NL; l += NTHR / 32) {
    if (((m >> l) & 1) == 0) continue;
    const int start = (m >> (l + 1)) << (l + 1);
    const int x0 = start * CHUNK, x1 = min(Tx, x0 + (CHUNK << l));
    const u64* k = tk + ((size_t)l * BH + row) * Tx;
    const int lb = warp_lower_bound(k, x0, x1, thk);
    for (int x = lb + lane; x < x1; x += 32) {
      const int xp = pos_of(k[x]) + d;
      atomicOr(&bm[xp >> 5], 1u << (xp & 31));
    }
  }
  for (int j = max(0, m * CHUNK - d) + tid; j < n; j += NTHR) {
    if (key_of(ur[j], j) >= thk) atomicOr(&bm[(j + d) >> 5], 1u << ((j + d) & 31));
  }
  __syncthreads();
  // each thread a contiguous run of words; exclusive scan of their popcounts
  const int per = (nw + NTHR - 1) / NTHR, w0 = tid * per, w1 = min(nw, w0 + per);
  int c = 0;
  for (int x = w0; x < w1; x++) c += __popc(bm[x]);
  int incl = c;
  for (int o = 1; o < 32; o <<= 1) { const int y = __shfl_up_sync(FULL, incl, o); if (lane >= o) incl += y; }
  if (lane == 31) wsum[w] = incl;
  __syncthreads();
  int before = incl - c;
  for (int k2 = 0; k2 < w; k2++) before += wsum[k2];
  for (int x = w0; x < w1; x++) {
    unsigned bits = bm[x];
    while (bits) {
      const int bit = __ffs(bits) - 1;
      bits &= bits - 1;
      out[before++] = x * 32 + bit - d;
    }
  }
}
`,
  };
}

export interface BlockVariant {
  /** Also write every query's sel row ((T, K) layout, rows at 64 b already written by sparsek_fs_rows). */
  ALL: boolean;
  /** Lab only (dev/cuda-selection-fast): a last argument, u64 probe[FS_PROBES], gets clock64() cycles and step
   * counts per phase, summed over threads (slots 0..7) and their maxima (slots 8..15). */
  PROBE?: boolean;
}

/** The probe's phases (PROBE): cycles of each, then the walks' step counts. */
export const FS_PROBE_PHASES = ['prologue', 'newCandidates', 'thkWalk', 'tauWalk', 'nfree', 'thkSteps', 'tauSteps', 'block'] as const;

export function fsBlockName(v: BlockVariant): string {
  return `sparsek_fs_block${v.ALL ? '_all' : ''}${v.PROBE ? '_probe' : ''}`;
}

/**
 * Phase B: every query of the block [64 b, 64 b + 64), a thread each (see the file header).
 * Launch: grid (nb, BH), 64 threads.
 */
export function fsBlockSource(v: BlockVariant): KernelSource {
  const name = fsBlockName(v);
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32',
      ...(v.PROBE ? ['ptr' as const] : [])],
    source: `${common()}
#define ALL ${v.ALL ? 1 : 0}
#define PROBE ${v.PROBE ? 1 : 0}
#if PROBE
#define MARK(slot, t0) { const long long t1_ = clock64(); atomicAdd(probe + (slot), (u64)(t1_ - (t0))); atomicMax(probe + 8 + (slot), (u64)(t1_ - (t0))); t0 = t1_; }
#define COUNT(slot, n) { atomicAdd(probe + (slot), (u64)(n)); atomicMax(probe + 8 + (slot), (u64)(n)); }
#else
#define MARK(slot, t0)
#define COUNT(slot, n)
#endif
struct BlockP { int thkHi, gtLoC, ge1C, gtHiC; double gtLoS, ge1S; int yThk, yE0, yE1, yX0, yX1; };
extern "C" __global__ void __launch_bounds__(CHUNK) ${name}(
    double* tau,         // (BH, T)
    u64* thk,            // (BH, T)
    int* count,          // (BH, T)
    int* nfree,          // (BH, T)
    int* sel,            // (BH, T, K) when ALL (rows 64 b read, the others written); unused otherwise
    const u64* athk,     // (BH, nb + 1)
    const double* atau,  // (BH, nb + 1)
    const u64* tk,       // (NL, BH, Tx)
    const double* tp,    // (NL, BH, Tx)
    const float* u,      // (BH, T)
    int BH, int T, int K, int W, int Tx, int d, int NL, int nb${v.PROBE ? ', u64* probe' : ''}) {
  __shared__ BlockP P;
#if PROBE
  long long tq = clock64();
  const long long tb = tq;
#endif
  const int b = blockIdx.x, row = blockIdx.y, tid = threadIdx.x;
  const int i0 = CHUNK * b, i = i0 + tid;
  const size_t o = (size_t)row * T + i;
  Tree tr; tr.tk = tk; tr.tp = tp; tr.u = u + (size_t)row * T; tr.NL = NL; tr.BH = BH; tr.Tx = Tx; tr.d = d; tr.row = row;
  const float* ur = tr.u;
  const int iF = K + W;
  const int nlo = clampn((long long)max(i0, iF) - W + 1, T);
  // The walks run over the sorted keys of the smallest first node of the tree (positions x = j + d in
  // [0, 64 << L)) that holds every candidate of the block, not over the root: the root also holds every
  // later position, which early blocks (few candidates, thresholds moving fast) would step over by the
  // thousand. The walks skip positions >= n either way.
  const int nmax = clampn((long long)min(T - 1, i0 + CHUNK - 1) - W + 1, T);
  int L = 0;
  while (L < NL - 1 && (CHUNK << L) < nmax + d) L++;
  const u64* root = tr.keys(L);
  const int rootN = min(Tx, CHUNK << L);
  const size_t ab = (size_t)row * (nb + 1) + b;
  const double tauLo = atau[ab], tauHi = atau[ab + 1];
  const u64 thkHi = athk[ab + 1];
  // P (and the anchors) matter only when some query of the block is full
  const bool blockFull = K > 0 && nmax > K;
  const u64 kGtLo = key_gt(tauLo), kGe1 = key_ge(tauLo + 1.0), kGtHi = key_gt(tauHi);
  if (blockFull) {
    // What Cand_{a_b} contributes outside the walks: four counts (and sums) and five places in the
    // root, all independent, so they run side by side (the block's time is mostly their latency).
    // (selects rather than arrays, which dynamic indices would put in local memory)
    const auto kappa = [&](int q) { return q == 0 ? thkHi + 1ull : q == 1 ? kGtLo : q == 2 ? kGe1 : kGtHi; };
    const auto put = [&](int q, CS c) {
      if (q == 0) P.thkHi = c.c;
      else if (q == 1) { P.gtLoC = c.c; P.gtLoS = c.s; }
      else if (q == 2) { P.ge1C = c.c; P.ge1S = c.s; }
      else P.gtHiC = c.c;
    };
    if (tid < 5) {
      const u64 at = tid == 0 ? thkHi : tid == 1 ? kGtLo : tid == 2 ? kGtHi : tid == 3 ? kGe1 : key_gt(tauHi + 1.0);
      const int y = lower_bound(root, 0, rootN, at);
      if (tid == 0) P.yThk = y;
      else if (tid == 1) P.yE0 = y;
      else if (tid == 2) P.yE1 = y;
      else if (tid == 3) P.yX0 = y;
      else P.yX1 = y;
    }
    if (NL <= 16) { // a half warp per count: warp 0 the first two, warp 1 the others
      const CS c = cs_lanes<16>(tr, nlo, kappa(tid >> 4));
      if ((tid & 15) == 0) put(tid >> 4, c);
    } else {        // a warp per count, two each
      const int q = 2 * (tid >> 5);
      const CS c0 = cs_warp(tr, nlo, kappa(q)), c1 = cs_warp(tr, nlo, kappa(q + 1));
      if ((tid & 31) == 0) { put(q, c0); put(q + 1, c1); }
    }
  }
  __syncthreads();
  // The new candidates nlo + m (m < 64) in prefix sums over m, so that query i, whose new candidates
  // are m < n_i - nlo, reads its counts and sums at once: four counts packed a byte each (each <= 64),
  // and the two sums of values.
  __shared__ int pc[CHUNK + 1];
  __shared__ double pg[CHUNK + 1], pe[CHUNK + 1];
  if (blockFull) {
    const int lane = tid & 31, j = nlo + tid;
    int c = 0;
    double sg = 0.0, se = 0.0;
    if (j < T) {
      const float v = ur[j];
      const u64 k = key_of(v, j);
      c = (k > thkHi ? 1 : 0) | (k >= kGtLo ? 1 << 8 : 0) | (k >= kGe1 ? 1 << 16 : 0) | (k >= kGtHi ? 1 << 24 : 0);
      if (k >= kGtLo) sg = (double)v;
      if (k >= kGe1) se = (double)v;
    }
    for (int s = 1; s < 32; s <<= 1) {
      const int c2 = __shfl_up_sync(FULL, c, s);
      const double g2 = __shfl_up_sync(FULL, sg, s), e2 = __shfl_up_sync(FULL, se, s);
      if (lane >= s) { c += c2; sg += g2; se += e2; }
    }
    if (tid == 31) { pc[0] = c; pg[0] = sg; pe[0] = se; } // warp 0's total, for warp 1
    __syncthreads();
    if (tid >= 32) { c += pc[0]; sg += pg[0]; se += pe[0]; }
    __syncthreads();
    pc[tid + 1] = c;
    pg[tid + 1] = sg;
    pe[tid + 1] = se;
    if (tid == 0) { pc[0] = 0; pg[0] = 0.0; pe[0] = 0.0; }
    __syncthreads();
  }
#if PROBE
  if (tid == 0) MARK(0, tq) else tq = clock64();
#endif
  u64 myThk = 0ull; // thk_i for the rows (ALL)
  if (i < T) {
    const int n = clampn((long long)i - W + 1, T);
    if (n <= K) {
      tau[o] = -DINF; thk[o] = 0ull; count[o] = n; nfree[o] = 0;
    } else if (K == 0) {
      double mx = tauLo;
      for (int j = nlo; j < n; j++) mx = fmax(mx, (double)ur[j]);
      myThk = ~0ull;
      tau[o] = mx; thk[o] = ~0ull; count[o] = 0; nfree[o] = 0;
    } else {
      const int m = n - nlo, cc = pc[m]; // the query's new candidates: nlo + [0, m)
      const int aThk = P.thkHi + (cc & 255), gtLoC = P.gtLoC + ((cc >> 8) & 255);
      const int u0 = P.ge1C + ((cc >> 16) & 255), gtHi = P.gtHiC + (cc >> 24);
      const double gtLoS = P.gtLoS + pg[m], ge1S = P.ge1S + pe[m];
      MARK(1, tq)
      // thk_i: down the root from thk_hi, counting candidates
      int cnt = aThk;
      u64 tk_i = 0ull;
      for (int y = P.yThk; ; y--) {
        const u64 key = root[y];
        if (pos_of(key) < n && ++cnt == K) { tk_i = key; COUNT(5, P.yThk - y + 1) break; }
      }
      MARK(2, tq)
      // tau_i: up through the breakpoints in (tau_lo, tau_hi]
      double t_i;
      if (tauLo == tauHi) t_i = tauLo;
      else {
        int U = u0, nF = gtLoC - u0, pE = P.yE0, pX = P.yX0;
#if PROBE
        const int pE0 = pE, pX0 = pX;
#endif
        double sF = gtLoS - ge1S, cur = tauLo;
        for (;;) {
          while (pE < P.yE1 && pos_of(root[pE]) >= n) pE++;
          while (pX < P.yX1 && pos_of(root[pX]) >= n) pX++;
          const double tE = pE < P.yE1 ? val_of(root[pE]) : DINF;
          const double vX = pX < P.yX1 ? val_of(root[pX]) : DINF;
          const double tX = vX - 1.0;
          double tn = fmin(tE, tX);
          const bool last = tn >= tauHi;
          if (last) tn = tauHi;
          const double nFt = (double)nF * tn, f = (double)U + sF - nFt;
          const double tol = 4.0 * 2.220446049250313e-16 * ((double)U + fabs(sF) + fabs(nFt));
          if (f <= (double)K + tol || last) {
            const double t = nF > 0 ? (sF + (double)U - (double)K) / (double)nF : cur;
            t_i = t < cur ? cur : t > tn ? tn : t;
            COUNT(6, (pE - pE0) + (pX - pX0))
            break;
          }
          if (tE <= tX) { nF--; sF -= tE; pE++; }
          else { U--; nF++; sF += vX; pX++; }
          if (nF == 0) sF = 0.0;
          cur = tn;
        }
      }
      MARK(3, tq)
      // |F_i|: the walk ranges directly, the middle (tau_hi, tau_lo + 1) in aggregate
      int nf = 0;
      for (int y = P.yE0; y < P.yE1; y++) {
        const u64 key = root[y];
        const double v = val_of(key);
        if (pos_of(key) < n && v > t_i && v - t_i < 1.0) nf++;
      }
      for (int y = max(P.yX0, P.yE1); y < P.yX1; y++) {
        const u64 key = root[y];
        const double v = val_of(key);
        if (pos_of(key) < n && v > t_i && v - t_i < 1.0) nf++;
      }
      if (P.yX0 > P.yE1) nf += gtHi - u0;
      MARK(4, tq)
      myThk = tk_i;
      tau[o] = t_i; thk[o] = tk_i; count[o] = K; nfree[o] = nf;
    }
  }
#if ALL
  __shared__ u64 qthk[CHUNK];
  qthk[tid] = myThk;
  __syncthreads();
  // rows of the other queries, a warp each: Sel_{i0}, then the new candidates, those with key >= thk_i
  const int lane = tid & 31, n0 = clampn((long long)i0 - W + 1, T), c0 = min(n0, K);
  const int* srow = sel + ((size_t)row * T + i0) * K;
  for (int q = 1 + (tid >> 5); q < CHUNK && i0 + q < T; q += CHUNK / 32) {
    const int iq = i0 + q, nq = clampn((long long)iq - W + 1, T);
    const u64 tq = qthk[q];
    int* orow = sel + ((size_t)row * T + iq) * K;
    int written = 0;
    for (int base = 0; base < c0 + (nq - n0); base += 32) {
      const int x = base + lane;
      int j = -1;
      if (x < c0) j = srow[x];
      else if (x < c0 + (nq - n0)) j = n0 + (x - c0);
      const bool f = j >= 0 && key_of(ur[j], j) >= tq;
      const unsigned bal = __ballot_sync(FULL, f);
      if (f) orow[written + __popc(bal & ((1u << lane) - 1u))] = j;
      written += __popc(bal);
    }
  }
#else
  (void)myThk;
#endif
#if PROBE
  if (tid == 0) { long long t = tb; MARK(7, t) }
#endif
}
`,
  };
}

/**
 * Tree geometry of a row: leaf shift d, padded length Tx, stored levels NL (node sizes 64 << l). The tree
 * holds the positions that can be candidates, j < T - W (the last query's n), and at most 63 more: at
 * T = 64K, W = 512 its root is a node of 64K positions, not of 128K for the 63 positions past 64K - 63 that
 * no query's candidates reach (one merge launch and one level fewer). Real keys sit at x = j + d for j < T.
 */
export function fsGeometry(T: number, W: number): { d: number; Tx: number; NL: number; nb: number } {
  const d = (((W - 1) % FS_CHUNK) + FS_CHUNK) % FS_CHUNK;
  const Tx = Math.ceil((Math.max(1, Math.min(T, T - W)) + d) / FS_CHUNK) * FS_CHUNK;
  let NL = 1;
  while (FS_CHUNK << (NL - 1) < Tx) NL++;
  return { d, Tx, NL, nb: Math.ceil(T / FS_CHUNK) };
}
