// Tiled, tensor-core SparseK attention FORWARD (SPEC.md sections 3 and 4), used by CudaBackend under
// precision bf16 (variants and measurements: dev/cuda-attention-fast) on sm_80+ GPUs other than Hopper,
// which runs attention-wg.ts (wgmma) and shares this file's pieces (FWD_*, KEY_ROWS): bf16 q, k, v;
// fp32 scores u; fp32 accumulation; output bf16 or fp32, plus the log-sum-exp per row (what a backward
// needs). Not here: the selection (src/cuda/kernels/selection-fast.ts
// makes tau, the weakest selected key thk and the rows sel, which this reads), the backward, or any
// Hopper-only feature (wgmma, TMA): mma.sync m16n8k16 through inline PTX, so NVRTC needs no CUDA
// headers (the runtime passes no --include-path).
//
// One block per (BQ consecutive queries [i0, i0 + BQ), GH query heads of one KV head's group, batch);
// each head's warps own 16 WM rows each, from i0 + 16 WM w (WM 16-row tiles, sharing each K and V
// fragment). SPEC section 3's block property gives the block's key set, the same for its GH heads:
//   selected  Sel_{i0}, the first query's row (<= K positions, all <= i0 - W), gathered by index;
//   range     [max(0, i0 - W + 1), min(T, i0 + BQ)), contiguous: every window key of the block, and
//             the BQ - 1 newer candidates (i0 - W, i0 + BQ - 1 - W], which later queries may select.
// Since Sel_{i+1} is a subset of Sel_i plus the new candidate, this covers every query's Win ∪ Sel
// with no duplicates. Keys go through shared memory in tiles of BK = 64 (cp.async, STAGES deep,
// zero-filled past the end) and each tile is an FA2 step: S = Q K^T on tensor cores, the mask and
// gate rebuilt per (query i, key j) from per-key (u_j, j) and per-query (tau_i, thk_i):
//   j selected by i  <=>  j <= i - W  and  key(u_j, j) >= thk_i   (the CPU's lexicographic order;
//                         thk_i = 0 when every candidate is selected)
//   j in Win_i       <=>  i - W < j <= i                            gate 1
//   gate of a selected key  clip(u_j - tau_i, 0, 1)                 (fp32: tau_i rounded to float)
// then online softmax in the exp2 domain; the softmax sums every attended key's p, the value
// product takes p * gate (the gate is not renormalised, SPEC section 4), as bf16 for P V.
// Range tiles that every query of the block sees whole as window keys skip the mask entirely.
// With MASK 'rows' (what CudaBackend runs) that rule is not evaluated per pair: thk never decreases
// with i, so the block rows attending key j are one range [a_j, b_j), worked out once per block
// (gated from row g_j on), and each pair is an integer compare of its row.
//
// Fragment layouts (PTX ISA, mma.m16n8k16, g = lane / 4, t = lane % 4): A (16x16 row) regs
// {(g, 2t), (g+8, 2t), (g, 2t+8), (g+8, 2t+8)} pairs; B (16x8 col) {(2t, g), (2t+8, g)} pairs;
// C (16x8 fp32) {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}. K's B operand comes from ldmatrix,
// V's from ldmatrix.trans; shared rows are padded to HS + 8 bf16, so the 8 rows an ldmatrix phase
// reads start 4 banks apart (conflict-free).

import type { KernelSource } from '../runtime.js';
import { ORD_OF } from './selection.js';

/**
 * CUDA text: key_rows(), the per-key data of MASK 'rows' (also the Hopper forward's, attention-wg.ts). Needs
 * ord_of, u64 and BQ (the block's queries) defined before it.
 */
