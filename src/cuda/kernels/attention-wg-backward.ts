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
// 512): SW + ASYNCL + BULKQ at HS 64, 2.03 to 1.51 ms; SW + ASYNCL at HS 128, 4.02 to 3.12 ms; with
// QSTAGE (session 10) 1.50 and 2.91 ms: the HS 128 kernel's dQ atomics had cost it 1.4 ms (a lab probe
// without them). Without SW (no-swizzle tiles) it was slower than mma.sync (2.33 ms): bench/RESULTS.md,
// session 8.
//
// Accumulator layout (m64nN, warp w of the warpgroup, g = lane / 4, t = lane % 4): d[i] is
//   (row 16 w + g + 8 ((i >> 1) & 1), column 8 (i >> 2) + 2 t + (i & 1)),
// so S^T's registers 8 kk .. 8 kk + 7 (queries 16 kk .. 16 kk + 15) pack into the A fragment of P^T's
// k-step kk in place. Shared tiles use the 128-byte swizzled layout (SW; the SW_OFF macro) or wgmma.ts's
// no-swizzle layout (copy x writes byte 16 x: row (x / (8 C)) 8 + x % 8, chunk (x / 8) % C, C = HS / 8).
//
// Pipeline: Q, dO, lse and D of query tile x + STAGES - 1 are issued (cp.async, one group a tile) into the
// stage tile x - 1 used: right after the barrier that opens tile x (every wgmma of tile x - 1 was waited
// for before it), or with QSTAGE after tile x's scores, once tile x - 1's dQ bulk reduction has read
// that stage (session 12: waiting for that at the top of a tile held the whole block there, 13% of the
// kernel's stall samples). Each thread fences its completed copies into the async proxy before
// the barrier (fence.proxy.async), and again after writing dS^T (and the dQ tile, BULKQ). KB 128
// (bwdWin2Source) is a lab form with two warpgroups, one per 64 keys; session 10 wrote and compiled it
// (188 registers at HS 64, 251 at HS 128, no spills) but had no device time left to validate or time it,
// so CudaBackend does not run it. Not here: overlap of one tile's dQ with the next tile's S^T, TMA. The
// selected pairs' wgmma kernel is below.

import type { KernelSource } from '../runtime.js';
import { gatedPair, SEL_HELPERS, SEL_PARAMS, SEL_PARAMS_C, keyRanges, keySums, selKeySet, selPairs, WIN_PARAMS, WIN_PARAMS_C } from './attention-tc-backward.js';
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

const RED2 = `// *p += a, p[1] += b
__device__ __forceinline__ void red2(float* p, float a, float b) {
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" :: "l"(p), "f"(a), "f"(b) : "memory");
}
`;

const RED4 = `// p[0..3] += x
__device__ __forceinline__ void red4(float* p, float4 x) {
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" :: "l"(p), "f"(x.x), "f"(x.y), "f"(x.z), "f"(x.w) : "memory");
}
`;

/**
 * fp32 rows staged in shared memory for whole-row reductions (KVROWS, QROWS, ROWQ). Row r's byte c sits at
 * ROT_OFF(r, c), rotated by 32 (r % 8) bytes, so the 8 rows that a warp's store of accumulator pairs writes
 * fall on distinct banks. A row is read back 16 bytes a lane (HS / 4 lanes a row) and added with red4, so a
 * warp's reduction covers whole 128-byte lines instead of 32 bytes of each of 8 rows.
 */
const ROWS = `${RED4}#define ROT_OFF(r, c) ((r) * (HS * 4) + (((c) + 32 * ((r) & 7)) & (HS * 4 - 1)))
`;

/** The thread's rows r0 + g8 and r0 + g8 + 8 (r0 a multiple of 8) of the m64n{HS} accumulator acc, times f, into the staged rows at R. */
const stageRows = (R: string, r0: string, acc: string, f: string): string => `#pragma unroll
      for (int rr = 0; rr < 2; rr++)
#pragma unroll
        for (int n = 0; n < HS / 8; n++)
          *reinterpret_cast<float2*>(${R} + ROT_OFF(${r0} + g8 + 8 * rr, 32 * n + 8 * t4)) = make_float2(${f} * ${acc}[4 * n + 2 * rr], ${f} * ${acc}[4 * n + 2 * rr + 1]);
`;

/**
 * Staged rows of R read back 16 bytes a lane (HS / 4 lanes a row, rpw rows a warp instruction) and added to
 * global rows with red4: n warp instructions it = 0 .. n - 1, `pre` declarations in terms of it, lpr, rpw and
 * lane, `row` the staged row (in terms of those), `val` a per-row int named `name` that `ok` and `dst` use, batch
 * rows read before their reductions (n a multiple of it). batch 4 (lab, PRELOAD): four rows before their four, where red4's memory clobber otherwise keeps
 * each read behind the previous reduction (session 18's Nsight Compute samples: the reductions wait on their
 * reads, short scoreboard).
 */
const rowAdds = (a: { R: string; n: string; pre: string; row: string; name: string; val: string; ok: string; dst: string; batch: number; store?: boolean }): string => `      {
        const int lpr = HS / 4, rpw = 32 / lpr, cl = lane % lpr; // lanes a row, rows a warp instruction
#pragma unroll ${a.batch === 1 ? 4 : 1}
        for (int it0 = 0; it0 < ${a.n}; it0 += ${a.batch}) {
          float4 v4[${a.batch}];
          int x[${a.batch}];
#pragma unroll
          for (int u = 0; u < ${a.batch}; u++) {
            const int it = it0 + u;
            ${a.pre}
            x[u] = ${a.val};
            v4[u] = *reinterpret_cast<const float4*>(${a.R} + ROT_OFF(${a.row}, 16 * cl));
          }
#pragma unroll
          for (int u = 0; u < ${a.batch}; u++) {
            const int ${a.name} = x[u];
            if (${a.ok}) ${a.store ? `*reinterpret_cast<float4*>(${a.dst} + 4 * cl) = v4[u]` : `red4(${a.dst} + 4 * cl, v4[u])`};
          }
        }
      }
`;

/**
 * The warp's own staged rows r0 .. r0 + 15 of R, row r0 + rl added to the global row at dst where ok (both in
 * terms of rl), or stored there (store); preload: PRELOAD's batches (rowAdds).
 */
const addOwnRows = (R: string, r0: string, dst: string, ok: string, preload = false, store = false): string =>
  rowAdds({ R, n: '16 / rpw', pre: 'const int rl = it * rpw + lane / lpr;', row: `${r0} + rl`, name: 'rl', val: 'rl', ok, dst, batch: preload ? 4 : 1, store });

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
   * With BULKQ: the dQ tile staged in the Q and dO stage its tile has just finished with (rows 0-31 in
   * Q's, 32-63 in dO's, fp32, one bulk reduction each), read out before issue() refills that stage,
   * instead of in 16 KiB (HS 64) or 32 KiB (HS 128) of its own (default false).
   */
  QSTAGE?: boolean;
  /**
   * With QSTAGE: the staged dQ tile's rows rotated as the selected pairs' KVROWS stages them (no bank
   * conflicts), and each warp adds its own 16 rows a whole row at a time with red.global.add.v4, instead
   * of the tile's two bulk reductions after a barrier (default false). Session 18: window pairs 2.87 to 2.65 ms
   * at HS 128, 64K. (Storing each 16-row slice of dq by the first warp to reach it, a ticket per slice, so
   * that prep need not zero dq, was slower: layer 8.13 to 8.15 ms against 8.08 to 8.09.)
   */
  ROWQ?: boolean;
  /** With ROWQ: the staged rows read four at a time ahead of their reductions, as WgSelVariant's PRELOAD (lab, not yet run). */
  PRELOAD?: boolean;
  /**
   * With ROWQ: dq needs no zeros, so prep does not write them. Each 64-query tile's dQ belongs to the
   * earliest key block that reaches it, max(0, tile - nQT + 1) for nQT tiles a block, which stores it;
   * every other block adds to it once the owner's warp has raised that warp's flag for the tile. Blocks
   * walk their tiles last first, so the owner reaches its tile on its first iteration and the others one
   * to eight iterations later. The flag is read (relaxed) two thirds into the tile and looked at after
   * its dQ product; a wait is rare. Extra last arguments: unsigned* qflag (B, NH, ceil(T / 64), 4) and
   * the call's epoch (a flag is up when it holds it: no zeroing between calls). Needs W > 0 (every query
   * row then has a window pair, so its tile has an owner), and blocks dispatched in order of index (an
   * owner has a lower index than the blocks that wait on it). H100, HS 128, 64K (session 20): prep 0.372
   * to 0.195 ms, window pairs 2.47 to 2.62 with the flag read at the tile's start; layer fwd+bwd 8.05 to
   * 7.93 with the read where it is now. (Session 18's claim of each slice by an atomic ticket was slower.)
   */
  OWNQ?: boolean;
  /**
   * Keys per block (default 64). 128: two warpgroups, one per 64 keys, share each query tile's Q, dO,
   * lse and D, and the tile's dQ is formed over all 128 keys by one of them (alternating) and reduced
   * once, so a query row gets about half the dQ reductions and tile loads (bwdWin2Source). Needs SW,
   * ASYNCL, BULKQ and QSTAGE; STAGES 2.
   */
  KB?: 64 | 128;
  /**
   * Shared tiles in the 128-byte swizzled layout (rows of 128 bytes, 16-byte chunk c of row r at chunk
   * c ^ (r % 8); HS 128 as two such tiles of 64 columns) instead of no-swizzle core matrices (default false).
   */
  SW?: boolean;
}

