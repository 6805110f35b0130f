// Hopper (sm_90a) wgmma SparseK attention FORWARD with NC consumer warpgroups a block and mbarrier
// pipelining, what CudaBackend runs on Hopper (measurements: dev/cuda-attention-wgmma/README.md). Same
// semantics, parameters and outputs as the mma.sync kernel for other GPUs (attention-tc.ts,
// fastForwardSource, whose header comment defines the key set, the mask as per-key block row ranges
// and the gate); grid (ceil(T / BQ), NH / GH, B), block 128 NC threads.
//
// What differs from the lab's first wgmma forward (dev/cuda-attention-wgmma/kernel.ts: one warpgroup,
// 64 queries, a __syncthreads per tile):
// - BQ = 64 NC queries a block. Warpgroup g owns rows 64 g .. 64 g + 63 and its own Q tile; all NC
//   share each K/V tile, so the block reads its keys once for 64 NC queries (the production kernel's
//   reason for 128 queries a block: each gathered row costs L2 bandwidth). With GH = 2 (GQA) the block
//   takes 64 NC / 2 positions of two heads of a group instead: warpgroup g owns rows 64 (g % (NC / 2)) ..
//   of head 2 blockIdx.y + g / (NC / 2), and the key set and masks, being the group's, serve both.
// - The mask is MASK 'rows' (per key j, the block rows [a_j, b_j) that attend it, from g_j on gated,
//   worked out once per block), with lazy rescaling (skip o *= corr while no row max grows by > 8).
// - No barrier of the whole block in the loop. Each stage has two mbarriers, both expecting every
//   thread: full (the stage holds its tile) and empty (every warpgroup has read it). So a warpgroup
//   may run ahead of another by about a tile, and one's softmax overlaps the other's matrix work.
// - All threads copy (cp.async, 16 bytes a chunk, gathered rows). Each thread's copies of a tile arrive
//   on the stage's full barrier by themselves when they land (cp.async.mbarrier.arrive.noinc), so no
//   thread waits for its own copies and full completes when the data is there, not when the slowest
//   warpgroup gets round to announcing it (session 15: 1.27 to 1.11 ms at 64K, HS 64). A consumer fences
//   to the async proxy after its wait on full. The stage of tile t - LAG is refilled (tile t + STAGES - LAG)
//   at iteration t, once empty says tile t - LAG is read, while this warpgroup's wgmmas run (LAG 1 at HS 64,
//   2 at HS 128). Tiles are in the 128-byte swizzled layout (wgmma.ts SW128).
//
// Per iteration t of a warpgroup (OVERLAP, as kernel.ts): wait full[t + 1], fence; issue S_{t+1} and
// P V_t; refill; wait S_{t+1}; mask and softmax of t + 1; wait P V_t; arrive empty[t]; o *= corr (when
// needed) and pack P_{t+1}.

import type { KernelSource } from '../runtime.js';
import { ORD_OF } from './selection.js';
import { FWD_KEY_DATA, FWD_KEY_SET, FWD_PARAMS, FWD_PARAMS_C, KEY_ROWS, RAISE_MAX } from './attention-tc.js';
import { SW128, WGMMA_PRELUDE, wgmmaRS, wgmmaSS } from './wgmma.js';

export interface WgForwardVariant {
  HS: 64 | 128;
  OUT: 'bf16' | 'f32';
  /** Consumer warpgroups a block (64 queries each). */
  NC: 1 | 2 | 3 | 4;
  /** K/V stages, at least 3 (a thread's copies get STAGES - 2 iterations to land). */
  STAGES: 3 | 4 | 5;
  /** __launch_bounds__ minimum blocks per SM (0: none). */
  MINB?: number;
  /**
   * Query heads a block (default 1; must divide NC and NH / NKV): with 2, the NC warpgroups take the
   * same 64 NC / 2 query positions of two heads of a KV head's group, which share the group's keys and
   * masks, so the block's key set spans half the positions: fewer range keys a query, and one key set
   * and one read of each K/V tile for two heads (GQA).
   */
  GH?: 1 | 2;
  /**
   * Tiles between the one whose stage a warpgroup refills and the one it works on (default 1): at iteration t
   * it waits for every warpgroup to have read tile t - LAG, then copies tile t + STAGES - LAG into its stage.
   * With 2, one warpgroup may run a tile further ahead of the other, and a tile's copies get one iteration
   * fewer to land.
   */
  LAG?: 1 | 2;
}