export const KEY_ROWS = `
#define RB (BQ > 255 ? 9 : 8)
#define RM ((1 << RB) - 1)
// The block rows attending key j (score uj), packed a | b << RB | g << 2 RB: rows [a, b) attend it, those
// from g on gated; RB bits a field (8 while a block has at most 255 rows). bthk holds the block rows' thk (~0 past T). thk never decreases with i, so the rows
// selecting j by its key are a prefix [0, hs).
__device__ __forceinline__ int key_rows(const u64* bthk, int j, float uj, bool selected, int i0, int W) {
  if (j < 0) return 0;
  // a range key: window rows [j - i0, j + W - i0), then, as a new candidate, the rows from j + W - i0 on
  // that select it (gated); one that is a window key of every block row needs no search
  const int wend = min(BQ, max(0, j + W - i0));
  if (!selected && wend == BQ) return min(BQ, max(0, j - i0)) | BQ << RB | BQ << (2 * RB);
  const u64 key = ((u64)ord_of(uj) << 32) | (unsigned)j;
  // rows [0, hs) select it: all when its key reaches the last row's thk, none below the first's, else a search
  int hs = key >= bthk[BQ - 1] ? BQ : 0, z = key >= bthk[0] ? BQ : 0;
  while (hs < z) {
    const int mid = (hs + z) >> 1;
    if (bthk[mid] <= key) hs = mid + 1;
    else z = mid;
  }
  if (selected) return hs << RB; // Sel_{i0}: selected (and gated) by rows [0, hs)
  return min(BQ, max(0, j - i0)) | max(wend, hs) << RB | wend << (2 * RB);
}
`;

/**
 * CUDA text: raise_max(), one row's online-softmax step shared by the forward kernels (this file's, attention-wg.ts's
 * and the wgmma lab's). Needs ex2 and FINF defined before it.
 */
export const RAISE_MAX = `
// a row's running max m (exp2 domain) raised to include the tile's max mx; l scaled by corr = 2^(m_old - mu);
// returns mu, the max the tile's p are taken against (0 for a row with no key yet: p = 0, corr = 1; when
// m was -inf, corr is 0 and o, l are 0 anyway)
__device__ __forceinline__ float raise_max(float& m, float& l, float mx, float& corr) {
  const float mn = fmaxf(m, mx);
  const float mu = mn == -FINF ? 0.f : mn;
  corr = ex2(m - mu);
  m = mn;
  l *= corr;
  return mu;
}
`;

/** The forward kernels' parameters (this file's and attention-wg.ts's), as launch() encodes them and in C. */
export const FWD_PARAMS: KernelSource['params'] = ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32', 'f32'];
export const FWD_PARAMS_C = `    void* out_,                       // (B, NH, T, HS) bf16 or fp32
    float* lse,                       // (B, NH, T): natural log sum_j exp(s_ij); -inf for a row without keys
    const bf16* __restrict__ q,       // (B, NH, T, HS)
    const bf16* __restrict__ k,       // (B, NKV, T, HS)
    const bf16* __restrict__ v,       // (B, NKV, T, HS)
    const float* __restrict__ u,      // (B, NKV, T)
    const double* __restrict__ tau,   // (B, NKV, T)
    const u64* __restrict__ thk,      // (B, NKV, T)  key of Sel_i's weakest member, 0 when all are selected
    const int* __restrict__ count,    // (B, NKV, T) (not read: a block needs only min(K, n_i0))
    const int* __restrict__ sel,      // (B, NKV, ceil(T / 64), K) ascending positions: the rows of queries 64 r
    int T, int NH, int NKV, int K, int W, float scale`;

/**
 * CUDA text: a forward block's key set (SPEC section 3's block property), nsel keys of Sel_{i0} then the
 * range [lo, hi), in nT tiles of BK, and key_pos(x). Needs BQ, BK, b, h, i0 and kv0.
 */
export const FWD_KEY_SET = `  // the block's keys: nsel selected (row i0 of sel), then the range [lo, hi); |Sel_i0| = min(K, n_i0) and
  // n_i0 = lo, so nsel needs no load of count (and the key data's chain of dependent loads is one shorter)
  const int lo = max(0, i0 - W + 1), hi = min(T, i0 + BQ);
  const int nsel = min(K, lo);
  const int* srow = sel + (((size_t)b * NKV + h) * ((T + 63) / 64) + i0 / 64) * K; // row i0 (i0 % 64 == 0)
  const int nselT = (nsel + BK - 1) / BK, nT = nselT + (hi - lo + BK - 1) / BK;
  // position of the block's x-th key (x = tile * BK + row), -1 past the end of its part; whether it is in Sel_i0
  auto key_pos = [&](int x) -> int {
    const int t = x / BK, r = x % BK;
    if (t < nselT) return x < nsel ? srow[x] : -1;
    const int j = lo + (t - nselT) * BK + r;
    return j < hi ? j : -1;
  };
  auto key_is_sel = [&](int x) { return x < nselT * BK; };
`;