const BT = 64;
const NTHR = 128;

function full(v: WgWindowVariant): Required<WgWindowVariant> {
  return { STAGES: 2, MINB: 0, ASYNCL: false, BULKQ: false, QSTAGE: false, ROWQ: false, PRELOAD: false, OWNQ: false, SW: false, KB: 64, ...v };
}

export const bwdWinWgName = (v: WgWindowVariant): string => {
  const o = full(v);
  if (o.KB === 128) return `spk_bwd_win2_wg_hs${o.HS}${o.MINB ? `_mb${o.MINB}` : ''}`;
  return `spk_bwd_win_wg_hs${o.HS}_s${o.STAGES}${o.MINB ? `_mb${o.MINB}` : ''}${o.ASYNCL ? '_al' : ''}${o.BULKQ ? (o.QSTAGE ? '_bqs' : '_bq') : ''}${o.ROWQ ? (o.PRELOAD ? '_rqp' : '_rq') : ''}${o.OWNQ ? '_oq' : ''}${o.SW ? '_sw' : ''}`;
};

/** Threads per block: a warpgroup per 64 keys. */
export const bwdWinWgThreads = (v: WgWindowVariant): number => (v.KB === 128 ? 2 * NTHR : NTHR);

/** Grid x: one block per KB keys. */
export const bwdWinWgBlocks = (v: WgWindowVariant, T: number): number => Math.ceil(T / (v.KB ?? BT));

/** OWNQ's flags (u32): one for each warp of each 64-query tile of each (b, query head). */
export const bwdWinWgFlags = (B: number, NH: number, T: number): number => B * NH * Math.ceil(T / BT) * 4;

/** Dynamic shared bytes: K and V, STAGES of Q and dO, dS^T, STAGES of lse and D. 57 KiB at HS 64, 2 stages. */
export function bwdWinWgShared(v: WgWindowVariant): number {
  const o = full(v), tile = BT * o.HS * 2;
  if (o.KB === 128) return 1024 + 4 * tile + 2 * 2 * tile + 2 * BT * BT * 2 + 2 * 2 * BT * 4;
  return 2 * tile + o.STAGES * 2 * tile + BT * BT * 2 + o.STAGES * 2 * BT * 4 + (o.BULKQ && !o.QSTAGE ? BT * o.HS * 4 : 0) + (o.SW ? 1024 : 0);
}

/** The window kernels' device functions besides the PTX wrappers: the 4-byte cp.async. */
const WIN_DEVICE_FNS = `__device__ __forceinline__ void cp_async4(u32 dst, const void* src, int bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" :: "r"(dst), "l"(src), "r"(bytes) : "memory");
}
`;

/** The window kernels' issue(x, st): query tile x's Q, dO, lse and D into stage st (one commit group). */
const WIN_ISSUE = `  // Q, dO, lse, D of tile x into stage st; always one commit group, empty past the end
  auto issue = [&](int x, int st) {
    if (x < total) {
      const int gi = x / nQT, qa = j0 + QT_OF(x) * BT;
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
`;

/** QSTAGE: the two bulk reductions of the dQ tile staged over stage st's Q (rows 0-31) and dO (32-63). */
const WIN_DQ_BULK = `    if (tid == 0) {
      const int n0 = min(BT / 2, T - qa), n1 = min(BT / 2, T - qa - BT / 2);
      bulk_add_f32(dq + (r0 + qa) * HS, smem_addr(Qs + st * TILE), n0 * HS * 4);
      if (n1 > 0) bulk_add_f32(dq + (r0 + qa + BT / 2) * HS, smem_addr(Os + st * TILE), n1 * HS * 4);
    }
`;

/** The window kernels' Q, dO and dS^T descriptors (stage 0; a stage adds sQ) and their zeroed dK, dV accumulators. */
const WIN_QDESC = `  const u64 dQk = DESC_K(smem_addr(Qs)), dOk = DESC_K(smem_addr(Os));
  const u64 dQm = DESC_MN(smem_addr(Qs), HS), dOm = DESC_MN(smem_addr(Os), HS);
  const u64 dPa = DESC_MN(smem_addr(Ps), BT);

  float dka[HS / 2], dva[HS / 2];
#pragma unroll
  for (int n = 0; n < HS / 2; n++) dka[n] = dva[n] = 0.f;
`;

/** The window kernels' end: each thread's dK (times scale) and dV rows of the keys from jb, stored. */
const winStore = (jb: string): string => `#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    const int j = ${jb} + wk + g8 + 8 * rr;
    if (j >= T) continue;
#pragma unroll
    for (int n = 0; n < HS / 8; n++) {
      const size_t at = (kv0 + j) * HS + n * 8 + 2 * t4;
      *reinterpret_cast<float2*>(dk + at) = make_float2(scale * dka[4 * n + 2 * rr], scale * dka[4 * n + 2 * rr + 1]);
      *reinterpret_cast<float2*>(dv + at) = make_float2(dva[4 * n + 2 * rr], dva[4 * n + 2 * rr + 1]);
    }
  }
`;

/**
 * One query tile's work for the window kernel's 64 keys from jb (this warpgroup's): S^T and dP^T (wgmma from
 * shared memory), P^T and dS^T under the band mask, dS^T into Pw for the dQ product, then dV += P^T dO and
 * dK += dS^T Q issued (committed by the caller). Needs the kernel's qa, st's sQ, Lst, Dst, descriptors.
 */
const winTile = (jb: string, Pw: string, HS: number): string => `    float s[32], dp[32];
    wg_fence();
#pragma unroll
    for (int ks = 0; ks < KS; ks++) wg_ss_n64(s, dKa + KOFF(ks), dQk + sQ + KOFF(ks), ks);
#pragma unroll
    for (int ks = 0; ks < KS; ks++) wg_ss_n64(dp, dVa + KOFF(ks), dOk + sQ + KOFF(ks), ks);
    wg_commit();
    wg_wait<0>();
    reg_fence(s);
    reg_fence(dp);
    // every pair a window pair: queries [qa, qa + 63] all < T, qa >= ${jb} + 63, qa + 63 - ${jb} < W
    const bool whole = qa >= ${jb} + BT - 1 && qa + BT - 1 - ${jb} < W && qa + BT <= T;
    u32 pa[4][4], sa[4][4];
#pragma unroll
    for (int n = 0; n < 8; n++) {
      float p[4], ds[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int c = n * 8 + 2 * t4 + (e & 1);
        const int d = qa + c - (${jb} + wk + g8 + 8 * (e >> 1)); // i - j
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
      *reinterpret_cast<u32*>(${Pw} + P_OFF(wk + g8, n) + 4 * t4) = sa[n >> 1][(n & 1) * 2 + 0];
      *reinterpret_cast<u32*>(${Pw} + P_OFF(wk + g8 + 8, n) + 4 * t4) = sa[n >> 1][(n & 1) * 2 + 1];
    }
    fence_async_shared();
    // dV += P^T dO, dK += dS^T Q (k = queries)
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      wg_rs_n${HS}_t1(dva, pa[kk][0], pa[kk][1], pa[kk][2], pa[kk][3], dOm + sQ + kk * MNSTEP(HS));
      wg_rs_n${HS}_t1(dka, sa[kk][0], sa[kk][1], sa[kk][2], sa[kk][3], dQm + sQ + kk * MNSTEP(HS));
    }
`;

