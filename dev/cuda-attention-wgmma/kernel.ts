// Hopper (sm_90a) wgmma version of the tensor-core SparseK attention FORWARD (SPEC.md sections 3
// and 4), a lab variant of src/cuda/kernels/attention-tc.ts (fastForwardSource). Same semantics, same
// parameter list, same grid (ceil(T / 64), NH, B); only the block (128 threads, one warpgroup) and the
// dynamic shared memory (wgmmaForwardShared) differ. Not here: the selection, the backward, TMA,
// swizzled layouts, two consumer warpgroups.
//
// The block's key set, the per-(query, key) mask, the gate and the online softmax are the production
// kernel's (its header comment is the definition): Sel_{i0} gathered by index, then the contiguous
// range [max(0, i0 - W + 1), min(T, i0 + 64)), in tiles of BK = 64 keys. What changes is the matrix
// work of each tile:
//   S = Q K^T   wgmma m64n64k16, A = Q and B = K both from shared memory (K-major), HS / 16 steps;
//   O += P V    wgmma m64n{HS}k16, A = P * gate from registers (bf16), B = V from shared memory,
//               stored key-major [key][hs], so MN-major for B: the transpose bit imm-trans-b = 1.
// Warp w of the warpgroup owns rows 16w .. 16w + 15 of both accumulators, in the same per-warp
// layout as mma.m16n8 C tiles laid side by side (PTX ISA, wgmma m64nNk16 D fragment):
//   d[i] = (row 16w + g + 8 ((i >> 1) & 1), col 8 (i >> 2) + 2t + (i & 1)),  g = lane / 4, t = lane % 4
// and the register A fragment of m64nNk16 is mma.m16n8k16's A fragment on the warp's 16 rows, so the
// S accumulator of keys 16kk .. 16kk + 15 packs into P's A fragment in place (no shuffles):
//   a[kk] = { bf16x2(d[8kk], d[8kk+1]), bf16x2(d[8kk+2], d[8kk+3]), bf16x2(d[8kk+4], d[8kk+5]), bf16x2(d[8kk+6], d[8kk+7]) }.
//
// Shared layout of every [64 rows][HS] tile (Q, K stages, V stages): no swizzle, core matrices of
// 8 rows x 16 bytes stored as 128 contiguous bytes. Row r, 16-byte chunk c (columns 8c .. 8c + 7):
//   byte (r / 8) * HS * 16 + c * 128 + (r % 8) * 16
// i.e. chunk x = ((r / 8) * (HS / 8) + c) * 8 + r % 8 sits at byte 16 x, so thread x of a cp.async
// sweep writes 16 contiguous bytes and a warp fills 512 contiguous bytes. Descriptors (PTX ISA,
// matrix descriptor: bits 0-13 start >> 4, 16-29 leading byte offset >> 4, 32-45 stride byte offset >> 4,
// 62-63 swizzle mode 0 = none):
//   Q, K (K-major): leading = 128 (next core matrix along hs, the reduction dim),
//                   stride = HS * 16 (next 8 rows); k-step ks starts at + 256 ks bytes.
//   V (MN-major):   the same bytes seen with key as the reduction dim: the next 8 keys are HS * 16
//                   bytes on, the next 8 hs columns 128 bytes on; k-step kk starts at + 2 HS * 16 kk bytes.
//                   The probe (probe.ts, H100) showed which field takes which: for this MN-major,
//                   no-swizzle operand the LEADING byte offset is the step along K (keys, HS * 16) and
//                   the STRIDE byte offset the step along N (hs, 128): VSWAP = true, the default. The
//                   other reading (leading = 128) read wrong data, and past the tile (a fault) when V
//                   was the last thing in shared memory.
// KSWAP = false (leading = step along K for K-major) and VSWAP = true are the only readings the GPU
// accepted; the options stay so that the probe's verdict can be applied without editing the source.
//
// Ordering: cp.async writes shared memory through the generic proxy and wgmma reads it through the
// async proxy, so each thread runs fence.proxy.async after its cp.async.wait_group, before the barrier
// that precedes the wgmma. Accumulator registers written by a wgmma are read only after
// wgmma.wait_group; an empty asm with "+f" on each of them stops the compiler from moving reads
// above the wait.
// STAGES = 2 failed validation until session 8 found the wait count in await_tile one refill off (the
// README's "The STAGES = 2 failure"); every depth passes now.
//
// Schedule (OVERLAP, after FlashAttention-3's intra-warpgroup overlap, written from its paper's
// description): S_0 and its softmax before the loop; then per tile t
//   wait tile t + 1's copies, fence, barrier -> issue S_{t+1}, issue PV_t (P_t from registers)
//   -> wait S_{t+1} (wait_group 1) -> mask and softmax of tile t + 1 while PV_t runs
//   -> wait PV_t -> O *= corr_{t+1}, pack P_{t+1} -> barrier -> copy tile t + STAGES into t's stage.
// No register that a wgmma in flight reads or writes is touched by other instructions (ptxas would
// serialise the wgmmas, warning C7515). OVERLAP false waits for each wgmma at once (the reference
// schedule for debugging).