/**
 * CUDA text: every key of a forward block's FWD_KEY_SET (or another key set with key_pos and key_is_sel)
 * into shared memory (META 'all'): mpos, mu_, and with MASK_ROWS its row ranges (mrng, key_rows()), else
 * its selection key (mkey). Needs nkeys, NTHR, tid, u, kv0, and with MASK_ROWS bthk and W.
 */
export const FWD_KEY_DATA = `  // every key's data, 4 independent loads of sel then 4 of u per thread and batch: position, u, and
  // with MASK_ROWS the block rows [a, b) that attend it, from g on gated, else its key
  for (int base = 0; base < nkeys; base += 4 * NTHR) {
    int j[4];
    float uu[4];
#pragma unroll
    for (int a = 0; a < 4; a++) { const int x = base + a * NTHR + tid; j[a] = x < nkeys ? key_pos(x) : -1; }
#pragma unroll
    for (int a = 0; a < 4; a++) uu[a] = j[a] >= 0 ? u[kv0 + j[a]] : 0.f;
#pragma unroll
    for (int a = 0; a < 4; a++) {
      const int x = base + a * NTHR + tid;
      if (x >= nkeys) continue;
      mpos[x] = j[a];
      mu_[x] = uu[a];
#if MASK_ROWS
      mrng[x] = key_rows(bthk, j[a], uu[a], key_is_sel(x), i0, W);
#else
      mkey[x] = j[a] >= 0 ? (((u64)ord_of(uu[a]) << 32) | (unsigned)j[a]) : 0ull;
#endif
    }
  }
`;

export interface FastForwardVariant {
  HS: 64 | 128;
  /** Queries per block: 16 WM per warp. */
  BQ: 64 | 128;
  /**
   * Row tiles of 16 queries per warp (default 1). With 2, each K and V fragment a warp loads from
   * shared memory feeds two MMAs instead of one (FlashAttention-2's 128 x 64 tile with 4 warps),
   * halving shared-memory reads per MMA, and the block's keys are shared by twice as many queries.
   */
  WM?: 1 | 2;
  /**
   * Query heads per block (default 1), consecutive heads of one KV head's group (GQA), which share the
   * group's selection and so the block's keys and mask: each K and V tile is read once for GH heads.
   * Must divide NH / NKV. Launch grid (ceil(T / BQ), NH / GH, B).
   */
  GH?: 1 | 2 | 4;
  OUT: 'bf16' | 'f32';
  /**
   * Where each tile's per-key data (j, u_j, key) comes from. 'tile': loaded by the block while it
   * issues the tile's copies (two dependent global loads, sel row then u, on the critical path of
   * every tile; the first version). 'all': every key of the block loaded into shared memory once,
   * at the start, in batches of independent loads. Default 'all'.
   */
  META?: 'tile' | 'all';
  /** cp.async pipeline depth (K/V tiles in flight); 'tile' supports 2 only. Default 2. */
  STAGES?: 2 | 3;
  /** exp2 as ex2.approx.ftz (FlashAttention's choice) instead of exp2f. Default true. */
  FASTEXP?: boolean;
  /** __launch_bounds__ minimum blocks per SM (0: none): caps registers to raise occupancy. */
  MINB?: number;
  /**
   * How a tile's per-element mask is decided. 'key': from the key (j, u_j) and the query's thk_i and
   * position, per element (the first version). 'rows': from the block rows that attend each key, a
   * range [a_j, b_j) worked out once per key at the start (thk never decreases with i, so the rows
   * selecting a key are a prefix, and with the window rows they form one range), plus the first row
   * g_j whose pair is gated; the scores are scaled inside the exp2's argument (one FMA) and the gate
   * is a saturating subtraction. 'rows' needs META 'all'. Default 'key'.
   */
  MASK?: 'key' | 'rows';
  /**
   * Rescale lazily (FlashAttention-4's rule): keep a warp's running row maxima, and skip rescaling o
   * and l, while no new tile raises one by more than 8 in the exp2 domain. Default false.
   */
  LAZY?: boolean;
}