/**
 * Launch: grid (ceil(T / 64), NKV, B), block 128, dynamic shared bwdWinWgShared(v) (opt in above 48 KiB).
 * Parameters as spk_bwd_win's (bwdWinSource). Requires 16-byte aligned rows.
 */
export function bwdWinWgSource(v: WgWindowVariant): KernelSource {
  const o = full(v);
  if (o.KB === 128) return bwdWin2Source(o);
  if (o.ROWQ && !(o.QSTAGE && o.BULKQ)) throw new Error('spk_bwd_win_wg: ROWQ stages dQ as QSTAGE does (needs QSTAGE and BULKQ)');
  if (o.PRELOAD && !o.ROWQ) throw new Error('spk_bwd_win_wg: PRELOAD reads the rows ROWQ stages (needs ROWQ)');
  if (o.OWNQ && !o.ROWQ) throw new Error('spk_bwd_win_wg: OWNQ stores the rows ROWQ stages (needs ROWQ)');
  const name = bwdWinWgName(o);
  return {
    name,
    archSpecific: true,
    params: o.OWNQ ? [...WIN_PARAMS, 'ptr', 'i32'] : WIN_PARAMS,
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
#define QSTAGE ${o.BULKQ && o.QSTAGE ? 1 : 0}
#define ROWQ ${o.ROWQ ? 1 : 0}
#define OWNQ ${o.OWNQ ? 1 : 0}
// tile x's place among the block's query tiles: OWNQ walks them last first
#define QT_OF(x) (OWNQ ? nQT - 1 - (x) % nQT : (x) % nQT)
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
${WIN_DEVICE_FNS}${BULK_REDUCE}
${RED2}${o.ROWQ ? ROWS : ''}
extern "C" __global__ void __launch_bounds__(NTHR${o.MINB ? `, ${o.MINB}` : ''}) ${name}(
${WIN_PARAMS_C}${o.OWNQ ? `,
    unsigned* qflag,                  // (B, NH, ceil(T / 64), 4) each tile's warp flags (OWNQ)
    unsigned epoch                    // this call's flag value\n` : ''}) {
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
#if BULKQ && !QSTAGE
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
${o.OWNQ ? `  const int nQT0 = (W + 2 * BT - 2) / BT;             // tiles of a block away from the end: the owners' spacing
` : ''}${WIN_ISSUE}#pragma unroll
  for (int p = 0; p < STAGES - 1; p++) issue(p, p);

  // descriptors: K, V as A (K-major, [key][hs]) and as B of dQ (MN-major); Q, dO as B (K-major for S^T and
  // dP^T, MN-major for dK and dV); dS^T as A of dQ (MN-major: queries run along its rows)
  const u64 dKa = DESC_K(smem_addr(Ks)), dVa = DESC_K(smem_addr(Vs));
  const u64 dKb = DESC_MN(smem_addr(Ks), HS);
${WIN_QDESC}  const int wk = w * 16;

  for (int x = 0; x < total; x++) {
    const int st = x % STAGES;
    // tile x's group is done once the STAGES - 2 newer ones may still be pending
    cp_wait<STAGES - 2>();
    fence_async_shared();
    __syncthreads();
#if !QSTAGE
    issue(x + STAGES - 1, (x + STAGES - 1) % STAGES);
#endif
    const int gi = x / nQT, qa = j0 + QT_OF(x) * BT;
    const float* Lst = Ls + st * BT;
    const float* Dst = Dsm + st * BT;
    const u64 sQ = (u64)((st * TILE) >> 4);
${winTile('j0', 'Ps', o.HS)}#if OWNQ
    // whether the block owns the tile, and the flag of this warp's rows (both made again where used: registers
    // are short). The flag is read here, two thirds into the tile, and looked at after its dQ product: late
    // enough that the owner, a block that started about as early, has mostly finished the tile by now
    // (read at the tile's start, it was often not yet up), early enough that the load's latency passes
#define OWNS (int)blockIdx.x == max(0, qa / BT - nQT0 + 1)
#define QFLAG (qflag + (((size_t)b * NH + h * G + gi) * ((T + BT - 1) / BT) + qa / BT) * 4 + w)
    unsigned up = 0;
    if (!(OWNS) && lane == 0) asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(up) : "l"(QFLAG) : "memory");
#endif
    wg_commit();
#if BULKQ
    // QSTAGE: tile x - 1's dQ has been read from the stage issue() refills next (waited for here, after
    // this tile's scores, rather than at the top, where the whole block would wait on the bulk copy);
    // else: the previous tile's reduction has read Qacc (the barrier tells the rest). ROWQ: no bulk copies
    if (!ROWQ && tid == 0) bulk_wait_read();
#endif
    __syncthreads(); // every warp's dS^T is in Ps
#if QSTAGE
    issue(x + STAGES - 1, (x + STAGES - 1) % STAGES);
#endif
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
#if QSTAGE && ROWQ
    __syncthreads(); // every product that read stage st is complete
    {
      // the warp's 16 rows (wk .. wk + 15: rows 0-31 in Q's stage, 32-63 in dO's), then added by the same
      // warp; stage st is refilled only after the next tile's second barrier
      unsigned char* half = (w < 2 ? Qs : Os) + st * TILE;
${stageRows('half', '(wk & 31)', 'acc', 'scale')}      __syncwarp();
${o.OWNQ ? `      if (OWNS) {
${addOwnRows('half', '(wk & 31)', 'dq + (r0 + qa + wk + rl) * HS', 'qa + wk + rl < T', o.PRELOAD, true)}        __threadfence(); // (each lane's stores before the flag: the fence, then the warp's barrier)
        __syncwarp();
        if (lane == 0) asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" :: "l"(QFLAG), "r"(epoch) : "memory");
      } else {
        if (lane == 0) while (up != epoch) {
          __nanosleep(64);
          asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(up) : "l"(QFLAG) : "memory");
        }
        __syncwarp(); // (the adds below are issued once the flag is seen up: after the owner's stores)
${addOwnRows('half', '(wk & 31)', 'dq + (r0 + qa + wk + rl) * HS', 'qa + wk + rl < T', o.PRELOAD)}      }
` : addOwnRows('half', '(wk & 31)', 'dq + (r0 + qa + wk + rl) * HS', 'qa + wk + rl < T', o.PRELOAD)}    }
#elif QSTAGE
    __syncthreads(); // every product that read stage st is complete
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      float* row = reinterpret_cast<float*>((w < 2 ? Qs : Os) + st * TILE) + ((wk & 31) + g8 + 8 * rr) * HS + 2 * t4;
#pragma unroll
      for (int n = 0; n < HS / 8; n++) *reinterpret_cast<float2*>(row + n * 8) = make_float2(scale * acc[4 * n + 2 * rr], scale * acc[4 * n + 2 * rr + 1]);
    }
    fence_async_shared();
    __syncthreads();
${WIN_DQ_BULK}#elif BULKQ
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
${winStore('j0')}}
`,
  };
}

/**
 * KB 128: the window pairs of 128 keys [j0, j0 + 128) a block, warpgroup w owning keys jw = j0 + 64 w .. jw + 63
 * (its K and V tile, its dK and dV in registers). Both share each query tile of the band [j0, j0 + W + 126]
 * (ceil((W + 127) / 64) tiles, against ceil((W + 63) / 64) per 64 keys): a warpgroup whose keys have no
 * pair with the tile skips it (the band's first tile for warpgroup 1, its last for warpgroup 0). Per tile:
 *   each warpgroup: winTile (S^T, dP^T, mask, dS^T into its half of Ps, dV and dK issued)
 *   barrier; warpgroup x % 2 (the other when it skipped) forms dQ = dS K over both halves' keys (k = 128)
 *   barrier; it stages dQ in the tile's Q/dO stage (QSTAGE); barrier; two bulk reductions
 * so each query row's dQ is reduced about once per 128 keys instead of per 64.
 */
function bwdWin2Source(o: Required<WgWindowVariant>): KernelSource {
  if (!(o.SW && o.ASYNCL && o.BULKQ && o.QSTAGE) || o.STAGES !== 2) throw new Error('spk_bwd_win2_wg: KB 128 is built with SW, ASYNCL, BULKQ, QSTAGE and STAGES 2');
  const name = bwdWinWgName(o), HS = o.HS;
  return {
    name,
    archSpecific: true,
    params: WIN_PARAMS,
    source: `${WGMMA_PRELUDE}
#define HS ${HS}
#define BT ${BT}
#define NTHR ${2 * NTHR}
#define KS (HS / 16)
#define CPR (HS / 8)
#define TILE (BT * HS * 2)
#define PT (BT * BT * 2)
#define STAGES 2
#define ASYNCL 1
#define DQN 64                // dQ columns a warpgroup forms (HS 128: half each)
#define DQC ${HS === 64 ? '0' : '(wg * 64)'}  // its first column
#define QT_OF(x) ((x) % nQT)  // tile x's place among the block's query tiles
${SW128}
#define LOG2E 1.4426950408889634f
${wgmmaSS(64)}
${wgmmaRS(HS, 1)}
${wgmmaSS(64, 1, 1)}
${WIN_DEVICE_FNS}${BULK_REDUCE}
extern "C" __global__ void __launch_bounds__(NTHR${o.MINB ? `, ${o.MINB}` : ''}) ${name}(
${WIN_PARAMS_C}) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  unsigned char* Ks = smem;                     // [2][BT][HS]: warpgroup w's keys at w TILE
  unsigned char* Vs = Ks + 2 * TILE;            // [2][BT][HS]
  unsigned char* Qs = Vs + 2 * TILE;            // [STAGES][BT][HS]
  unsigned char* Os = Qs + STAGES * TILE;       // [STAGES][BT][HS] dO
  unsigned char* Ps = Os + STAGES * TILE;       // [2][BT keys][BT queries] dS^T, warpgroup w's keys at w PT
  float* Ls = reinterpret_cast<float*>(Ps + 2 * PT); // [STAGES][BT] lse
  float* Dsm = Ls + STAGES * BT;                // [STAGES][BT]
  const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7, g8 = lane >> 2, t4 = lane & 3;
  const int wk = ((tid >> 5) & 3) * 16;         // the warp's 16 keys of its warpgroup's tile
  const int j0 = blockIdx.x * 2 * BT, jw = j0 + wg * BT, h = blockIdx.y, b = blockIdx.z;
  const int G = NH / NKV;
  const size_t kv0 = ((size_t)b * NKV + h) * T;
  const float sl = scale * LOG2E;

  for (int x = tid; x < 2 * BT * CPR; x += NTHR) {
    const int tt = x / (BT * CPR), y = x % (BT * CPR);
    const int r = COPY_ROW(y), c = COPY_CHUNK(y), j = j0 + tt * BT + r;
    const size_t off = (kv0 + (j < T ? j : 0)) * HS + c * 8;
    cp_async16(smem_addr(Ks + tt * TILE) + COPY_DST(y), k + off, j < T ? 16 : 0);
    cp_async16(smem_addr(Vs + tt * TILE) + COPY_DST(y), v + off, j < T ? 16 : 0);
  }
  cp_commit();
  int nQT = W > 0 ? (W + 3 * BT - 2) / BT : 0;          // ceil((W + 127) / 64): queries [j0, j0 + W + 126]
  nQT = min(nQT, (T - j0 + BT - 1) / BT);
  const int total = G * nQT;
${WIN_ISSUE}  issue(0, 0);

  // descriptors: this warpgroup's K, V as A of S^T, dP^T; both key tiles' K as B of dQ (MN-major, a k-step
  // of 16 keys in tile kk / 4); Q, dO as B (K-major for S^T and dP^T, MN-major for dK and dV); both halves
  // of Ps as A of dQ (MN-major)
  const u64 dKa = DESC_K(smem_addr(Ks + wg * TILE)), dVa = DESC_K(smem_addr(Vs + wg * TILE));
  const u64 dKb = DESC_MN(smem_addr(Ks) + DQC * BT * 2, DQN); // HS 128: warpgroup w's 64-column sub-tile of K
${WIN_QDESC}
  for (int x = 0; x < total; x++) {
    const int st = x & 1;
    cp_wait<0>();
    fence_async_shared();
    if (tid == 0) bulk_wait_read(); // tile x - 1's dQ has been read from the stage issue() refills next
    __syncthreads();
    issue(x + 1, st ^ 1);
    const int gi = x / nQT, qa = j0 + (x % nQT) * BT;
    // which warpgroups' keys have a pair 0 <= i - j < W with the tile's queries
    const bool rel0 = qa + BT - 1 >= j0 && qa - j0 - (BT - 1) < W;
    const bool rel1 = j0 + BT < T && qa + BT - 1 >= j0 + BT && qa - j0 - (2 * BT - 1) < W;
    const float* Lst = Ls + st * BT;
    const float* Dst = Dsm + st * BT;
    const u64 sQ = (u64)((st * TILE) >> 4);
    if (wg ? rel1 : rel0) {
${winTile('jw', 'Ps + wg * PT', HS).replace(/^(?=.)/gm, '  ')}      wg_commit();
    }
    __syncthreads(); // both halves of dS^T are in Ps
    // dQ rows qa .. qa + 63 = scale dS K over the keys of the warpgroups that took the tile: at HS 64 by
    // warpgroup x % 2 (the other when it skipped the tile), at HS 128 columns 64 w .. 64 w + 63 by each w
    const int k0 = rel0 ? 0 : 4, k1 = rel1 ? 8 : 4;
    const bool dqw = ${HS === 64 ? 'wg == (rel1 && ((x & 1) || !rel0) ? 1 : 0)' : 'true'};
    float acc[DQN / 2];
    if (dqw) {
      wg_fence();
      for (int kk = k0; kk < k1; kk++)
        wg_ss_n64_t11(acc, dPa + (u64)((((kk >> 2) * PT) >> 4) + (kk & 3) * MNSTEP(BT)), dKb + (u64)((((kk >> 2) * TILE) >> 4) + (kk & 3) * MNSTEP(HS)), kk - k0);
      wg_commit();
    }
    wg_wait<0>();
    reg_fence(dva);
    reg_fence(dka);
    __syncthreads(); // every product that read stage st is complete
    const size_t r0 = ((size_t)b * NH + h * G + gi) * T;
    if (dqw) {
      reg_fence(acc);
#pragma unroll
      for (int rr = 0; rr < 2; rr++) {
        float* row = reinterpret_cast<float*>((wk < 32 ? Qs : Os) + st * TILE) + ((wk & 31) + g8 + 8 * rr) * HS + DQC + 2 * t4;
#pragma unroll
        for (int n = 0; n < DQN / 8; n++) *reinterpret_cast<float2*>(row + n * 8) = make_float2(scale * acc[4 * n + 2 * rr], scale * acc[4 * n + 2 * rr + 1]);
      }
      fence_async_shared();
    }
    __syncthreads();
${WIN_DQ_BULK}  }
  if (tid == 0) bulk_wait_all(); // the last reduction is done before the block exits
  cp_wait<0>(); // W = 0: the K/V block's copies were never waited for
${winStore('jw')}}
`,
  };
}

// ---- selected pairs ------------------------------------------------------------------------------

/**
 * The selected pairs (i - j >= W, j in Sel_i) on wgmma: spk_bwd_sel's work and results (same parameters,
 * SEL_PARAMS) in a Hopper form. One block of two warpgroups per QB queries [i0, i0 + QB) and KV head,
 * over spk_bwd_sel's key set for such a block (selKeySet): Sel_{i0} (gathered by cp.async) and those of
 * the <= QB - 1 new candidates (i0 - W, i0 + QB - 1 - W] that some block row selects, with each key's
 * rows [lo, hi) of the block that select it.
 * Warpgroup w takes the 64-query chunks c = w QB / 128 .. (w + 1) QB / 128 - 1; per key tile of 64:
 *   S^T = K Q_c^T, dP^T = V dO_c^T    m64n64k16 from shared memory, chunk by chunk
 *   mask, gate, P g and dS^T          into shared [64 keys][QB queries] tiles Gs and Ps
 *   dV = (P g)^T dO  (warpgroup 0)    m64n{HS}k16 over all QB queries, A = Gs K-major, B = dO MN-major
 *   dK = dS^T Q      (warpgroup 1)    the same with Ps and Q; each added to its key rows by red.global.add
 *   dQ_c += dS_c K                    A = Ps (chunk c's part) MN-major, B = K MN-major; in registers over
 *                                     the tiles, added to dq once per head
 * Three block barriers a tile: its copies landed; Gs and Ps complete; the tile done. Each gathered K/V
 * row and each dK/dV row reduction serves QB queries, and every product reads its operands from shared
 * memory once per warpgroup instead of once per warp (mma.sync). Tiles use the 128-byte swizzle (SW128).
 * Measured (H100, 64K, K = W = 512; bench/RESULTS.md, session 9): at HS 128 and QB 128, 6.62 to 4.1 ms
 * against spk_bwd_sel (QB 64 there: QB 128 did not fit its registers and shared memory); at HS 64 and
 * QB 128 level with spk_bwd_sel at QB 128 (2.74 against 2.78 ms), also with the warpgroups on alternate
 * key tiles instead of in lockstep (2.80), so that kernel is bound by the L2 traffic of its gathers and
 * reductions, which QB 256 cuts to 0.6 per query. Session 10: dropping the new candidates no row selects,
 * 2.32 to 1.81 ms at HS 64, 4.07 to 3.51 at HS 128. Lab probes then: without the dK/dV reductions 1.38 ms,
 * with K/V copied from consecutive rows instead of gathered no change; the same reductions as bulk
 * reductions from shared memory (cp.reduce.async.bulk a row) or as red.global.add.v4 were no faster.
 * Session 17 (HS 128, 64K): Nsight Compute put 44% of the stall samples on the red.global.add.v2 of dK and
 * dV (throttled by the memory queue, and waiting for their registers). Staged rows added a whole row a warp
 * (KVROWS) take 3.43 to 3.21 ms: each warp reduction covers four 128-byte lines instead of 32 bytes of
 * eight rows. Bulk reductions of the staged rows were slower (4.00 ms; 4.36 with rows staged rotated, two
 * bulk copies a row), and so were KVROWS's reductions moved under the next tile's score products (3.26).
 */
export interface WgSelVariant {
  HS: 64 | 128;
  /** __launch_bounds__ minimum blocks per SM (0: none). */
  MINB?: number;
  /** Queries per block (default 128); 256 is built for HS 64 (dQ of 128 queries a warpgroup). */
  QB?: 128 | 256;
  /**
   * dK and dV of a tile staged in shared memory as fp32 rows (dV in a region of its own, dK over Ps and Gs),
   * then read back a whole row a warp (16 bytes a lane) and added by red.global.add.v4, so a warp's
   * reduction covers one row's contiguous bytes instead of 32 bytes of each of 8 rows (default false:
   * red.global.add.v2 from the accumulators). 32 KiB more shared memory at HS 128, 16 KiB at HS 64.
   */
  KVROWS?: boolean;
  /**
   * With KVROWS: the block's dq rows at the end of each head staged the same way (each warp its own 16
   * rows) and added a whole row at a time, instead of red.global.add.v2 from the accumulators (default
   * false). Session 18, HS 128 at 64K: layer forward + backward 8.46 to 8.33 ms.
   */
  QROWS?: boolean;
  /**
   * A block's candidate tile holding at most 16 keys (most of them, late in a row: session 17's count at
   * 64K with random scores, 411 of 512 blocks a head) taken transposed, with the keys as the products' N:
   * S = Q_c K^T and dP = dO_c V^T as m64n16, dQ_c += dS_c K with dS from registers (one k-step), and
   * dV^T = dO^T (P g), dK^T = Q^T dS as m64n16 over the block's queries, so the tile costs about a quarter
   * of a full one (default false). Session 18, HS 128 at 64K: layer 8.46 to 8.43 ms, where about 0.2 ms was
   * expected; at HS 64 with QB 256 it spills.
   */
  NARROW?: boolean;
  /** With NARROW and KVROWS: the narrow tile's dK and dV staged as its 16 key rows and added a whole row a warp (lab, not yet run). */
  NROWS?: boolean;
  /**
   * With KVROWS (and QROWS): the staged rows read four at a time ahead of their four reductions (lab, written in
   * session 18 after Nsight Compute put the reductions waiting on their shared-memory reads; not yet run).
   */
  PRELOAD?: boolean;
}

const SEL_THREADS = 2 * NTHR;

export const bwdSelWgName = (v: WgSelVariant): string =>
  `spk_bwd_sel_wg_hs${v.HS}${v.MINB ? `_mb${v.MINB}` : ''}${v.QB === 256 ? '_qb256' : ''}${v.KVROWS ? '_kvrows' : ''}${v.QROWS ? '_qrows' : ''}${v.NARROW ? (v.NROWS ? '_narrowr' : '_narrow') : ''}${v.PRELOAD ? '_pre' : ''}`;

/** Threads per block of the selected-pairs kernel: two warpgroups. */
export const BWD_SEL_WG_THREADS = SEL_THREADS;

/** Grid x: one block per QB queries. */
export const bwdSelWgBlocks = (v: WgSelVariant, T: number): number => Math.ceil(T / (v.QB ?? 128));

/**
 * Dynamic shared bytes: K and V double-buffered, Q and dO of QB queries, Ps and Gs, KVROWS's dV rows, the
 * 1024-byte alignment, per query 8 + 20 bytes (24 with NARROW's qnum), per key 20 bytes (ceil(K / 64) + QB / 64
 * tiles at most).
 * At K = 512: 183 KiB at HS 64, QB 256 (what CudaBackend runs), 177 KiB at HS 128, QB 128, so one
 * block an SM, as the registers allow anyway.
 */
export function bwdSelWgShared(v: WgSelVariant, K: number): number {
  const tile = BT * v.HS * 2, QB = v.QB ?? 128;
  return 1024 + (4 + 4 * (QB / 128)) * tile + 2 * 2 * BT * QB + (v.KVROWS ? BT * v.HS * 4 : 0) + QB * (8 + (v.NARROW ? 6 : 5) * 4) + (Math.ceil(K / BT) + QB / BT) * BT * 20;
}

/** One chunk's mask, gate, P g and dS^T (into Gs and Ps at chunk ch), dg sums (kdg, num) from s and dp. */
const selMask = (ch: string, num: string): string => `#pragma unroll
      for (int n = 0; n < 8; n++) {
        const int c0 = (${ch}) * 64 + n * 8 + 2 * t4; // block row of this thread's first column
${selPairs('s[4 * n + e]', 'dp[4 * n + e]', num)}        const int ch = (${ch}) * 8 + n;
        *reinterpret_cast<u32*>(Gs + P_OFF(wk + g8, ch) + 4 * t4) = pack_bf16(pg[0], pg[1]);
        *reinterpret_cast<u32*>(Gs + P_OFF(wk + g8 + 8, ch) + 4 * t4) = pack_bf16(pg[2], pg[3]);
        *reinterpret_cast<u32*>(Ps + P_OFF(wk + g8, ch) + 4 * t4) = pack_bf16(ds[0], ds[1]);
        *reinterpret_cast<u32*>(Ps + P_OFF(wk + g8 + 8, ch) + 4 * t4) = pack_bf16(ds[2], ds[3]);
      }