import type { KernelSource } from '../../src/cuda/runtime.js';
import { ORD_OF } from '../../src/cuda/kernels/selection.js';
import { FWD_KEY_DATA, FWD_KEY_SET, FWD_PARAMS, FWD_PARAMS_C, RAISE_MAX } from '../../src/cuda/kernels/attention-tc.js';
import { WG_FWD_ROWS } from '../../src/cuda/kernels/attention-wg.js';

export interface WgmmaForwardVariant {
  HS: 64 | 128;
  OUT: 'bf16' | 'f32';
  /** cp.async ring depth: tile t + STAGES is issued once tile t is consumed. Default 3. */
  STAGES?: 2 | 3 | 4;
  /** __launch_bounds__ minimum blocks per SM (0: none). */
  MINB?: number;
  /** Issue S of the next tile before P V of this one and do its softmax while P V runs. Default true. */
  OVERLAP?: boolean;
  /**
   * Extra proxy fences (experiment on the STAGES 2 failure): fence.proxy.async also after the barrier
   * that publishes a tile, and before the copies that overwrite a stage wgmma has read. Default false.
   */
  FENCE2?: boolean;
  /** K/V tiles by plain 16-byte loads and shared stores instead of cp.async (experiment). Default false. */
  PLAIN?: boolean;
  /** Swap leading/stride byte offsets of Q's and K's descriptors (probe fallback). */
  KSWAP?: boolean;
  /** V's descriptor: leading = HS * 16 (step along keys), stride = 128 (true, verified) or the reverse. Default true. */
  VSWAP?: boolean;
  /**
   * Tiles in the 128-byte swizzled layout of src/cuda/kernels/attention-wg-backward.ts (SW there; HS 128
   * as two sub-tiles of 64 columns) instead of no-swizzle core matrices (session 8). Default false.
   */
  SW?: boolean;
}

export const BQ = 64;
export const BK = 64;

function full(v: WgmmaForwardVariant): Required<WgmmaForwardVariant> {
  return { STAGES: 3, MINB: 0, OVERLAP: true, FENCE2: false, PLAIN: false, KSWAP: false, VSWAP: true, SW: false, ...v };
}

export function wgmmaForwardName(v: WgmmaForwardVariant): string {
  const o = full(v);
  return `spk_fwd_wgmma_hs${o.HS}_${o.OUT}_s${o.STAGES}${o.OVERLAP ? '_ov' : ''}${o.FENCE2 ? '_f2' : ''}${o.PLAIN ? '_pl' : ''}${o.MINB ? `_mb${o.MINB}` : ''}${o.KSWAP ? '_ks' : ''}${o.VSWAP ? '_vs' : ''}${o.SW ? '_sw' : ''}`;
}

export function wgmmaForwardMaxTiles(K: number, W: number): number {
  return Math.ceil(K / BK) + Math.ceil((W + BQ - 1) / BK);
}

/** Dynamic shared bytes: Q tile, STAGES K and V tiles, 16 bytes of per-key data for every key of the block. */
export function wgmmaForwardShared(v: WgmmaForwardVariant, K: number, W: number): number {
  const o = full(v);
  return BQ * o.HS * 2 + o.STAGES * 2 * BK * o.HS * 2 + wgmmaForwardMaxTiles(K, W) * BK * 16 + (o.SW ? 1024 : 0);
}

// The PTX wrappers and helpers are src/cuda/kernels/wgmma.ts's (PRELUDE is its WGMMA_PRELUDE).
export { WGMMA_PRELUDE as PRELUDE, wgmmaRS, wgmmaSS } from '../../src/cuda/kernels/wgmma.js';
import { WGMMA_PRELUDE as PRELUDE, wgmmaRS, wgmmaSS } from '../../src/cuda/kernels/wgmma.js';

