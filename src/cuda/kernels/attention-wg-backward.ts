// Hopper (sm_90a) wgmma version of the tensor-core backward's WINDOW kernel (attention-tc-backward.ts,
// spk_bwd_win): same parameters, grid and results, for the window pairs 0 <= i - j < W. One warpgroup per
// block of 64 keys [j0, j0 + 64) and KV head; it loops over the group's heads and the ceil((W + 63) / 64)
// query tiles of the band, FlashAttention-2's key-major backward with every product on wgmma:
//   S^T  = K Q^T      m64n64k16, A = K, B = Q, both from shared memory, K-major   (HS / 16 k-steps)
//   dP^T = V dO^T     the same with V and dO
//   P^T = exp(S^T scale - lse), dS^T = P^T (dP^T - D) in registers; then
//   dV  += P^T dO     m64n{HS}k16, A = P^T from registers, B = dO MN-major       (4 k-steps over queries)
//   dK  += dS^T Q     the same with dS^T and Q
//   dQ   = dS K       m64n{HS}k16, A = dS: dS^T stored [key][query] in shared memory and read MN-major,
//                     B = K MN-major (4 k-steps over keys); added to dq with red.global.add, or (BULKQ)
//                     staged in shared memory and added by one bulk reduction (cp.reduce.async.bulk).
// Why: the mma.sync kernel reads each Q and dO tile from shared memory once per warp (four times per
// block) through ldmatrix and is bound by shared-memory bandwidth (Nsight Compute: 77 % at 64K). A
// wgmma's B operand is read once for the warpgroup's 64 rows. What CudaBackend runs (H100, 64K, K = W =
// 512): SW + ASYNCL + BULKQ at HS 64, 2.03 to 1.51 ms; SW + ASYNCL at HS 128, 4.02 to 3.12 ms. Without
// SW (no-swizzle tiles) it was slower than mma.sync (2.33 ms): bench/RESULTS.md, session 8.
//
// Accumulator layout (m64nN, warp w of the warpgroup, g = lane / 4, t = lane % 4): d[i] is
//   (row 16 w + g + 8 ((i >> 1) & 1), column 8 (i >> 2) + 2 t + (i & 1)),
// so S^T's registers 8 kk .. 8 kk + 7 (queries 16 kk .. 16 kk + 15) pack into the A fragment of P^T's
// k-step kk in place. Shared tiles use the 128-byte swizzled layout (SW; the SW_OFF macro) or wgmma.ts's
// no-swizzle layout (copy x writes byte 16 x: row (x / (8 C)) 8 + x % 8, chunk (x / 8) % C, C = HS / 8).
//
// Pipeline: Q, dO, lse and D of query tile x + STAGES - 1 are issued (cp.async, one group a tile) right
// after the barrier that opens tile x, into the stage tile x - 1 used; every wgmma of tile x - 1 was
// waited for before that barrier. Each thread fences its completed copies into the async proxy before
// the barrier (fence.proxy.async), and again after writing dS^T (and the dQ tile, BULKQ). Not here: the
// selected pairs (sel stays on mma.sync), overlap of one tile's dQ with the next tile's S^T, two
// warpgroups, TMA.

import type { KernelSource } from '../runtime.js';
import { WIN_PARAMS, WIN_PARAMS_C } from './attention-tc-backward.js';
import { SW128, WGMMA_PRELUDE, wgmmaRS, wgmmaSS } from './wgmma.js';

/**
 * Bulk fp32 reductions from shared to global memory (sm_90's bulk-copy unit, BULKQ): bulk_add_f32 adds a
 * contiguous shared range to global memory; the issuing thread waits with bulk_wait_read before the range
 * is overwritten and with bulk_wait_all before it exits. Shared writes reach the async proxy first
 * (fence.proxy.async, then a barrier).
 */