`;

/** S^T and dP^T of the tile in stage offset so against the chunk whose K-major Q and dO descriptors are qk, ok. */
const selScores = (qk: string, ok: string): string => `      float s[32], dp[32];
      wg_fence();
#pragma unroll
      for (int ks = 0; ks < KS; ks++) wg_ss_n64(s, dKa + so + KOFF(ks), ${qk} + KOFF(ks), ks);
#pragma unroll
      for (int ks = 0; ks < KS; ks++) wg_ss_n64(dp, dVa + so + KOFF(ks), ${ok} + KOFF(ks), ks);
      wg_commit();
      wg_wait<0>();
      reg_fence(s);
      reg_fence(dp);
`;

/** acc (+)= A B over the block's 128 queries: A = [BT keys][QB] K-major (descriptor a), B = Q or dO MN-major (b). */
const overQueries = (acc: string, a: string, b: string, HS: number): string => `#pragma unroll
      for (int kk = 0; kk < QB / 16; kk++)
        wg_ss_n${HS}_t01(${acc}, ${a} + KOFF(kk), ${b} + (u64)((((kk >> 2) * TILE) >> 4) + (kk & 3) * MNSTEP(HS)), kk);
`;

/** red.global.add of acc (m64n{HS} layout, times f) to the tile's key rows of dst. */
const toKeyRows = (acc: string, dst: string, f: string): string => `#pragma unroll
      for (int rr = 0; rr < 2; rr++) {
        const int j = mpos[t * BT + wk + g8 + 8 * rr];
        if (j < 0) continue;
        float* row = ${dst} + (kv0 + j) * HS + 2 * t4;
#pragma unroll
        for (int n = 0; n < HS / 8; n++) red2(row + n * 8, ${f} * ${acc}[4 * n + 2 * rr], ${f} * ${acc}[4 * n + 2 * rr + 1]);
      }