const BK = 64;

/** Query positions a block (of each of its GH heads). */
export const wgForwardBQ = (v: WgForwardVariant): number => (64 * v.NC) / (v.GH ?? 1);
export const wgForwardThreads = (v: WgForwardVariant): number => 128 * v.NC;

export function wgForwardName(v: WgForwardVariant): string {
  return `spk_fwd_wg_hs${v.HS}_${v.OUT}_nc${v.NC}_s${v.STAGES}${v.MINB ? `_mb${v.MINB}` : ''}${(v.GH ?? 1) > 1 ? `_gh${v.GH}` : ''}${(v.LAG ?? 1) > 1 ? `_lag${v.LAG}` : ''}`;
}

export function wgForwardMaxTiles(v: WgForwardVariant, K: number, W: number): number {
  return Math.ceil(K / BK) + Math.ceil((W + wgForwardBQ(v) - 1) / BK);
}

/** Dynamic shared bytes: NC Q tiles, STAGES K and V tiles, the barriers, the block's thk, 12 bytes a key and 4 a selected tile, 1 KiB for alignment. */
export function wgForwardShared(v: WgForwardVariant, K: number, W: number): number {
  const tile = 64 * v.HS * 2;
  return 1024 + v.NC * tile + 2 * v.STAGES * tile + 16 * v.STAGES + 8 * wgForwardBQ(v) + 12 * BK * wgForwardMaxTiles(v, K, W) + 4 * Math.ceil(K / BK);
}

/**
 * CUDA text shared with the lab's first wgmma forward (dev/cuda-attention-wgmma): rescale_pack(), o's rescale
 * and P's register fragments between tiles, and store_rows(), out and lse of a thread's two rows from its
 * m64nHS accumulator at the end. Needs NS, NO, BK, HS, OUT_BF16 and the prelude.
 */
export const WG_FWD_ROWS = `
// o *= corr when asked, then P's register A fragments from s (keys 16 kk .. 16 kk + 15 -> pa[kk])
__device__ __forceinline__ void rescale_pack(float (&o)[NO], u32 (&pa)[BK / 16][4], const float (&s)[NS], const float (&corr)[2], bool resc) {
  if (resc) {
#pragma unroll
    for (int n = 0; n < NO / 4; n++) {
      o[4 * n + 0] *= corr[0]; o[4 * n + 1] *= corr[0];
      o[4 * n + 2] *= corr[1]; o[4 * n + 3] *= corr[1];
    }
  }
#pragma unroll
  for (int n = 0; n < BK / 8; n++) {
    pa[n >> 1][(n & 1) * 2 + 0] = pack_bf16(s[4 * n + 0], s[4 * n + 1]);
    pa[n >> 1][(n & 1) * 2 + 1] = pack_bf16(s[4 * n + 2], s[4 * n + 3]);
  }
}

// out = o / l and lse of this thread's rows i[0], i[1] (those >= T skipped): o is the m64nHS accumulator,
// m the rows' running max (exp2 domain), l this thread's part of their sums (the quad's are added here)
__device__ __forceinline__ void store_rows(void* out_, float* lse, const float (&o)[NO], const float (&m)[2], float (&l)[2],
    const int (&i)[2], int T, size_t qrow0) {
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    l[rr] += __shfl_xor_sync(FULL, l[rr], 1);
    l[rr] += __shfl_xor_sync(FULL, l[rr], 2);
  }
  const int t4 = threadIdx.x & 3;
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    if (i[rr] >= T) continue;
    const float inv = l[rr] > 0.f ? 1.f / l[rr] : 0.f;
    const size_t row = qrow0 + i[rr];
#pragma unroll
    for (int n = 0; n < NO / 4; n++) {
      const float x0 = o[4 * n + 2 * rr] * inv, x1 = o[4 * n + 2 * rr + 1] * inv;
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
    if (t4 == 0) lse[row] = l[rr] > 0.f ? (m[rr] + log2f(l[rr])) * 0.6931471805599453f : -FINF;
  }
}
`;