const BULK_REDUCE = `
// bytes bytes of shared src added (fp32) to global dst by the bulk-copy unit, in this thread's bulk group
__device__ __forceinline__ void bulk_add_f32(float* dst, u32 src, int bytes) {
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;" :: "l"(dst), "r"(src), "r"(bytes) : "memory");
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}
// this thread's bulk operations have read their shared sources / have completed
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
`;

export interface WgWindowVariant {
  HS: 64 | 128;
  /** Q / dO ring depth (default 2). */
  STAGES?: 2 | 3;
  /** __launch_bounds__ minimum blocks per SM (0: none). */
  MINB?: number;
  /** lse and D by cp.async with the copies of Q and dO, instead of loads and stores on the critical path (default false). */
  ASYNCL?: boolean;
  /**
   * dQ of a tile staged in shared memory (fp32, row-major) and added to dq by one bulk reduction
   * (cp.reduce.async.bulk .add.f32) instead of 2048 red.global.add.v2 a tile (default false).
   */
  BULKQ?: boolean;
  /**
   * Shared tiles in the 128-byte swizzled layout (rows of 128 bytes, 16-byte chunk c of row r at chunk
   * c ^ (r % 8); HS 128 as two such tiles of 64 columns) instead of no-swizzle core matrices (default false).
   */
  SW?: boolean;
}

const BT = 64;
const NTHR = 128;

function full(v: WgWindowVariant): Required<WgWindowVariant> {
  return { STAGES: 2, MINB: 0, ASYNCL: false, BULKQ: false, SW: false, ...v };
}

export const bwdWinWgName = (v: WgWindowVariant): string => {
  const o = full(v);
  return `spk_bwd_win_wg_hs${o.HS}_s${o.STAGES}${o.MINB ? `_mb${o.MINB}` : ''}${o.ASYNCL ? '_al' : ''}${o.BULKQ ? '_bq' : ''}${o.SW ? '_sw' : ''}`;
};

/** Threads per block. */
export const BWD_WG_THREADS = NTHR;

/** Dynamic shared bytes: K and V, STAGES of Q and dO, dS^T, STAGES of lse and D. 57 KiB at HS 64, 2 stages. */
export function bwdWinWgShared(v: WgWindowVariant): number {
  const o = full(v), tile = BT * o.HS * 2;
  return 2 * tile + o.STAGES * 2 * tile + BT * BT * 2 + o.STAGES * 2 * BT * 4 + (o.BULKQ ? BT * o.HS * 4 : 0) + (o.SW ? 1024 : 0);
}

/**
 * Launch: grid (ceil(T / 64), NKV, B), block 128, dynamic shared bwdWinWgShared(v) (opt in above 48 KiB).
 * Parameters as spk_bwd_win's (bwdWinSource). Requires 16-byte aligned rows.
 */