`;

/**
 * dq rows += scale acc for the rows of chunk ch (m64n{HS} layout), by reductions (red.global.add), which
 * do not wait for the rows as a load and store would.
 */
const toQueryRows = (acc: string, ch: string): string => `#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      const int i = i0 + (${ch}) * 64 + wk + g8 + 8 * rr;
      if (i >= T) continue;
#pragma unroll
      for (int n = 0; n < HS / 8; n++) red2(dq + (r0 + i) * HS + n * 8 + 2 * t4, scale * ${acc}[4 * n + 2 * rr], scale * ${acc}[4 * n + 2 * rr + 1]);
    }
`;

/**
 * KVROWS, after the tile's products: its dV (warpgroup 0, into Rv) and dK times scale (warpgroup 1, over Ps
 * and Gs, free once the barrier has passed) staged as fp32 rows, then added to their key rows a whole row a
 * warp: HS / 4 lanes a row, 16 bytes each (LDS.128, then red.global.add.v4). Row r's byte c sits at
 * (c + 32 (r % 8)) mod the row's bytes, so the 8 rows a warp's staging store writes fall on distinct banks.
 * Each warpgroup reads only the rows it staged (its own barrier between); Rv is written again after the next
 * tile's products and Ps and Gs by its masks, both past the next tile's first barrier.
 * Measured at 64K (H100, session 17): the selected pairs 3.43 to 3.21 ms at HS 128, 1.74 to 1.68 at HS 64.
 */
const kvRows = (preload: boolean): string => `      __syncthreads(); // Gs, Ps and stage st are free again
      {
        unsigned char* R = wg ? Ps : Rv;
        const float f = wg ? scale : 1.f;
${stageRows('R', 'wk', 'acc', 'f')}      }
      asm volatile("bar.sync %0, 128;" :: "r"(1 + wg) : "memory"); // the warpgroup's rows are staged
      {
        const unsigned char* R = wg ? Ps : Rv;
        float* dst = wg ? dk : dv;
${rowAdds({ R: 'R', n: 'BT / (4 * rpw)', pre: 'const int r = (it * 4 + ((tid >> 5) & 3)) * rpw + lane / lpr;', row: 'r', name: 'j', val: 'mpos[t * BT + r]', ok: 'j >= 0', dst: 'dst + (kv0 + j) * HS', batch: preload ? 4 : 1 })}      }
`;

/**
 * NARROW: tile t (in stage so) when it is the block's candidate tile with at most 16 keys, transposed so the
 * keys are the products' N. Per chunk c of the warpgroup: S = Q_c K^T and dP = dO_c V^T (m64n16, keys 0..15
 * of the tile); the mask, gate, P g and dS as selPairs forms them, the element (query q, key x) held as the
 * m64n16 accumulator's (row, column); P g and dS into Gs and Ps ([key][query], one bf16 each), the dg sums
 * into mdg (per key, shared atomics) and qnum (per query). Then dQ_c += dS_c K (dS packed in registers as the
 * A fragment, one k-step) and warpgroup 0's dV^T = dO^T (P g), warpgroup 1's dK^T = Q^T dS (m64n16 for each
 * 64 of the HS rows, k = the block's queries), added to the 16 key rows element by element.
 */
const narrowTile = (CW: number, HS: number, rows: boolean): string => `        u32 da[CW][4];  // each chunk's dS as the A fragment of dQ's k-step
        float kd[4] = {0.f, 0.f, 0.f, 0.f}; // the thread's keys 2 t4, 2 t4 + 1, 8 + 2 t4, 9 + 2 t4: dg over its rows
        int nlo[4], nhi[4];
        float nku[4];