export function wgForwardSource(v: WgForwardVariant): KernelSource {
  if (v.STAGES < 3) throw new Error('STAGES must be at least 3');
  if (v.STAGES - (v.LAG ?? 1) < 2) throw new Error('STAGES - LAG must be at least 2 (tile t + 1 is copied before iteration t)');
  if (v.NC % (v.GH ?? 1) !== 0) throw new Error('GH must divide NC');
  const name = wgForwardName(v);
  return {
    name,
    archSpecific: true,
    params: FWD_PARAMS,
    source: `${WGMMA_PRELUDE}
#define HS ${v.HS}
#define NC ${v.NC}
#define GH ${v.GH ?? 1}
#define WR (NC / GH)           // warpgroups a head: 64 query positions each
#define BQ (64 * WR)           // query positions a block
#define BK ${BK}
#define BT 64                  // rows of a swizzled tile
#define NTHR (128 * NC)
#define KS (HS / 16)
#define NS (BK / 2)            // S accumulator registers a thread
#define NO (HS / 2)            // O accumulator registers a thread
#define CPR (HS / 8)
#define TILE_BYTES (64 * HS * 2)
#define OUT_BF16 ${v.OUT === 'bf16' ? 1 : 0}
#define STAGES ${v.STAGES}
#define LAG ${v.LAG ?? 1}
#define MASK_ROWS 1             // the per-key data of FWD_KEY_DATA
${SW128}
${wgmmaSS(64)}
${wgmmaRS(v.HS, 1)}

${ORD_OF}${KEY_ROWS}
${RAISE_MAX}
// DESC_K and DESC_MN (wgmma.ts) as their two 32-bit words: the low one (start address >> 4, leading offset >> 4),
// to which a k-step's offset adds without a carry (shared addresses < 256 KiB), and the constant high one
#define DLO_K(a) ((((a) & 0x3FFFFu) >> 4) | ((1024u >> 4) << 16))
#define DLO_MN(a) ((((a) & 0x3FFFFu) >> 4) | ((HS > 64 ? BT * 128u >> 4 : 1024u >> 4) << 16))
__device__ __forceinline__ u64 desc_of(u32 lo) { return (u64)((1024u >> 4) | (1u << 30)) << 32 | lo; }
// an arrival on the barrier once this thread's cp.async copies so far have landed, counted among its expected ones
__device__ __forceinline__ void cp_arrive_noinc(u32 bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" :: "r"(bar) : "memory");
}
// x, through an instruction the compiler cannot move out of a loop or fold
__device__ __forceinline__ u32 opaque(u32 x) {
  u32 y;
  asm volatile("mov.b32 %0, %1;" : "=r"(y) : "r"(x));
  return y;
}
__device__ __forceinline__ float sat_sub(float a, float b) {
  float y;
  asm("sub.sat.f32 %0, %1, %2;" : "=f"(y) : "f"(a), "f"(b));
  return y;
}
__device__ __forceinline__ void mb_init(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mb_arrive(u32 bar) {
  asm volatile("{ .reg .b64 st; mbarrier.arrive.shared::cta.b64 st, [%0]; }" :: "r"(bar) : "memory");
}
// until the phase of parity 'parity' has completed
__device__ __forceinline__ void mb_wait(u32 bar, u32 parity) {
  u32 done;
  do {
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done) : "r"(bar), "r"(parity) : "memory");
  } while (!done);
}

#define KIND_SEL 0
#define KIND_EDGE 1
#define KIND_WIN 2
#define KIND_SELALL 3           // a tile of Sel_i0 that every row of the warp attends whole: gated, no mask

// Mask (the rows each key attends), online softmax in the exp2 domain with lazy rescaling, gate. Leaves
// p * gate in s, adds p to l; returns whether o must be scaled by corr before this tile's P V.
template <int KIND>
__device__ __forceinline__ bool softmax_step(float (&s)[NS], float (&corr)[2], float (&m)[2], float (&l)[2],
    const float* mu, const int* rng, const int (&rl)[2], const float (&qtau)[2], float sl) {
  const int t4 = threadIdx.x & 3;
  float mx[2] = {-FINF, -FINF};
#pragma unroll
  for (int n = 0; n < BK / 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int rr = e >> 1, c = n * 8 + 2 * t4 + (e & 1);
      float x = s[4 * n + e];
      if (KIND == KIND_SEL || KIND == KIND_EDGE) {
        const int rg = rng[c];
        const bool in = KIND == KIND_SEL ? rl[rr] < ((rg >> RB) & RM) : rl[rr] >= (rg & RM) && rl[rr] < ((rg >> RB) & RM);
        if (!in) x = -FINF;
      }
      s[4 * n + e] = x;
      mx[rr] = fmaxf(mx[rr], x);
    }
  }
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(FULL, mx[rr], 1));
    mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(FULL, mx[rr], 2));
    mx[rr] *= sl;
  }
  // keep the running max while no row of the warp grew it by more than 8 (p <= 2^8); false for a row
  // whose max is still -inf (NaN)
  float mu_[2];
  bool resc = false;
  if (__all_sync(FULL, mx[0] - m[0] <= 8.f && mx[1] - m[1] <= 8.f)) {
    mu_[0] = m[0], mu_[1] = m[1];
  } else {
    resc = true;
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      mu_[rr] = raise_max(m[rr], l[rr], mx[rr], corr[rr]);
    }
  }
#pragma unroll
  for (int n = 0; n < BK / 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int c = n * 8 + 2 * t4 + (e & 1);
      float p = ex2(fmaf(s[4 * n + e], sl, -mu_[e >> 1]));
      l[e >> 1] += p;
      if (KIND == KIND_SEL || KIND == KIND_SELALL) p *= sat_sub(mu[c], qtau[e >> 1]);
      if (KIND == KIND_EDGE && rl[e >> 1] >= (rng[c] >> (2 * RB))) p *= sat_sub(mu[c], qtau[e >> 1]);
      s[4 * n + e] = p;
    }
  }
  return resc;
}

${WG_FWD_ROWS}

extern "C" __global__ void __launch_bounds__(NTHR${v.MINB ? `, ${v.MINB}` : ''}) ${name}(
${FWD_PARAMS_C}) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  // the tiles' shared addresses and descriptors are made afresh for each tile from sbase, through opaque(): the
  // compiler would otherwise keep several 64-bit values through the loop and spill them at HS 64
  const u32 sbase = smem_addr(smem);
  unsigned char* Qs = smem;                          // [NC][64][HS]
  unsigned char* Ks = Qs + NC * TILE_BYTES;          // [STAGES][64][HS]
  unsigned char* Vs = Ks + STAGES * TILE_BYTES;      // [STAGES][64][HS]
  u64* bars = reinterpret_cast<u64*>(Vs + STAGES * TILE_BYTES); // full[STAGES], empty[STAGES]
  u64* bthk = bars + 2 * STAGES;                     // [BQ]
  const u32 full0 = smem_addr(bars), empty0 = full0 + 8 * STAGES;
  const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7, w = (tid >> 5) & 3, g8 = lane >> 2;
  // this warpgroup's head, and its rows' place among the block's BQ positions
  const int wr = GH == 1 ? wg : wg % WR, hq = blockIdx.y * GH + (GH == 1 ? 0 : wg / WR);
  const int i0 = blockIdx.x * BQ, b = blockIdx.z;
  const int h = blockIdx.y * GH / (NH / NKV);
  const size_t qrow0 = ((size_t)b * NH + hq) * T;
  const size_t kv0 = ((size_t)b * NKV + h) * T;
  const float sl = scale * 1.4426950408889634f;

${FWD_KEY_SET}  const int nkeys = nT * BK;
  float* mu_ = reinterpret_cast<float*>(bthk + BQ);
  int* mpos = reinterpret_cast<int*>(mu_ + nkeys);
  int* mrng = mpos + nkeys;

  if (tid == 0) {
    for (int s = 0; s < STAGES; s++) { mb_init(full0 + 8 * s, NTHR); mb_init(empty0 + 8 * s, NTHR); }
  }
  // this warpgroup's Q tile, in the first copy group (with tile 0)
  {
    const u32 qd = smem_addr(Qs + wg * TILE_BYTES);
    for (int x = tid & 127; x < 64 * CPR; x += 128) {
      const int i = i0 + 64 * wr + COPY_ROW(x);
      cp_async16(qd + COPY_DST(x), q + (qrow0 + (i < T ? i : 0)) * HS + COPY_CHUNK(x) * 8, i < T ? 16 : 0);
    }
  }
  for (int r = tid; r < BQ; r += NTHR) bthk[r] = i0 + r < T ? thk[kv0 + i0 + r] : ~0ull;
  int rl[2]; // this thread's rows of the block
  double qtau_d[2]; // (loaded here, so that the loads' latency passes with the key data's)
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    rl[rr] = 64 * wr + 16 * w + g8 + 8 * rr;
    qtau_d[rr] = i0 + rl[rr] < T ? tau[kv0 + i0 + rl[rr]] : (double)FINF;
  }
  __syncthreads();
${FWD_KEY_DATA}  __syncthreads();
  // per tile of Sel_i0, the fewest block rows that attend one of its keys (rows [0, hs) attend such a key; 0 for a
  // tile with padding): a warp whose rows all lie below it skips the tile's mask
  int* tmin = mrng + nkeys;
  for (int t = tid >> 5; t < nselT; t += NTHR / 32) {
    int hmin = BQ;
    for (int x = t * BK + lane; x < t * BK + BK; x += 32) hmin = min(hmin, mpos[x] >= 0 ? (mrng[x] >> RB) & RM : 0);
    hmin = __reduce_min_sync(FULL, hmin);
    if (lane == 0) tmin[t] = hmin;
  }
  __syncthreads();

  // tile t into stage t % STAGES, every thread a share of its chunks: CPT of them, when they divide evenly (a loop
  // of static count, whose addresses are mostly worked out once), else a loop over the tile's chunks
#define CPT ((BK * CPR) % NTHR == 0 ? (BK * CPR) / NTHR : 0)
  auto issue = [&](int t) {
    const unsigned st = (unsigned)t % STAGES;
    // (recomputed for each tile: kept, these would take two 64-bit pointers through the loop)
    const size_t row0 = (size_t)opaque(b * NKV + h) * T * (HS * 2);
    const char* kb = reinterpret_cast<const char*>(k) + row0;
    const char* vb = reinterpret_cast<const char*>(v) + row0;
    const u32 kd = opaque(sbase) + (NC + st) * TILE_BYTES, vd = kd + STAGES * TILE_BYTES;
    if (CPT > 0) {
#pragma unroll
      for (int c = 0; c < CPT; c++) {
        const int x = tid + c * NTHR;
        const int j = mpos[t * BK + COPY_ROW(x)];
        const u32 off = (u32)max(j, 0) * (HS * 2) + COPY_CHUNK(x) * 16; // bytes (T HS 2 < 2^32: the backend checks)
        cp_async16(kd + COPY_DST(x), kb + off, j >= 0 ? 16 : 0);
        cp_async16(vd + COPY_DST(x), vb + off, j >= 0 ? 16 : 0);
      }
    } else {
      for (int x = tid; x < BK * CPR; x += NTHR) {
        const int j = mpos[t * BK + COPY_ROW(x)];
        const size_t off = (size_t)max(j, 0) * (HS * 2) + COPY_CHUNK(x) * 16; // bytes
        cp_async16(kd + COPY_DST(x), kb + off, j >= 0 ? 16 : 0);
        cp_async16(vd + COPY_DST(x), vb + off, j >= 0 ? 16 : 0);
      }
    }
  };
  // each thread's copies of a tile arrive on its stage's full barrier by themselves once they have landed (the
  // Q tile's with tile 0's), so no thread waits for its own copies, nor a warpgroup for the other's progress
  auto issue_tile = [&](int t) { issue(t); cp_arrive_noinc(full0 + 8 * ((unsigned)t % STAGES)); };
  for (int t = 0; t < STAGES - LAG && t < nT; t++) issue_tile(t);

  const float qtau[2] = {(float)qtau_d[0], (float)qtau_d[1]};
  const int iw = i0 + 64 * wr; // this warpgroup's first row

  float o[NO];
#pragma unroll
  for (int n = 0; n < NO; n++) o[n] = 0.f;
  float m[2] = {-FINF, -FINF}, l[2] = {0.f, 0.f};
  float s[NS], corr[2] = {1.f, 1.f};
  u32 pa[BK / 16][4];

  auto issue_s = [&](int t) {
    const u32 sb = opaque(sbase);
    const u32 dq = DLO_K(sb + wg * TILE_BYTES), dk = DLO_K(sb + (NC + (unsigned)t % STAGES) * TILE_BYTES);
#pragma unroll
    for (int ks = 0; ks < KS; ks++) wg_ss_n64(s, desc_of(dq + KOFF(ks)), desc_of(dk + KOFF(ks)), ks);
    wg_commit();
  };
  auto issue_pv = [&](int t) {
    const u32 dv = DLO_MN(opaque(sbase) + (NC + STAGES + (unsigned)t % STAGES) * TILE_BYTES);
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++)
      wg_rs_n${v.HS}_t1(o, pa[kk][0], pa[kk][1], pa[kk][2], pa[kk][3], desc_of(dv + kk * MNSTEP(HS)));
    wg_commit();
  };
  auto softmax = [&](int t) -> bool {
    const float* tu = mu_ + t * BK;
    const int* tr = mrng + t * BK;
    if (t < nselT) {
      if (64 * wr + 16 * w + 15 < tmin[t]) return softmax_step<KIND_SELALL>(s, corr, m, l, tu, tr, rl, qtau, sl);
      return softmax_step<KIND_SEL>(s, corr, m, l, tu, tr, rl, qtau, sl);
    }
    const int a = lo + (t - nselT) * BK, z = a + BK - 1;
    // whole tile in Win_i of every row of this warpgroup, no padding
    if (z <= iw && a > iw + 63 - W && z < hi) return softmax_step<KIND_WIN>(s, corr, m, l, tu, tr, rl, qtau, sl);
    return softmax_step<KIND_EDGE>(s, corr, m, l, tu, tr, rl, qtau, sl);
  };
  auto full_wait = [&](unsigned t) { mb_wait(full0 + 8 * (t % STAGES), (t / STAGES) & 1); };

  bool resc = false;
  if (nT > 0) {
    full_wait(0);
    fence_async_shared(); // (the copies' generic-proxy writes, seen through the barrier, to the wgmma's async proxy)
    wg_fence();
    issue_s(0);
    wg_wait<0>();
    reg_fence(s);
    resc = softmax(0);
    rescale_pack(o, pa, s, corr, resc);
  }
  for (int t = 0; t + 1 < nT; t++) {
    full_wait(t + 1);
    fence_async_shared();
    wg_fence();
    issue_s(t + 1);
    issue_pv(t);
    // refill the stage of tile t - LAG with tile t + STAGES - LAG once every warpgroup has read it
    const int r = t + STAGES - LAG;
    if (r < nT) {
      if (t >= LAG) mb_wait(empty0 + 8 * ((unsigned)(t - LAG) % STAGES), ((unsigned)(t - LAG) / STAGES) & 1);
      issue_tile(r);
    }
    wg_wait<1>();
    reg_fence(s);
    resc = softmax(t + 1);
    wg_wait<0>();
    reg_fence(o);
    mb_arrive(empty0 + 8 * ((unsigned)t % STAGES));
    rescale_pack(o, pa, s, corr, resc);
  }
  if (nT > 0) {
    wg_fence();
    issue_pv(nT - 1);
    wg_wait<0>();
    reg_fence(o);
  }

  const int qi[2] = {i0 + rl[0], i0 + rl[1]}; // their positions
  if (nT == 0) asm volatile("cp.async.wait_all;" ::: "memory"); // (the Q tile's copies, never awaited)
  store_rows(out_, lse, o, m, l, qi, T, qrow0);
}
`,
  };
}