/**
 * Launch: grid (ceil(T / 64), NH, B), block 128, dynamic shared wgmmaForwardShared(v, K, W) (opt in above
 * 48 KiB). Parameters as fastForwardSource's. Requires 16-byte aligned rows of q, k, v.
 */
export function wgmmaForwardSource(v: WgmmaForwardVariant): KernelSource {
  const o = full(v);
  const name = wgmmaForwardName(o);
  const tileBytes = 64 * o.HS * 2;
  const kLead = o.KSWAP ? o.HS * 16 : 128, kStride = o.KSWAP ? 128 : o.HS * 16;
  const vLead = o.VSWAP ? o.HS * 16 : 128, vStride = o.VSWAP ? 128 : o.HS * 16;
  return {
    name,
    archSpecific: true,
    params: FWD_PARAMS,
    source: `${PRELUDE}
#define HS ${o.HS}
#define BQ ${BQ}
#define BK ${BK}
#define NTHR 128
#define KS (HS / 16)           // k-steps of Q K^T
#define NS (BK / 2)            // S accumulator registers per thread
#define NO (HS / 2)            // O accumulator registers per thread
#define CPR (HS / 8)           // 16-byte chunks per row
#define TILE_BYTES ${tileBytes}
#define OUT_BF16 ${o.OUT === 'bf16' ? 1 : 0}
#define STAGES ${o.STAGES}
#define MASK_ROWS 0             // FWD_KEY_DATA stores each key's selection key
#define OVERLAP ${o.OVERLAP ? 1 : 0}
#define FENCE2 ${o.FENCE2 ? 1 : 0}
#define PLAIN ${o.PLAIN ? 1 : 0}
#define SW ${o.SW ? 1 : 0}
#if SW
#define COPY_ROW(x) ((x) / CPR)
#define COPY_CHUNK(x) ((x) % CPR)
#define COPY_DST(x) (((((x) % CPR) >> 3) * 64 * 128) + ((x) / CPR) * 128 + (((((x) % CPR) & 7) ^ (((x) / CPR) & 7)) << 4))
#define KOFF(ks) (((((ks) >> 2) * 64 * 128) + ((ks) & 3) * 32) >> 4)
#define VSTEP 128
#define DESC_K(a) (make_desc(a, 1024, 1024) | (1ull << 62))
#define DESC_V(a) ((HS > 64 ? make_desc(a, 64 * 128, 1024) : make_desc(a, 1024, 1024)) | (1ull << 62))
#else
#define COPY_ROW(x) (((x) & 7) + (((x) >> 3) / CPR) * 8)
#define COPY_CHUNK(x) (((x) >> 3) % CPR)
#define COPY_DST(x) ((x) * 16)
#define KOFF(ks) ((ks) * 16)
#define VSTEP ((2 * HS * 16) >> 4)
#define DESC_K(a) make_desc(a, ${kLead}, ${kStride})
#define DESC_V(a) make_desc(a, ${vLead}, ${vStride})
#endif
${wgmmaSS(64)}
${wgmmaRS(o.HS, 1)}

${ORD_OF}${RAISE_MAX}

struct Meta {
  const u64* key;
  const float* u;
  const int* pos;
};

#define KIND_SEL 0
#define KIND_EDGE 1
#define KIND_WIN 2

// Mask and online softmax of one tile on the finished S accumulator s (the production kernel's rule;
// s[4n + e] here is its s[n][e]). Leaves p * gate in s, adds p to l, and returns the factor corr
// that O must be scaled by before this tile's P V (applied once the previous P V has completed).
template <int KIND>
__device__ __forceinline__ void softmax_step(
    float (&s)[NS], float (&corr)[2], float (&m)[2], float (&l)[2], Meta mt,
    const int (&qi)[2], const u64 (&qthk)[2], const float (&qtau)[2], int i0, int W, float sl) {
  const int t4 = threadIdx.x & 3;
  float mx[2] = {-FINF, -FINF};
#pragma unroll
  for (int n = 0; n < BK / 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int rr = e >> 1, c = n * 8 + 2 * t4 + (e & 1);
      float x = s[4 * n + e] * sl;
      if (KIND != KIND_WIN) {
        const int j = mt.pos[c];
        bool in;
        if (KIND == KIND_SEL) {
          in = j >= 0 && mt.key[c] >= qthk[rr];
        } else {
          const int i = qi[rr];
          in = j >= 0 && j <= i && (j > i - W || (j > i0 - W && mt.key[c] >= qthk[rr]));
        }
        if (!in) x = -FINF;
      }
      s[4 * n + e] = x;
      mx[rr] = fmaxf(mx[rr], x);
    }
  }
  float mu[2];
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(FULL, mx[rr], 1));
    mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(FULL, mx[rr], 2));
    mu[rr] = raise_max(m[rr], l[rr], mx[rr], corr[rr]);
  }
#pragma unroll
  for (int n = 0; n < BK / 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int c = n * 8 + 2 * t4 + (e & 1);
      float p = ex2(s[4 * n + e] - mu[e >> 1]);
      l[e >> 1] += p;
      if (KIND == KIND_SEL) p *= fminf(fmaxf(mt.u[c] - qtau[e >> 1], 0.f), 1.f);
      if (KIND == KIND_EDGE && mt.pos[c] <= qi[e >> 1] - W) p *= fminf(fmaxf(mt.u[c] - qtau[e >> 1], 0.f), 1.f);
      s[4 * n + e] = p;
    }
  }
}

${WG_FWD_ROWS}

extern "C" __global__ void __launch_bounds__(NTHR${o.MINB ? `, ${o.MINB}` : ''}) ${name}(
${FWD_PARAMS_C}) {
 extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + (SW ? (1024 - (smem_addr(smem_raw) & 1023)) & 1023 : 0);
  unsigned char* Qs = smem;                                  // [64][HS] core-matrix layout
  unsigned char* Ks = Qs + TILE_BYTES;                       // [STAGES][64][HS]
  unsigned char* Vs = Ks + STAGES * TILE_BYTES;              // [STAGES][64][HS]
  u64* mkey = reinterpret_cast<u64*>(Vs + STAGES * TILE_BYTES);
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g8 = lane >> 2;
  const int i0 = blockIdx.x * BQ, hq = blockIdx.y, b = blockIdx.z;
  const int h = hq / (NH / NKV);
  const size_t qrow0 = ((size_t)b * NH + hq) * T;
  const size_t kv0 = ((size_t)b * NKV + h) * T;
  const bf16* kb = k + kv0 * HS;
  const bf16* vb = v + kv0 * HS;
  const float sl = scale * 1.4426950408889634f;

${FWD_KEY_SET}
  // Q tile first (its own commit group), so it lands while the per-key data loads
  {
    const u32 qd = smem_addr(Qs);
    for (int x = tid; x < BQ * CPR; x += NTHR) {
      const int r = COPY_ROW(x), c = COPY_CHUNK(x);
      const int i = i0 + r;
      cp_async16(qd + COPY_DST(x), q + (qrow0 + (i < T ? i : 0)) * HS + c * 8, i < T ? 16 : 0);
    }
    cp_commit();
  }

  const int nkeys = nT * BK;
  float* mu_ = reinterpret_cast<float*>(mkey + nkeys);
  int* mpos = reinterpret_cast<int*>(mu_ + nkeys);
${FWD_KEY_DATA}  __syncthreads();

  // copies of tile t into stage t % STAGES: chunk x = ((r / 8) CPR + c) 8 + r % 8 at byte 16 x
  auto issue = [&](int t) {
    const int st = t % STAGES;
    const u32 kd = smem_addr(Ks + st * TILE_BYTES), vd = smem_addr(Vs + st * TILE_BYTES);
    for (int x = tid; x < BK * CPR; x += NTHR) {
      const int r = COPY_ROW(x), c = COPY_CHUNK(x);
      const int j = mpos[t * BK + r];
      const int bytes = j >= 0 ? 16 : 0;
      const size_t off = (size_t)(j >= 0 ? j : 0) * HS + c * 8;
#if PLAIN
      uint4 kx = make_uint4(0, 0, 0, 0), vx = make_uint4(0, 0, 0, 0);
      if (bytes) { kx = *reinterpret_cast<const uint4*>(kb + off); vx = *reinterpret_cast<const uint4*>(vb + off); }
      asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};" :: "r"(kd + COPY_DST(x)), "r"(kx.x), "r"(kx.y), "r"(kx.z), "r"(kx.w) : "memory");
      asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};" :: "r"(vd + COPY_DST(x)), "r"(vx.x), "r"(vx.y), "r"(vx.z), "r"(vx.w) : "memory");
#else
      cp_async16(kd + COPY_DST(x), kb + off, bytes);
      cp_async16(vd + COPY_DST(x), vb + off, bytes);
#endif
    }
    cp_commit();
  };
  for (int t = 0; t < STAGES && t < nT; t++) issue(t);

  int qi[2];
  u64 qthk[2];
  float qtau[2];
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    const int i = i0 + w * 16 + g8 + rr * 8;
    qi[rr] = i;
    const bool ok = i < T;
    qthk[rr] = ok ? thk[kv0 + i] : ~0ull;
    qtau[rr] = ok ? (float)tau[kv0 + i] : FINF;
  }
  const u64 dq = DESC_K(smem_addr(Qs));
  const u64 dk0 = DESC_K(smem_addr(Ks));
  const u64 dv0 = DESC_V(smem_addr(Vs));

  float o[NO];
#pragma unroll
  for (int n = 0; n < NO; n++) o[n] = 0.f;
  float m[2] = {-FINF, -FINF}, l[2] = {0.f, 0.f};
  float s[NS], corr[2];
  u32 pa[BK / 16][4];

  // tile t's copies complete (and Q's, committed first) once at most min(nT - 1 - t, STAGES - 1) newer
  // groups are pending; then visible to the async proxy and to every warp
  auto await_tile = [&](int t) {
    const int issued = min(nT - 1, t == 0 ? STAGES - 1 : t - 2 + STAGES); // refilled so far: tiles STAGES .. t + STAGES - 2
    if (issued - t >= 2) cp_wait<2>();
    else if (issued - t == 1) cp_wait<1>();
    else cp_wait<0>();
    fence_async_shared();
    __syncthreads();
#if FENCE2
    fence_async_shared();
#endif
  };
  auto issue_s = [&](int t) {
    const u32 base = (t % STAGES) * TILE_BYTES;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) wg_ss_n64(s, dq + KOFF(ks), dk0 + (u64)(base >> 4) + KOFF(ks), ks);
    wg_commit();
  };
  auto softmax = [&](int t) {
    const Meta mt = Meta{mkey + t * BK, mu_ + t * BK, mpos + t * BK};
    if (t < nselT) {
      softmax_step<KIND_SEL>(s, corr, m, l, mt, qi, qthk, qtau, i0, W, sl);
    } else {
      const int a = lo + (t - nselT) * BK, z = a + BK - 1;
      if (z <= i0 && a > i0 + BQ - 1 - W && z < hi) softmax_step<KIND_WIN>(s, corr, m, l, mt, qi, qthk, qtau, i0, W, sl);
      else softmax_step<KIND_EDGE>(s, corr, m, l, mt, qi, qthk, qtau, i0, W, sl);
    }
  };

  if (nT > 0) {
    await_tile(0);
    wg_fence();
    issue_s(0);
    wg_wait<0>();
    reg_fence(s);
    softmax(0);
    rescale_pack(o, pa, s, corr, true);
  }
  auto issue_pv = [&](int t) {
    const u32 vbase = (t % STAGES) * TILE_BYTES;
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++)
      wg_rs_n${o.HS}_t1(o, pa[kk][0], pa[kk][1], pa[kk][2], pa[kk][3], dv0 + (u64)(vbase >> 4) + kk * VSTEP);
    wg_commit();
  };
  // every tile but the last; the last one's P V after the loop (the group structure stays static)
  for (int t = 0; t + 1 < nT; t++) {
    await_tile(t + 1);
#if OVERLAP
    // S_{t+1} and PV_t in flight together; the softmax of tile t + 1 runs while PV_t does
    wg_fence();
    issue_s(t + 1);
    issue_pv(t);
    wg_wait<1>();
    reg_fence(s);
    softmax(t + 1);
    wg_wait<0>();
    reg_fence(o);
#else
    wg_fence();
    issue_pv(t);
    wg_wait<0>();
    reg_fence(o);
    wg_fence();
    issue_s(t + 1);
    wg_wait<0>();
    reg_fence(s);
    softmax(t + 1);
#endif
    rescale_pack(o, pa, s, corr, true);
    // every warp's S_t and PV_t have read stage t % STAGES: refill it
    if (t + STAGES < nT) {
      __syncthreads();
#if FENCE2
      fence_async_shared();
#endif
      issue(t + STAGES);
    }
  }
  if (nT > 0) {
    wg_fence();
    issue_pv(nT - 1);
    wg_wait<0>();
    reg_fence(o);
  }

  store_rows(out_, lse, o, m, l, qi, T, qrow0);
}
`,
  };
}