#pragma unroll
        for (int y = 0; y < 4; y++) {
          const int x = t * BT + 8 * (y >> 1) + 2 * t4 + (y & 1), rg = mrng[x];
          nlo[y] = rg & 0xffff;
          nhi[y] = rg >> 16;
          nku[y] = mu_[x];
        }
#pragma unroll
        for (int cc = 0; cc < CW; cc++) {
          const int c = wg * CW + cc;
          float s[8], dp[8];
          wg_fence();
#pragma unroll
          for (int ks = 0; ks < KS; ks++) wg_ss_n16(s, dQk + (u64)((c * TILE) >> 4) + KOFF(ks), dKa + so + KOFF(ks), ks);
#pragma unroll
          for (int ks = 0; ks < KS; ks++) wg_ss_n16(dp, dOk + (u64)((c * TILE) >> 4) + KOFF(ks), dVa + so + KOFF(ks), ks);
          wg_commit();
          wg_wait<0>();
          reg_fence(s);
          reg_fence(dp);
          float ds[8];
#pragma unroll
          for (int rr = 0; rr < 2; rr++) {
            const int q = c * 64 + wk + g8 + 8 * rr; // block row
            const float Lq = qL[q], Dq = qD[q], tq = qt[q], loq = qlo[q], hiq = qhi[q];
            float nq = 0.f;
#pragma unroll
            for (int y = 0; y < 4; y++) {
              const int e = 4 * (y >> 1) + 2 * rr + (y & 1), x = 8 * (y >> 1) + 2 * t4 + (y & 1);
              const bool in = q >= nlo[y] && q < nhi[y];
              float pg;
              {
${gatedPair({ s: 's[e]', dp: 'dp[e]', L: 'Lq', D: 'Dq', t: 'tq', lo: 'loq', hi: 'hiq', u: 'nku[y]', ds: 'ds[e]', pg: 'pg' }, 'nq += dg;', 'kd[y] += dg;')}              }
              *reinterpret_cast<bf16*>(Gs + P_OFF(x, q >> 3) + 2 * (q & 7)) = to_bf16(pg);
              *reinterpret_cast<bf16*>(Ps + P_OFF(x, q >> 3) + 2 * (q & 7)) = to_bf16(ds[e]);
            }
            nq += __shfl_xor_sync(FULL, nq, 1);
            nq += __shfl_xor_sync(FULL, nq, 2);
            if (t4 == 0) qnum[q] += nq; // this warp alone holds row q
          }
#pragma unroll
          for (int a = 0; a < 4; a++) da[cc][a] = pack_bf16(ds[2 * a], ds[2 * a + 1]);
        }
#pragma unroll
        for (int y = 0; y < 4; y++) {
          float x = kd[y];
          x += __shfl_xor_sync(FULL, x, 4);
          x += __shfl_xor_sync(FULL, x, 8);
          x += __shfl_xor_sync(FULL, x, 16);
          if (g8 == 0 && x != 0.f) atomicAdd(mdg + wg * nkeys + t * BT + 8 * (y >> 1) + 2 * t4 + (y & 1), x);
        }
        fence_async_shared();
        __syncthreads(); // Gs and Ps hold the tile's 16 keys for every query
        float vt[HS / 64][8]; // warpgroup 0: dV^T, 1: dK^T; HS rows 64 hh .. 64 hh + 63
        wg_fence();