function full(o: FastForwardVariant): Required<FastForwardVariant> {
  return { META: 'all', STAGES: 2, FASTEXP: true, MINB: 0, MASK: 'key', WM: 1, GH: 1, LAZY: false, ...o };
}

export const BK = 64;

export function fastForwardName(v: FastForwardVariant): string {
  const o = full(v);
  return `spk_fwd_tc_hs${o.HS}_bq${o.BQ}_${o.OUT}_${o.META}_s${o.STAGES}${o.FASTEXP ? '_fx' : ''}${o.MINB ? `_mb${o.MINB}` : ''}${o.MASK === 'rows' ? '_rows' : ''}${o.WM === 2 ? '_wm2' : ''}${o.GH > 1 ? `_gh${o.GH}` : ''}${o.LAZY ? '_lazy' : ''}`;
}

/** Threads per block: a warp per 16 WM queries of each of the GH heads. */
export function fastForwardThreads(v: FastForwardVariant): number {
  return ((32 * v.BQ) / (16 * (v.WM ?? 1))) * (v.GH ?? 1);
}

/** Tiles of BK keys a block may have: Sel_{i0} (<= K) and the range (<= W + BQ - 1). */
export function fastForwardMaxTiles(v: FastForwardVariant, K: number, W: number): number {
  return Math.ceil(K / BK) + Math.ceil((W + v.BQ - 1) / BK);
}

/**
 * Dynamic shared memory bytes: the stages of K and V tiles plus per-key data (16 bytes a key; with
 * MASK 'rows', 12 bytes a key and the block's thk values).
 */
export function fastForwardShared(v: FastForwardVariant, K: number, W: number): number {
  const o = full(v);
  const tiles = o.STAGES * 2 * BK * (o.HS + 8) * 2;
  if (o.MASK === 'rows') return tiles + 8 * o.BQ + fastForwardMaxTiles(o, K, W) * BK * 12;
  return tiles + (o.META === 'tile' ? 2 * BK * 16 : fastForwardMaxTiles(o, K, W) * BK * 16);
}

/**
 * Launch: grid (ceil(T / BQ), NH / GH, B), block fastForwardThreads(o), dynamic shared fastForwardShared(o)
 * (opt in above 48 KiB with cuFuncSetAttribute). Requires HS-aligned rows (16-byte) in q, k, v.
 */