export function bwdWinWgSource(v: WgWindowVariant): KernelSource {
  const o = full(v);
  const name = bwdWinWgName(o);
  return {
    name,
    archSpecific: true,
    params: WIN_PARAMS,
    source: `${WGMMA_PRELUDE}
#define HS ${o.HS}
#define BT ${BT}
#define NTHR ${NTHR}
#define KS (HS / 16)
#define CPR (HS / 8)
#define TILE (BT * HS * 2)
#define STAGES ${o.STAGES}
#define ASYNCL ${o.ASYNCL ? 1 : 0}
#define BULKQ ${o.BULKQ ? 1 : 0}
#define SW ${o.SW ? 1 : 0}
#if SW
${SW128}#else
// no swizzle: copy x writes byte 16 x, i.e. row (x / (8 C)) 8 + x % 8, chunk (x / 8) % C
#define COPY_ROW(x) (((x) & 7) + (((x) >> 3) / CPR) * 8)
#define COPY_CHUNK(x) (((x) >> 3) % CPR)
#define COPY_DST(x) ((x) * 16)
#define P_OFF(r, n) CM_OFF(r, n, BT)
#define KOFF(ks) ((ks) * 16)           // a K-major k-step: 256 bytes, >> 4
#define MNSTEP(C) ((2 * (C) * 16) >> 4) // an MN-major k-step: two 8-row groups
#define DESC_K(a) make_desc(a, 128, HS * 16)
#define DESC_MN(a, C) make_desc(a, (C) * 16, 128)
#endif
#define LOG2E 1.4426950408889634f
${wgmmaSS(64)}
${wgmmaRS(o.HS, 1)}
${wgmmaSS(o.HS, 1, 1)}
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ void cp_async4(u32 dst, const void* src, int bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" :: "r"(dst), "l"(src), "r"(bytes) : "memory");
}
${BULK_REDUCE}
// *p += a, p[1] += b
__device__ __forceinline__ void red2(float* p, float a, float b) {
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" :: "l"(p), "f"(a), "f"(b) : "memory");
}

extern "C" __global__ void __launch_bounds__(NTHR${o.MINB ? `, ${o.MINB}` : ''}) ${name}(
${WIN_PARAMS_C}) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // the swizzle pattern repeats every 1024 bytes of shared address: tiles start on such a boundary
  unsigned char* smem = smem_raw + (SW ? (1024 - (smem_addr(smem_raw) & 1023)) & 1023 : 0);
  unsigned char* Ks = smem;                     // [BT][HS]
  unsigned char* Vs = Ks + TILE;                // [BT][HS]
  unsigned char* Qs = Vs + TILE;                // [STAGES][BT][HS]
  unsigned char* Os = Qs + STAGES * TILE;       // [STAGES][BT][HS] dO
  unsigned char* Ps = Os + STAGES * TILE;       // [BT keys][BT queries] dS^T
  float* Ls = reinterpret_cast<float*>(Ps + BT * BT * 2); // [STAGES][BT] lse log2 e (+inf: no p)
  float* Dsm = Ls + STAGES * BT;                // [STAGES][BT]
#if BULKQ
  float* Qacc = Dsm + STAGES * BT;              // [BT][HS] fp32, row-major
#endif
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g8 = lane >> 2, t4 = lane & 3;
  const int j0 = blockIdx.x * BT, h = blockIdx.y, b = blockIdx.z;
  const int G = NH / NKV;
  const size_t kv0 = ((size_t)b * NKV + h) * T;
  const float sl = scale * LOG2E;

  for (int x = tid; x < BT * CPR; x += NTHR) {
    const int r = COPY_ROW(x), c = COPY_CHUNK(x), j = j0 + r;
    const size_t off = (kv0 + (j < T ? j : 0)) * HS + c * 8;
    cp_async16(smem_addr(Ks) + COPY_DST(x), k + off, j < T ? 16 : 0);
    cp_async16(smem_addr(Vs) + COPY_DST(x), v + off, j < T ? 16 : 0);
  }
  cp_commit();
  int nQT = W > 0 ? (W + 2 * BT - 2) / BT : 0;          // ceil((W + 63) / 64): queries [j0, j0 + W + 62]
  nQT = min(nQT, (T - j0 + BT - 1) / BT);
  const int total = G * nQT;
  // Q, dO, lse, D of tile x into stage st; always one commit group, empty past the end
  auto issue = [&](int x, int st) {
    if (x < total) {
      const int gi = x / nQT, qa = j0 + (x % nQT) * BT;
      const size_t r0 = ((size_t)b * NH + h * G + gi) * T;
      const u32 qd = smem_addr(Qs + st * TILE), od = smem_addr(Os + st * TILE);
      for (int y = tid; y < BT * CPR; y += NTHR) {
        const int r = COPY_ROW(y), c = COPY_CHUNK(y), i = qa + r;
        const size_t off = (r0 + (i < T ? i : 0)) * HS + c * 8;
        cp_async16(qd + COPY_DST(y), q + off, i < T ? 16 : 0);
        cp_async16(od + COPY_DST(y), dout + off, i < T ? 16 : 0);
      }
#if ASYNCL
      // lse and D as they are, by 4-byte copies (zero past T; a row with a window pair has a finite lse)
      if (tid < BT) {
        const int i = qa + tid;
        cp_async4(smem_addr(Ls + st * BT + tid), lse + r0 + (i < T ? i : 0), i < T ? 4 : 0);
        cp_async4(smem_addr(Dsm + st * BT + tid), Dg + r0 + (i < T ? i : 0), i < T ? 4 : 0);
      }
#else
      for (int r = tid; r < BT; r += NTHR) {
        const int i = qa + r;
        const float L = i < T ? lse[r0 + i] : -FINF;
        Ls[st * BT + r] = L == -FINF ? FINF : L * LOG2E;
        Dsm[st * BT + r] = i < T ? Dg[r0 + i] : 0.f;
      }
#endif
    }
    cp_commit();
  };
#pragma unroll
  for (int p = 0; p < STAGES - 1; p++) issue(p, p);

  // descriptors: K, V as A (K-major, [key][hs]) and as B of dQ (MN-major); Q, dO as B (K-major for S^T and
  // dP^T, MN-major for dK and dV); dS^T as A of dQ (MN-major: queries run along its rows)
  const u64 dKa = DESC_K(smem_addr(Ks)), dVa = DESC_K(smem_addr(Vs));
  const u64 dKb = DESC_MN(smem_addr(Ks), HS);
  const u64 dQk = DESC_K(smem_addr(Qs)), dOk = DESC_K(smem_addr(Os));
  const u64 dQm = DESC_MN(smem_addr(Qs), HS), dOm = DESC_MN(smem_addr(Os), HS);
  const u64 dPa = DESC_MN(smem_addr(Ps), BT);

  float dka[HS / 2], dva[HS / 2];
#pragma unroll
  for (int n = 0; n < HS / 2; n++) dka[n] = dva[n] = 0.f;
  const int wk = w * 16;

  for (int x = 0; x < total; x++) {
    const int st = x % STAGES;
    // tile x's group is done once the STAGES - 2 newer ones may still be pending
    cp_wait<STAGES - 2>();
    fence_async_shared();
    __syncthreads();
    issue(x + STAGES - 1, (x + STAGES - 1) % STAGES);
    const int gi = x / nQT, qa = j0 + (x % nQT) * BT;
    const float* Lst = Ls + st * BT;
    const float* Dst = Dsm + st * BT;
    const u64 sQ = (u64)((st * TILE) >> 4);
    float s[32], dp[32];
    wg_fence();
#pragma unroll
    for (int ks = 0; ks < KS; ks++) wg_ss_n64(s, dKa + KOFF(ks), dQk + sQ + KOFF(ks), ks);
#pragma unroll
    for (int ks = 0; ks < KS; ks++) wg_ss_n64(dp, dVa + KOFF(ks), dOk + sQ + KOFF(ks), ks);
    wg_commit();
    wg_wait<0>();
    reg_fence(s);
    reg_fence(dp);
    // every pair a window pair: queries [qa, qa + 63] all < T, qa >= j0 + 63, qa + 63 - j0 < W
    const bool whole = qa >= j0 + BT - 1 && qa + BT - 1 - j0 < W && qa + BT <= T;
    u32 pa[4][4], sa[4][4];
#pragma unroll
    for (int n = 0; n < 8; n++) {
      float p[4], ds[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int c = n * 8 + 2 * t4 + (e & 1);
        const int d = qa + c - (j0 + wk + g8 + 8 * (e >> 1)); // i - j
        const bool in = whole || (d >= 0 && d < W && qa + c < T);
#if ASYNCL
        p[e] = in ? ex2(s[4 * n + e] * sl - Lst[c] * LOG2E) : 0.f;
#else
        p[e] = in ? ex2(s[4 * n + e] * sl - Lst[c]) : 0.f;
#endif
        ds[e] = p[e] * (dp[4 * n + e] - Dst[c]);
      }
      pa[n >> 1][(n & 1) * 2 + 0] = pack_bf16(p[0], p[1]);
      pa[n >> 1][(n & 1) * 2 + 1] = pack_bf16(p[2], p[3]);
      sa[n >> 1][(n & 1) * 2 + 0] = pack_bf16(ds[0], ds[1]);
      sa[n >> 1][(n & 1) * 2 + 1] = pack_bf16(ds[2], ds[3]);
      // dS^T [key][query] for the dQ product
      *reinterpret_cast<u32*>(Ps + P_OFF(wk + g8, n) + 4 * t4) = sa[n >> 1][(n & 1) * 2 + 0];
      *reinterpret_cast<u32*>(Ps + P_OFF(wk + g8 + 8, n) + 4 * t4) = sa[n >> 1][(n & 1) * 2 + 1];
    }
    fence_async_shared();
    // dV += P^T dO, dK += dS^T Q (k = queries)
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      wg_rs_n${o.HS}_t1(dva, pa[kk][0], pa[kk][1], pa[kk][2], pa[kk][3], dOm + sQ + kk * MNSTEP(HS));
      wg_rs_n${o.HS}_t1(dka, sa[kk][0], sa[kk][1], sa[kk][2], sa[kk][3], dQm + sQ + kk * MNSTEP(HS));
    }
    wg_commit();
#if BULKQ
    if (tid == 0) bulk_wait_read(); // the previous tile's reduction has read Qacc (the barrier tells the rest)
#endif
    __syncthreads(); // every warp's dS^T is in Ps
    // dQ rows qa .. qa + 63 = scale dS K (k = keys)
    float acc[HS / 2];
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; kk++) wg_ss_n${o.HS}_t11(acc, dPa + kk * MNSTEP(BT), dKb + kk * MNSTEP(HS), kk);
    wg_commit();
    wg_wait<0>();
    reg_fence(acc);
    reg_fence(dva);
    reg_fence(dka);
    const size_t r0 = ((size_t)b * NH + h * G + gi) * T;
#if BULKQ
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      float* row = Qacc + (wk + g8 + 8 * rr) * HS + 2 * t4;
#pragma unroll
      for (int n = 0; n < HS / 8; n++) *reinterpret_cast<float2*>(row + n * 8) = make_float2(scale * acc[4 * n + 2 * rr], scale * acc[4 * n + 2 * rr + 1]);
    }
    fence_async_shared();
    __syncthreads();
    if (tid == 0) bulk_add_f32(dq + (r0 + qa) * HS, smem_addr(Qacc), min(BT, T - qa) * HS * 4);
#else
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      const int i = qa + wk + g8 + 8 * rr;
      if (i >= T) continue;
      float* dst = dq + (r0 + i) * HS + 2 * t4;
#pragma unroll
      for (int n = 0; n < HS / 8; n++) red2(dst + n * 8, scale * acc[4 * n + 2 * rr], scale * acc[4 * n + 2 * rr + 1]);
    }
#endif
  }
#if BULKQ
  if (tid == 0) bulk_wait_all(); // the last reduction is done before the block exits
#endif
  cp_wait<0>(); // W = 0: the K/V block's copies were never waited for
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    const int j = j0 + wk + g8 + 8 * rr;
    if (j >= T) continue;
#pragma unroll
    for (int n = 0; n < HS / 8; n++) {
      const size_t at = (kv0 + j) * HS + n * 8 + 2 * t4;
      *reinterpret_cast<float2*>(dk + at) = make_float2(scale * dka[4 * n + 2 * rr], scale * dka[4 * n + 2 * rr + 1]);
      *reinterpret_cast<float2*>(dv + at) = make_float2(dva[4 * n + 2 * rr], dva[4 * n + 2 * rr + 1]);
    }
  }
}
`,
  };
}