${Array.from({ length: CW }, (_, cc) => `        wg_rs_n${HS}_t1(dq${cc}, da[${cc}][0], da[${cc}][1], da[${cc}][2], da[${cc}][3], dKb + so);\n`).join('')}#pragma unroll
        for (int hh = 0; hh < HS / 64; hh++)
#pragma unroll
          for (int kk = 0; kk < QB / 16; kk++)
            wg_ss_n16_t10(vt[hh], (wg ? dQt : dOt) + (u64)((((kk >> 2) * TILE + hh * BT * 128) >> 4) + (kk & 3) * MNSTEP(HS)), (wg ? dPk : dGk) + KOFF(kk), kk);
        wg_commit();
        wg_wait<0>();
#pragma unroll
        for (int hh = 0; hh < HS / 64; hh++) reg_fence(vt[hh]);
${Array.from({ length: CW }, (_, cc) => `        reg_fence(dq${cc});\n`).join('')}${rows ? narrowRows(HS) : `        {
          float* dst = wg ? dk : dv;
          const float f = wg ? scale : 1.f;
#pragma unroll
          for (int hh = 0; hh < HS / 64; hh++)
#pragma unroll
            for (int e = 0; e < 8; e++) {
              const int j = mpos[t * BT + 8 * (e >> 2) + 2 * t4 + (e & 1)];
              if (j >= 0) atomicAdd(dst + (kv0 + j) * HS + hh * 64 + wk + g8 + 8 * ((e >> 1) & 1), f * vt[hh][e]);
            }
        }
`}        __syncthreads(); // Gs, Ps and stage st are free again
`;

/**
 * NROWS: the narrow tile's dV^T (warpgroup 0, into Rv) and dK^T times scale (warpgroup 1, over Ps, which only
 * its own product read) staged as the 16 keys' fp32 rows, rotated as KVROWS's, then each warp reads 4 rows
 * and adds them a whole row at a time: 512 red.global.add.v4 a warpgroup where the element-wise adds take
 * 2048 scalar ones, as many instructions as a full tile's KVROWS reductions (session 18: NARROW saved 0.03 ms
 * of the 0.2 the emulation predicted).
 */
const narrowRows = (HS: number): string => `        {
          unsigned char* R = wg ? Ps : Rv;
          const float f = wg ? scale : 1.f;
#pragma unroll
          for (int hh = 0; hh < HS / 64; hh++)
#pragma unroll
            for (int e = 0; e < 8; e++)
              *reinterpret_cast<float*>(R + ROT_OFF(8 * (e >> 2) + 2 * t4 + (e & 1), 4 * (hh * 64 + wk + g8 + 8 * ((e >> 1) & 1)))) = f * vt[hh][e];
        }
        asm volatile("bar.sync %0, 128;" :: "r"(1 + wg) : "memory"); // the warpgroup's 16 rows are staged
        {
          const unsigned char* R = wg ? Ps : Rv;
          float* dst = wg ? dk : dv;
${rowAdds({ R: 'R', n: '4 / rpw', pre: 'const int r = 4 * ((tid >> 5) & 3) + it * rpw + lane / lpr;', row: 'r', name: 'j', val: 'mpos[t * BT + r]', ok: 'j >= 0', dst: 'dst + (kv0 + j) * HS', batch: HS === 128 ? 4 : 2 })}        }
`;

/**
 * QROWS: the warpgroup's dq chunks (dqs, times scale) into its KVROWS rows (Rv or Ps), each warp its own 16
 * rows (row r's byte c at (c + 32 (r % 8)) mod the row's bytes), read back by the same warp and added a
 * whole row at a time. The warpgroup's barrier first: its warps have read the last tile's dK or dV rows.
 */
const queryRows = (dqs: string[], preload: boolean): string => `    asm volatile("bar.sync %0, 128;" :: "r"(1 + wg) : "memory"); // the last tile's staged rows are read
    {
      unsigned char* R = wg ? Ps : Rv;
${dqs.map((d, cc) => `${stageRows('R', 'wk', d, 'scale')}      __syncwarp();
${addOwnRows('R', 'wk', `dq + (r0 + i0 + (wg * CW + ${cc}) * 64 + wk + rl) * HS`, `i0 + (wg * CW + ${cc}) * 64 + wk + rl < T`, preload)}      __syncwarp();
`).join('')}    }
`;

/**
 * Launch: grid (bwdSelWgBlocks(v, T), NKV, B), block 256, dynamic shared bwdSelWgShared(v, K). Runs after
 * the window kernel (adds to its dq, dk, dv), like spk_bwd_sel.
 */
export function bwdSelWgSource(v: WgSelVariant): KernelSource {
  const o: Required<WgSelVariant> = { MINB: 0, QB: 128, KVROWS: false, QROWS: false, NARROW: false, NROWS: false, PRELOAD: false, ...v };
  if (o.QROWS && !o.KVROWS) throw new Error('spk_bwd_sel_wg: QROWS stages dq in KVROWS\'s rows (needs KVROWS)');
  if (o.PRELOAD && !o.KVROWS) throw new Error('spk_bwd_sel_wg: PRELOAD reads the rows KVROWS stages (needs KVROWS)');
  if (o.NROWS && !(o.NARROW && o.KVROWS)) throw new Error('spk_bwd_sel_wg: NROWS stages NARROW\'s tile in KVROWS\'s rows (needs NARROW and KVROWS)');
  if (o.QB === 256 && o.HS !== 64) throw new Error('spk_bwd_sel_wg: QB 256 is built for HS 64 (dQ of 128 queries a warpgroup at HS 128 would not fit the registers)');
  const name = bwdSelWgName(o);
  const HS = o.HS, CW = o.QB / 128; // chunks a warpgroup
  // per chunk cc of the warpgroup (chunk c = wg CW + cc): scores, mask; the chunk's dQ array and num
  const chunks = Array.from({ length: CW }, (_, cc) => `      {
        const int c = wg * CW + ${cc};
${selScores('dQk + (u64)((c * TILE) >> 4)', 'dOk + (u64)((c * TILE) >> 4)')}${selMask('c', `num[${cc}]`)}      }
`).join('');
  const dqs = Array.from({ length: CW }, (_, cc) => `dq${cc}`);
  return {
    name,
    archSpecific: true,
    params: SEL_PARAMS,
    source: `${WGMMA_PRELUDE}
#define HS ${HS}
#define BT ${BT}
#define QB ${o.QB}
#define CW ${CW}
#define NTHR ${SEL_THREADS}
#define KS (HS / 16)
#define CPR (HS / 8)
#define TILE (BT * HS * 2)
#define PT (BT * BT * 2)
${SW128}
#define LOG2E 1.4426950408889634f
${SEL_HELPERS}
${wgmmaSS(64)}
${wgmmaSS(HS, 0, 1)}
${wgmmaSS(HS, 1, 1)}
${o.NARROW ? `${wgmmaSS(16)}
${wgmmaSS(16, 1, 0)}
${wgmmaRS(HS, 1)}
__device__ __forceinline__ bf16 to_bf16(float x) {
  bf16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
  return h;
}
` : ''}${RED2}${o.KVROWS ? ROWS : ''}
extern "C" __global__ void __launch_bounds__(NTHR${o.MINB ? `, ${o.MINB}` : ''}) ${name}(
${SEL_PARAMS_C}) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  unsigned char* Ks = smem;                     // [2][BT][HS]
  unsigned char* Vs = Ks + 2 * TILE;            // [2][BT][HS]
  unsigned char* Qs = Vs + 2 * TILE;            // [QB / 64 chunks][BT][HS]
  unsigned char* Os = Qs + (QB / 64) * TILE;    // [QB / 64 chunks][BT][HS] dO
  unsigned char* Ps = Os + (QB / 64) * TILE;    // [BT keys][QB queries] dS^T (a chunk's 64 queries per sub-tile)
  unsigned char* Gs = Ps + (QB / 64) * PT;      // [BT keys][QB queries] (P g)^T
  unsigned char* Rv = Gs + (QB / 64) * PT;      // KVROWS: [BT keys][HS] fp32, a tile's dV rows
  u64* bthk = reinterpret_cast<u64*>(Rv + ${o.KVROWS ? 'BT * HS * 4' : '0'}); // thk of the block's queries (~0 past T)
  float* qL = reinterpret_cast<float*>(bthk + QB); // per query: lse log2 e (+inf: no p), this head
  float* qD = qL + QB;                          // D_i, this head
  float* qt = qD + QB;                          // tau_i as float (the gate's threshold)
  float* qlo = qt + QB;                         // F_i's float bounds
  float* qhi = qlo + QB;
  const int tid = threadIdx.x, lane = tid & 31, wg = tid >> 7, g8 = lane >> 2, t4 = lane & 3;
  const int wk = ((tid >> 5) & 3) * 16;         // the warp's 16 keys of a tile
  const int i0 = blockIdx.x * QB, h = blockIdx.y, b = blockIdx.z;