export function fastForwardSource(v: FastForwardVariant): KernelSource {
  const o = full(v);
  if (o.META === 'tile' && o.STAGES !== 2) throw new Error('META tile supports STAGES 2 only');
  if (o.MASK === 'rows' && o.META !== 'all') throw new Error('MASK rows needs META all');
  const name = fastForwardName(o);
  return {
    name,
    params: FWD_PARAMS,
    source: `
typedef unsigned long long u64;
typedef unsigned short bf16;
typedef unsigned int u32;
#define HS ${o.HS}
#define BQ ${o.BQ}
#define BK ${BK}
#define WM ${o.WM}             // 16-row tiles per warp
#define GH ${o.GH}             // query heads per block
#define NWPH (BQ / (16 * WM))  // warps per head
#define NWARP (NWPH * GH)
#define NTHR (NWARP * 32)
#define LDS (HS + 8)           // shared row stride in bf16
#define KS (HS / 16)           // k-steps of Q K^T
#define NT (BK / 8)            // n-tiles of S (keys)
#define NO (HS / 8)            // n-tiles of O (head dims)
#define CPR (HS / 8)           // 16-byte chunks per row
#define OUT_BF16 ${o.OUT === 'bf16' ? 1 : 0}
#define META_ALL ${o.META === 'all' ? 1 : 0}
#define STAGES ${o.STAGES}
#define FASTEXP ${o.FASTEXP ? 1 : 0}
#define MASK_ROWS ${o.MASK === 'rows' ? 1 : 0}
#define LAZY ${o.LAZY ? 1 : 0}
#define FULL 0xffffffffu
#define FINF __int_as_float(0x7f800000)

${ORD_OF}__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N)); }
__device__ __forceinline__ void ldsm4(u32 a, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a));
}
__device__ __forceinline__ void ldsm4t(u32 a, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a));
}
__device__ __forceinline__ void mma(float* c, const u32* a, u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ float ex2(float x) {
#if FASTEXP
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}
${RAISE_MAX}
${KEY_ROWS}
// clip(a - b, 0, 1) in one instruction (a gate)
__device__ __forceinline__ float sat_sub(float a, float b) {
  float y;
  asm("sub.sat.f32 %0, %1, %2;" : "=f"(y) : "f"(a), "f"(b));
  return y;
}
// two floats to bf16x2, lo in the low half (the lower address)
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
  u32 d;
  asm("cvt.rn.bf16x2.f32 %0, %2, %1;" : "=r"(d) : "f"(lo), "f"(hi));
  return d;
}

// A tile's per-key data: key (ord(u_j) << 32) | j, the selection's order (0 for padding); u_j; j (-1
// for padding). With META_ALL these point into arrays over all the block's keys.
struct Meta {
  const u64* key;
  const float* u;
  const int* pos;
  const int* rng; // MASK_ROWS: a_j | b_j << RB | g_j << 2 RB, block rows (key_rows())
};

// Tile kinds: selected keys of Sel_{i0}; range keys needing the per-element mask; range keys that
// are window keys of every query in the block.
#define KIND_SEL 0
#define KIND_EDGE 1
#define KIND_WIN 2

template <int KIND>
__device__ __forceinline__ void tile_step(
    float (&o)[WM][NO][4], float (&m)[WM][2], float (&l)[WM][2], const u32 (&qa)[WM][KS][4],
    const bf16* Kst, const bf16* Vst, Meta mt,
    const int (&qi)[WM][2], const u64 (&qthk)[WM][2], const float (&qtau)[WM][2], int i0, int W, float sl) {
  const int lane = threadIdx.x & 31, t4 = lane & 3;
  float s[WM][NT][4];
#pragma unroll
  for (int mw = 0; mw < WM; mw++)
#pragma unroll
    for (int n = 0; n < NT; n++) s[mw][n][0] = s[mw][n][1] = s[mw][n][2] = s[mw][n][3] = 0.f;
  const int mi = lane >> 3, r8 = lane & 7;
#pragma unroll
  for (int ks = 0; ks < KS; ks++) {
#pragma unroll
    for (int n = 0; n < NT; n += 2) {
      u32 b0, b1, b2, b3;
      ldsm4(smem_addr(Kst + ((n + (mi >> 1)) * 8 + r8) * LDS + ks * 16 + (mi & 1) * 8), b0, b1, b2, b3);
#pragma unroll
      for (int mw = 0; mw < WM; mw++) {
        mma(s[mw][n], qa[mw][ks], b0, b1);
        mma(s[mw][n + 1], qa[mw][ks], b2, b3);
      }
    }
  }
  float mx[WM][2];
#if MASK_ROWS
  // mask (raw scores, -inf outside each key's rows); row max, then scaled into the exp2 domain
  int rl[WM][2];
#pragma unroll
  for (int mw = 0; mw < WM; mw++) {
    rl[mw][0] = (int)((threadIdx.x >> 5) % NWPH) * 16 * WM + mw * 16 + (lane >> 2);
    rl[mw][1] = rl[mw][0] + 8;
  }
#pragma unroll
  for (int mw = 0; mw < WM; mw++) {
    mx[mw][0] = mx[mw][1] = -FINF;
#pragma unroll
    for (int n = 0; n < NT; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int rr = e >> 1, c = n * 8 + 2 * t4 + (e & 1);
        float x = s[mw][n][e];
        if (KIND != KIND_WIN) {
          const int rg = mt.rng[c];
          const bool in = KIND == KIND_SEL ? rl[mw][rr] < ((rg >> RB) & RM) : rl[mw][rr] >= (rg & RM) && rl[mw][rr] < ((rg >> RB) & RM);
          if (!in) x = -FINF;
        }
        s[mw][n][e] = x;
        mx[mw][rr] = fmaxf(mx[mw][rr], x);
      }
    }
  }
  const float mxs = sl; // the max of raw scores, into the exp2 domain
#else
  // mask and scale; row max
#pragma unroll
  for (int mw = 0; mw < WM; mw++) {
    mx[mw][0] = mx[mw][1] = -FINF;
#pragma unroll
    for (int n = 0; n < NT; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int rr = e >> 1, c = n * 8 + 2 * t4 + (e & 1);
        float x = s[mw][n][e] * sl;
        if (KIND != KIND_WIN) {
          const int j = mt.pos[c];
          bool in;
          if (KIND == KIND_SEL) {
            in = j >= 0 && mt.key[c] >= qthk[mw][rr];
          } else {
            const int i = qi[mw][rr];
            in = j >= 0 && j <= i && (j > i - W || (j > i0 - W && mt.key[c] >= qthk[mw][rr]));
          }
          if (!in) x = -FINF;
        }
        s[mw][n][e] = x;
        mx[mw][rr] = fmaxf(mx[mw][rr], x);
      }
    }
  }
  const float mxs = 1.f;
#endif
  float mu[WM][2];
#pragma unroll
  for (int mw = 0; mw < WM; mw++)
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      float x = mx[mw][rr];
      x = fmaxf(x, __shfl_xor_sync(FULL, x, 1));
      x = fmaxf(x, __shfl_xor_sync(FULL, x, 2));
      mx[mw][rr] = x * mxs;
    }
#if LAZY
  // keep the running max while no row of the warp grew it by more than 8 (p <= 2^8: no overflow in
  // l or in bf16 P), and skip the rescale; false for a row whose max is still -inf (NaN or +inf)
  bool keep = true;
#pragma unroll
  for (int mw = 0; mw < WM; mw++)
#pragma unroll
    for (int rr = 0; rr < 2; rr++) keep = keep && mx[mw][rr] - m[mw][rr] <= 8.f;
  if (__all_sync(FULL, keep)) {
#pragma unroll
    for (int mw = 0; mw < WM; mw++) mu[mw][0] = m[mw][0], mu[mw][1] = m[mw][1];
  } else
#endif
#pragma unroll
  for (int mw = 0; mw < WM; mw++) {
    float corr[2];
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      mu[mw][rr] = raise_max(m[mw][rr], l[mw][rr], mx[mw][rr], corr[rr]);
    }
#pragma unroll
    for (int n = 0; n < NO; n++) {
      o[mw][n][0] *= corr[0]; o[mw][n][1] *= corr[0];
      o[mw][n][2] *= corr[1]; o[mw][n][3] *= corr[1];
    }
  }
  u32 pa[WM][BK / 16][4];
#pragma unroll
  for (int mw = 0; mw < WM; mw++) {
#pragma unroll
    for (int n = 0; n < NT; n++) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int c = n * 8 + 2 * t4 + (e & 1);
#if MASK_ROWS
        p[e] = ex2(fmaf(s[mw][n][e], sl, -mu[mw][e >> 1]));
        l[mw][e >> 1] += p[e];
        if (KIND == KIND_SEL) p[e] *= sat_sub(mt.u[c], qtau[mw][e >> 1]);
        if (KIND == KIND_EDGE && rl[mw][e >> 1] >= (mt.rng[c] >> (2 * RB))) p[e] *= sat_sub(mt.u[c], qtau[mw][e >> 1]);
#else
        p[e] = ex2(s[mw][n][e] - mu[mw][e >> 1]);
        l[mw][e >> 1] += p[e];
        if (KIND == KIND_SEL) p[e] *= fminf(fmaxf(mt.u[c] - qtau[mw][e >> 1], 0.f), 1.f);
        if (KIND == KIND_EDGE && mt.pos[c] <= qi[mw][e >> 1] - W) p[e] *= fminf(fmaxf(mt.u[c] - qtau[mw][e >> 1], 0.f), 1.f);
#endif
      }
      pa[mw][n >> 1][(n & 1) * 2 + 0] = pack_bf16(p[0], p[1]);
      pa[mw][n >> 1][(n & 1) * 2 + 1] = pack_bf16(p[2], p[3]);
    }
  }
  // O += (P * gate) V
#pragma unroll
  for (int kk = 0; kk < BK / 16; kk++) {
#pragma unroll
    for (int n = 0; n < NO; n += 2) {
      u32 b0, b1, b2, b3;
      ldsm4t(smem_addr(Vst + (kk * 16 + (mi & 1) * 8 + r8) * LDS + (n + (mi >> 1)) * 8), b0, b1, b2, b3);
#pragma unroll
      for (int mw = 0; mw < WM; mw++) {
        mma(o[mw][n], pa[mw][kk], b0, b1);
        mma(o[mw][n + 1], pa[mw][kk], b2, b3);
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(NTHR${o.MINB ? `, ${o.MINB}` : ''}) ${name}(
${FWD_PARAMS_C}) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem);        // [STAGES][BK][LDS]
  bf16* Vs = Ks + STAGES * BK * LDS;               // [STAGES][BK][LDS]
  // per-key data: [2 stages][BK] (tile) or [nT * BK] (all): keys, then u, then positions; with
  // MASK_ROWS the block's thk values [BQ], then u, positions and row ranges
  u64* mkey = reinterpret_cast<u64*>(Vs + STAGES * BK * LDS);
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g8 = lane >> 2, t4 = lane & 3;
  // warp w: head hq of the block's GH, its rows from 16 WM (w % NWPH)
  const int i0 = blockIdx.x * BQ, hq = blockIdx.y * GH + w / NWPH, wq = w % NWPH, b = blockIdx.z;
  const int h = blockIdx.y * GH / (NH / NKV);
  const size_t qrow0 = ((size_t)b * NH + hq) * T;
  const size_t kv0 = ((size_t)b * NKV + h) * T;
  const bf16* kb = k + kv0 * HS;
  const bf16* vb = v + kv0 * HS;
  const float sl = scale * 1.4426950408889634f;

${FWD_KEY_SET}#if META_ALL
  const int nkeys = nT * BK;
#if MASK_ROWS
  u64* bthk = mkey;
  float* mu_ = reinterpret_cast<float*>(bthk + BQ);
  int* mpos = reinterpret_cast<int*>(mu_ + nkeys);
  int* mrng = mpos + nkeys;
  for (int r = tid; r < BQ; r += NTHR) bthk[r] = i0 + r < T ? thk[kv0 + i0 + r] : ~0ull;
  __syncthreads();
#else
  float* mu_ = reinterpret_cast<float*>(mkey + nkeys);
  int* mpos = reinterpret_cast<int*>(mu_ + nkeys);
#endif
${FWD_KEY_DATA}  __syncthreads();
#if MASK_ROWS
  auto meta_of = [&](int t, int st) -> Meta { return Meta{nullptr, mu_ + t * BK, mpos + t * BK, mrng + t * BK}; };
#else
  auto meta_of = [&](int t, int st) -> Meta { return Meta{mkey + t * BK, mu_ + t * BK, mpos + t * BK, nullptr}; };
#endif
#else
  float* mu_ = reinterpret_cast<float*>(mkey + 2 * BK);
  int* mpos = reinterpret_cast<int*>(mu_ + 2 * BK);
  auto meta_of = [&](int t, int st) -> Meta { return Meta{mkey + st * BK, mu_ + st * BK, mpos + st * BK, nullptr}; };
#endif

  auto issue = [&](int t, int st) {
    bf16* kd = Ks + st * BK * LDS;
    bf16* vd = Vs + st * BK * LDS;
    for (int x = tid; x < BK * CPR; x += NTHR) {
      const int r = x / CPR, cc = x % CPR;
#if META_ALL
      const int j = mpos[t * BK + r];
#else
      const int j = key_pos(t * BK + r);
#endif
      const int bytes = j >= 0 ? 16 : 0;
      const size_t off = (size_t)(j >= 0 ? j : 0) * HS + cc * 8;
      cp_async16(smem_addr(kd + r * LDS + cc * 8), kb + off, bytes);
      cp_async16(smem_addr(vd + r * LDS + cc * 8), vb + off, bytes);
    }
#if !META_ALL
    for (int r = tid; r < BK; r += NTHR) {
      const int j = key_pos(t * BK + r);
      const float uj = j >= 0 ? u[kv0 + j] : 0.f;
      mpos[st * BK + r] = j;
      mu_[st * BK + r] = uj;
      mkey[st * BK + r] = j >= 0 ? (((u64)ord_of(uj) << 32) | (unsigned)j) : 0ull;
    }
#endif
    cp_commit();
  };

  for (int t = 0; t < STAGES - 1 && t < nT; t++) issue(t, t);

  // this thread's query rows (two per 16-row tile) and their Q fragments
  int qi[WM][2];
  u64 qthk[WM][2];
  float qtau[WM][2];
  u32 qa[WM][KS][4];
  float o[WM][NO][4];
  float m[WM][2], l[WM][2];
#pragma unroll
  for (int mw = 0; mw < WM; mw++) {
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      const int i = i0 + (wq * WM + mw) * 16 + g8 + rr * 8;
      qi[mw][rr] = i;
      const bool ok = i < T;
      qthk[mw][rr] = ok ? thk[kv0 + i] : ~0ull;
      qtau[mw][rr] = ok ? (float)tau[kv0 + i] : FINF;
      m[mw][rr] = -FINF;
      l[mw][rr] = 0.f;
    }
    const u32* q0 = reinterpret_cast<const u32*>(q + (qrow0 + min(qi[mw][0], T - 1)) * HS);
    const u32* q1 = reinterpret_cast<const u32*>(q + (qrow0 + min(qi[mw][1], T - 1)) * HS);
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
      qa[mw][ks][0] = q0[ks * 8 + t4];
      qa[mw][ks][1] = q1[ks * 8 + t4];
      qa[mw][ks][2] = q0[ks * 8 + 4 + t4];
      qa[mw][ks][3] = q1[ks * 8 + 4 + t4];
    }
#pragma unroll
    for (int n = 0; n < NO; n++) o[mw][n][0] = o[mw][n][1] = o[mw][n][2] = o[mw][n][3] = 0.f;
  }

  for (int t = 0, st = 0; t < nT; t++, st = st + 1 == STAGES ? 0 : st + 1) {
    if (t + STAGES - 1 < nT) {
      const int sn = st == 0 ? STAGES - 1 : st - 1; // (t + STAGES - 1) % STAGES
      issue(t + STAGES - 1, sn);
    }
    const int pending = min(nT - 1 - t, STAGES - 1); // groups after tile t's that may be in flight
    if (pending >= 2) cp_wait<2>();
    else if (pending == 1) cp_wait<1>();
    else cp_wait<0>();
    __syncthreads();
    const bf16* Kst = Ks + st * BK * LDS;
    const bf16* Vst = Vs + st * BK * LDS;
    if (t < nselT) {
      tile_step<KIND_SEL>(o, m, l, qa, Kst, Vst, meta_of(t, st), qi, qthk, qtau, i0, W, sl);
    } else {
      const int a = lo + (t - nselT) * BK, z = a + BK - 1; // the tile's key range
      // whole tile in Win_i of every query i of the block: z <= i0 and a > i0 + BQ - 1 - W, no padding
      if (z <= i0 && a > i0 + BQ - 1 - W && z < hi) tile_step<KIND_WIN>(o, m, l, qa, Kst, Vst, meta_of(t, st), qi, qthk, qtau, i0, W, sl);
      else tile_step<KIND_EDGE>(o, m, l, qa, Kst, Vst, meta_of(t, st), qi, qthk, qtau, i0, W, sl);
    }
    __syncthreads();
  }

#pragma unroll
  for (int mw = 0; mw < WM; mw++) {
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      float L = l[mw][rr];
      L += __shfl_xor_sync(FULL, L, 1);
      L += __shfl_xor_sync(FULL, L, 2);
      const int i = qi[mw][rr];
      if (i >= T) continue;
      const float inv = L > 0.f ? 1.f / L : 0.f;
      const size_t row = qrow0 + i;
#pragma unroll
      for (int n = 0; n < NO; n++) {
        const float x0 = o[mw][n][2 * rr] * inv, x1 = o[mw][n][2 * rr + 1] * inv;
        const int d = n * 8 + 2 * t4;
#if OUT_BF16
        reinterpret_cast<u32*>(out_)[(row * HS + d) >> 1] = pack_bf16(x0, x1);
#else
        float2 pr;
        pr.x = x0;
        pr.y = x1;
        reinterpret_cast<float2*>(out_)[(row * HS + d) >> 1] = pr;
#endif
      }
      if (t4 == 0) lse[row] = L > 0.f ? (m[mw][rr] + log2f(L)) * 0.6931471805599453f : -FINF;
    }
  }
}
`,
  };
}