${selKeySet('QB', 16)}  for (int x = tid; x < nkeys; x += NTHR) mdg[x] = mdg[nkeys + x] = 0.f; // [2][nkeys] per warpgroup: a key's dg over its F pairs and the heads
${o.NARROW ? `  float* qnum = mdg + 2 * ncap; // NARROW: per query, the narrow tiles' dg sums over the heads
  for (int r = tid; r < QB; r += NTHR) qnum[r] = 0.f;
  const bool narrow = ncand > 0 && ncand <= 16; // the last tile takes narrowTile
` : ''}  const u32 sK = smem_addr(Ks), sV = smem_addr(Vs), sQ = smem_addr(Qs), sO = smem_addr(Os);
  // K and V rows of tile t into stage st, one commit group
  auto issue = [&](int t, int st) {
    for (int x = tid; x < BT * CPR; x += NTHR) {
      const int j = mpos[t * BT + COPY_ROW(x)];
      const size_t off = (size_t)(j >= 0 ? j : 0) * HS + COPY_CHUNK(x) * 8;
      cp_async16(sK + st * TILE + COPY_DST(x), kb + off, j >= 0 ? 16 : 0);
      cp_async16(sV + st * TILE + COPY_DST(x), vb + off, j >= 0 ? 16 : 0);
    }
    cp_commit();
  };
  // descriptors: K, V as A of S^T, dP^T (K-major) and K as B of dQ (MN-major); chunk c's Q, dO as B of
  // S^T, dP^T (K-major, + c TILE); all QB queries' Q, dO as B of dK, dV (MN-major, a k-step of 16 queries
  // in chunk kk / 4); Ps, Gs as A of dK, dV (K-major over QB queries) and chunk c's Ps as A of dQ (MN-major, + c PT)
  const u64 dKa = DESC_K(sK), dVa = DESC_K(sV), dKb = DESC_MN(sK, HS);
  const u64 dQk = DESC_K(sQ), dOk = DESC_K(sO), dQm = DESC_MN(sQ, HS), dOm = DESC_MN(sO, HS);
  const u64 dPk = DESC_K(smem_addr(Ps)), dGk = DESC_K(smem_addr(Gs)), dPm = DESC_MN(smem_addr(Ps), BT);
${o.NARROW ? '  const u64 dQt = DESC_MN(sQ, 64), dOt = DESC_MN(sO, 64); // NARROW: 64 HS columns of Q, dO as the MN-major A of dK^T, dV^T\n' : ''}
  float num[CW][8][2]; // per chunk of the warpgroup: column sums of free-set dg over this thread's keys, tiles and heads
#pragma unroll
  for (int cc = 0; cc < CW; cc++)
#pragma unroll
    for (int n = 0; n < 8; n++) num[cc][n][0] = num[cc][n][1] = 0.f;
  for (int gi = 0; gi < G && nT > 0; gi++) {
    const size_t r0 = ((size_t)b * NH + h * G + gi) * T;
    __syncthreads(); // metadata written; the previous head is done with Qs, Os, qL, qD and the stages
    for (int x = tid; x < QB * CPR; x += NTHR) {
      const int r = x / CPR, c = x % CPR, i = i0 + r;
      const u32 at = (r >> 6) * TILE + SW_OFF(r & 63, c);
      const size_t off = (r0 + (i < T ? i : 0)) * HS + c * 8;
      cp_async16(sQ + at, q + off, i < T ? 16 : 0);
      cp_async16(sO + at, dout + off, i < T ? 16 : 0);
    }
    cp_commit();
    issue(0, 0);
    for (int r = tid; r < QB; r += NTHR) {
      const int i = i0 + r;
      const float L = i < T ? lse[r0 + i] : -FINF;
      qL[r] = L == -FINF ? FINF : L * LOG2E;
      qD[r] = i < T ? Dg[r0 + i] : 0.f;
    }
    float ${dqs.map((d) => `${d}[HS / 2]`).join(', ')}; // dQ of the warpgroup's chunks
#pragma unroll
    for (int n = 0; n < HS / 2; n++) ${dqs.map((d) => `${d}[n] = `).join('')}0.f;
    for (int t = 0; t < nT; t++) {
      const int st = t & 1;
      if (t + 1 < nT) { issue(t + 1, st ^ 1); cp_wait<1>(); }
      else cp_wait<0>();
      fence_async_shared();
      __syncthreads(); // tile t's K and V (and the head's Q, dO, qL, qD) are in
      const u64 so = (u64)((st * TILE) >> 4);
${o.NARROW ? `      if (narrow && t == nT - 1) {
${narrowTile(CW, HS, o.NROWS)}        continue;
      }
` : ''}${keyRanges('0xffff', 16)}      float kdg[2] = {0.f, 0.f};
${chunks}${keySums('wg * nkeys + ')}      fence_async_shared();
      __syncthreads(); // Gs and Ps hold every chunk
      // warpgroup 0: dV = (P g)^T dO; warpgroup 1: dK = dS^T Q (k = QB queries); both: dQ_c += dS_c K (k = keys)
      float acc[HS / 2];
      wg_fence();
${overQueries('acc', '(wg ? dPk : dGk)', '(wg ? dQm : dOm)', HS)}#pragma unroll
      for (int kk = 0; kk < BT / 16; kk++) {
${dqs.map((d, cc) => `        wg_ss_n${HS}_t11(${d}, dPm + (u64)((((wg * CW + ${cc}) * PT) >> 4) + kk * MNSTEP(BT)), dKb + so + kk * MNSTEP(HS), 1);\n`).join('')}      }
      wg_commit();
      wg_wait<0>();
      reg_fence(acc);
${dqs.map((d) => `      reg_fence(${d});\n`).join('')}${o.KVROWS ? kvRows(o.PRELOAD) : `${toKeyRows('acc', '(wg ? dk : dv)', '(wg ? scale : 1.f)')}      __syncthreads(); // Gs, Ps and stage st are free again
`}    }
    // the chunks' dq rows (the block owns them; the window kernel's share is already there)
${o.QROWS ? queryRows(dqs, o.PRELOAD) : dqs.map((d, cc) => toQueryRows(d, `wg * CW + ${cc}`)).join('')}  }
  __syncthreads(); // every tile's key sums are in mdg; Ps is free
  for (int x = tid; x < nkeys; x += NTHR) {
    const float val = mdg[x] + mdg[nkeys + x];
    if (mpos[x] >= 0 && val != 0.f) atomicAdd(dsel + kv0 + mpos[x], (double)val);
  }
  // num_i: each column's sum over the warp's keys (the 8 lanes of one t4), then over the warpgroup's 4 warps
  float* wnum = reinterpret_cast<float*>(Ps); // [4][QB]
#pragma unroll
  for (int cc = 0; cc < CW; cc++)
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
      for (int x = 0; x < 2; x++) {
        float val = num[cc][n][x];
        val += __shfl_xor_sync(FULL, val, 4);
        val += __shfl_xor_sync(FULL, val, 8);
        val += __shfl_xor_sync(FULL, val, 16);
        if (g8 == 0) wnum[(wk / 16) * QB + (wg * CW + cc) * 64 + n * 8 + 2 * t4 + x] = val;
      }
  __syncthreads();
  for (int r = tid; r < QB; r += NTHR) {
    const int i = i0 + r;
    if (i >= T) continue;
    const int nf = nfree[kv0 + i];
    const float tot = wnum[r] + wnum[QB + r] + wnum[2 * QB + r] + wnum[3 * QB + r]${o.NARROW ? ' + qnum[r]' : ''};
    mean[kv0 + i] = nf > 0 ? (double)tot / nf : 0.0;
  }
}
`,
  };
}
