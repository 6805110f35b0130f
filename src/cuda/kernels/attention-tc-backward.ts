// Tiled, tensor-core SparseK attention BACKWARD (SPEC.md section 4; the score part, section 1,
// stays with the existing du kernels), used by CudaBackend under precision bf16 (variants and
// measurements: dev/cuda-attention-fast), matching the forward in attention-tc.ts: bf16 q, k, v,
// dout; fp32 u; the forward's out (bf16 or fp32) and lse (natural log); the selection of
// src/cuda/kernels/selection-fast.ts (tau, thk, count, nfree, and sel: only the rows of queries
// 64 r, compact). Outputs fp32: dq, dk, dv (GQA: a group's heads summed into dk, dv); for du, the
// gate gradients dg_ij = a_ij (do_i . v_j) summed per key over its free-set pairs and the group's
// heads (dsel_j, double) and mean_i = sum_{Sel_i ∩ F_i} dg_ij / |F_i|, from which
// sparsek_mean_prefix and sparsek_score_grad_sums (attention.ts) finish du.
// Not here: the selection, du itself, bf16 dq/dk/dv, wgmma/TMA (mma.sync m16n8k16 via inline PTX,
// no headers, like kernel.ts).
//
// Math (the CPU's patternAttentionBackward): with a_ij = exp(s_ij - lse_i) the softmax over every
// attended key (not renormalised by the gates), g_ij the gate (1 in the window, clip(u_j - tau_i, 0, 1)
// for selected keys), dov_ij = do_i . v_j, D_i = do_i . o_i = sum_j a_ij g_ij dov_ij:
//   dv_j += a_ij g_ij do_i,   ds_ij = a_ij (g_ij dov_ij - D_i),   dq_i += scale ds_ij k_j,   dk_j += scale ds_ij q_i.
//
// The attended pairs split in two, each done by the kernel that suits its shape:
//   window pairs   (0 <= i - j < W): a band. spk_bwd_win, one block per 64 consecutive keys and KV
//                  head, loops over the group's heads and the ceil((W + 63) / 64) query tiles of the
//                  band: FlashAttention-2's key-major backward, dk and dv in registers (stored, no
//                  atomics), dq added with red.global.add.
//   selected pairs (i - j >= W, j in Sel_i): scattered. A key block's selecting queries form an
//                  interval, but a long one (a key with a high score stays selected for ~K / (1 - F(u))
//                  queries), so key-major blocks over all queries would be nearly dense at long T.
//                  spk_bwd_sel is blocked by queries instead, over the forward's selected keys: one
//                  block per 64 queries [i0, i0 + 64) and KV head, keys Sel_{i0} (gathered) plus those
//                  of the <= 63 new candidates (i0 - W, i0 + 63 - W] that some block row selects (SPEC
//                  section 3's block property: Sel_{i+1} is in Sel_i plus one new candidate; selKeySet
//                  drops the others, most of them late in a long row), the selection mask as each key's
//                  range of block rows (thk never decreases, so key(u_j, j) >= thk_i holds for a
//                  prefix; j <= i - W for a suffix). Within a block it works in win's orientation
//                  (S^T per key tile): dk and dv from register fragments, added with red.global.add per
//                  tile; dq in registers over the tiles (this block owns its rows); each key's
//                  free-set dg summed in shared memory over tiles and heads and added to dsel once
//                  per block, and sum_{Sel_i ∩ F_i} dg goes to mean_i. (At HS 64, QB 128: 128 queries,
//                  keys Sel_{i0} plus the <= 127 new candidates, the two halves against each key tile.)
//   spk_bwd_prep   D_i = do_i . o_i (out as stored), and dq = 0 for the window kernel's atomics.
// Launch order on one stream: prep, win (stores dk, dv; adds to dq), sel (adds to dq, dk, dv).
// Every pair is done once: win takes i - j < W, sel takes i - j >= W.
//
// Fragment layouts as in kernel.ts (mma.m16n8k16, g = lane / 4, t = lane % 4). A operands come from
// shared memory through ldmatrix (non-trans for row-major [row][k], .trans for [k][row]); B operands
// through ldmatrix (non-trans when the contraction runs along a shared row, .trans when it runs
// down the rows). Shared rows are padded by 8 bf16 (conflict-free ldmatrix).

import type { KernelSource } from '../runtime.js';
import { ORD_OF } from './selection.js';

export interface BackwardVariant {
  HS: 64 | 128;
  /** exp2 as ex2.approx.ftz (default true). */
  FASTEXP?: boolean;
  /** __launch_bounds__ minimum blocks per SM for win and sel (0: none). */
  MINB?: number;
  /** Lab probe only (wrong results): the global reductions become plain stores, to time what they cost. */
  STORE?: boolean;
  /**
   * sel only: queries per block (default 64). 128 runs one key set (Sel_{i0} plus up to two tiles of
   * new candidates) over two 64-query halves and reduces dK and dV once per tile for both, halving the
   * K/V gathers and the dK/dV reductions per pair. HS 64 only (see bwdSelSource).
   */
  QB?: 64 | 128;
}

/** Queries and keys per tile, both kernels. */
export const BT = 64;
const NTHR = 128;

function full(o: BackwardVariant): Required<BackwardVariant> {
  return { FASTEXP: true, MINB: 0, STORE: false, QB: 64, ...o };
}

const suffix = (o: Required<BackwardVariant>): string => `hs${o.HS}${o.FASTEXP ? '_fx' : ''}${o.MINB ? `_mb${o.MINB}` : ''}${o.STORE ? '_store' : ''}`;
export const bwdWinName = (v: BackwardVariant): string => `spk_bwd_win_${suffix(full(v))}`;
export const bwdSelName = (v: BackwardVariant): string => {
  const o = full(v);
  return `spk_bwd_sel_${suffix(o)}${o.QB === 128 ? '_qb128' : ''}`;
};
export const bwdPrepName = (OUT: 'bf16' | 'f32'): string => `spk_bwd_prep_${OUT}`;

/** Threads per block of win and sel. */
export const BWD_THREADS = NTHR;

const LDS = (HS: number): number => HS + 8;
const LDP = BT + 8;

/** win: dynamic shared bytes (Q and dO double-buffered, the K and V block, dS^T, lse and D per stage). */
export function bwdWinShared(v: BackwardVariant): number {
  const l = LDS(v.HS);
  return 2 * 2 * BT * l * 2 + 2 * BT * l * 2 + BT * LDP * 2 + 2 * 2 * BT * 4;
}

/** sel: grid x, one block per QB queries. */
export function bwdSelBlocks(v: BackwardVariant, T: number): number {
  return Math.ceil(T / full(v).QB);
}

/** Tiles of sel at most: ceil(K / 64) of Sel_{i0} plus QB / 64 of new candidates (at most QB - 1 of them). */
export function bwdSelMaxTiles(v: BackwardVariant, K: number): number {
  return Math.ceil(K / BT) + full(v).QB / BT;
}

/**
 * sel: dynamic shared bytes (K double-buffered, V, Q, dO, dS^T, 16 bytes of data per key, the block's
 * thk, 5 floats per query): 64.8 KiB at HS = 64 and K = 512, so that three blocks fit an H100 SM.
 * QB 128 (HS 64) adds (P g)^T: 110.5 KiB, two blocks.
 */
export function bwdSelShared(v: BackwardVariant, K: number): number {
  const { HS, QB } = full(v), l = LDS(HS);
  const extra = QB === 64 ? 0 : BT * (QB + 8) * 2;
  return 2 * BT * l * 2 + BT * l * 2 + 2 * QB * l * 2 + BT * (QB + 8) * 2 + bwdSelMaxTiles(v, K) * BT * 16 + QB * 8 + 5 * QB * 4 + extra;
}

/** The selection's order keys and free-set bounds, for the selected-pairs kernels (this file's and the wgmma one). */
export const SEL_HELPERS = `${ORD_OF}__device__ __forceinline__ float float_of_ord(unsigned o) {
  return __uint_as_float((o & 0x80000000u) ? (o ^ 0x80000000u) : ~o);
}
// [lo, hi]: the floats f with (double)f > t and (double)f - t < 1, i.e. SparseK's free set for the
// threshold t, exactly as the double test decides it (both sides are monotone in f); empty (lo > hi)
// for t = +-inf.
__device__ __forceinline__ void free_bounds(double t, float& lo, float& hi) {
  if (!(t > -(double)FINF && t < (double)FINF)) { lo = FINF; hi = -FINF; return; }
  unsigned a = ord_of((float)t);
  while ((double)float_of_ord(a) <= t) a++;
  while ((double)float_of_ord(a - 1) > t) a--;
  unsigned c = ord_of((float)(t + 1.0));
  while (!((double)float_of_ord(c) - t < 1.0)) c--;
  while ((double)float_of_ord(c + 1) - t < 1.0) c++;
  lo = float_of_ord(a);
  hi = float_of_ord(c);
}
`;

/** The PTX helpers of kernel.ts plus vector reductions. */
function common(o: Required<BackwardVariant>): string {
  return `
typedef unsigned long long u64;
typedef unsigned short bf16;
typedef unsigned int u32;
#define HS ${o.HS}
#define BT ${BT}
#define NTHR ${NTHR}
#define LDS (HS + 8)
${o.QB === 128 ? '#define QB 128\n#define LDP (QB + 8)' : '#define LDP (BT + 8)'}
#define KS (HS / 16)
#define NT (BT / 8)
#define NO (HS / 8)
#define CPR (HS / 8)
#define FASTEXP ${o.FASTEXP ? 1 : 0}
#define FULL 0xffffffffu
#define FINF __int_as_float(0x7f800000)
#define LOG2E 1.4426950408889634f

${SEL_HELPERS}__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N)); }
__device__ __forceinline__ void ldsm4(u32 a, u32 (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void ldsm4t(u32 a, u32 (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
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
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
  u32 d;
  asm("cvt.rn.bf16x2.f32 %0, %2, %1;" : "=r"(d) : "f"(lo), "f"(hi));
  return d;
}
// *p += a, p[1] += b, as one 8-byte reduction (sm_90; two scalar ones before)
__device__ __forceinline__ void red2(float* p, float a, float b) {
#if ${o.STORE ? 1 : 0}
  *reinterpret_cast<float2*>(p) = make_float2(a, b);
#elif __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" :: "l"(p), "f"(a), "f"(b) : "memory");
#else
  asm volatile("red.global.add.f32 [%0], %1;" :: "l"(p), "f"(a) : "memory");
  asm volatile("red.global.add.f32 [%0], %1;" :: "l"(p + 1), "f"(b) : "memory");
#endif
}
// C (16 x 64, fp32 fragments) += A (16 x 16k, from smem at a_at(kk)) B, B (16k x 8n) through
// ldmatrix.trans of a [k][n] row-major smem tile (row stride ld): k runs down the tile's rows.
#define MMA_BT(C, A, Bs, ld, NN, lane) { \\
  const int mi_ = (lane) >> 3, r8_ = (lane) & 7; \\
  _Pragma("unroll") for (int n_ = 0; n_ < (NN); n_ += 2) { \\
    u32 b_[4]; \\
    ldsm4t(smem_addr((Bs) + ((mi_ & 1) * 8 + r8_) * (ld) + (n_ + (mi_ >> 1)) * 8), b_); \\
    mma(C[n_], A, b_[0], b_[1]); \\
    mma(C[n_ + 1], A, b_[2], b_[3]); \\
  } }
`;
}

/**
 * D_i = do_i . o_i (fp32 sum of the stored out) and dq_i = 0, unless dq is null (WgWindowVariant.OWNQ:
 * the window kernel stores dq first). Eight columns a thread (16-byte loads), HS / 8 consecutive lanes a
 * row. Launch: grid bwdPrepGrid(rows, HS), block 256; rows = B NH T, HS / 8 dividing 32.
 */
export function bwdPrepSource(OUT: 'bf16' | 'f32', HS: number): KernelSource {
  if (!(HS % 8 === 0 && 32 % (HS / 8) === 0)) throw new Error(`spk_bwd_prep: HS / 8 must divide 32 (HS = ${HS})`);
  const name = bwdPrepName(OUT);
  return {
    name,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32'],
    source: `
typedef unsigned short bf16;
#define OUT_BF16 ${OUT === 'bf16' ? 1 : 0}
__device__ __forceinline__ float lo(unsigned x) { return __uint_as_float(x << 16); }
__device__ __forceinline__ float hi(unsigned x) { return __uint_as_float(x & 0xffff0000u); }
extern "C" __global__ void __launch_bounds__(256) ${name}(
    float* D,                        // (rows)
    float* dq,                       // (rows, HS) zeroed (none: null, where the window kernel stores dq first)
    const bf16* __restrict__ dout,   // (rows, HS)
    const void* __restrict__ out_,   // (rows, HS) bf16 or fp32
    int rows, int HS) {
  const int per = HS / 8; // lanes per row
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x, r = t / per;
  float acc = 0.f;
  if (r < rows) {
    const size_t o = (size_t)r * HS + (t % per) * 8;
    const uint4 d = *reinterpret_cast<const uint4*>(dout + o);
#if OUT_BF16
    const uint4 x = *reinterpret_cast<const uint4*>(reinterpret_cast<const bf16*>(out_) + o);
    acc = lo(d.x) * lo(x.x) + hi(d.x) * hi(x.x) + lo(d.y) * lo(x.y) + hi(d.y) * hi(x.y)
        + lo(d.z) * lo(x.z) + hi(d.z) * hi(x.z) + lo(d.w) * lo(x.w) + hi(d.w) * hi(x.w);
#else
    const float4 a = *reinterpret_cast<const float4*>(reinterpret_cast<const float*>(out_) + o);
    const float4 b = *reinterpret_cast<const float4*>(reinterpret_cast<const float*>(out_) + o + 4);
    acc = lo(d.x) * a.x + hi(d.x) * a.y + lo(d.y) * a.z + hi(d.y) * a.w
        + lo(d.z) * b.x + hi(d.z) * b.y + lo(d.w) * b.z + hi(d.w) * b.w;
#endif
    if (dq != nullptr) {
      float4* z = reinterpret_cast<float4*>(dq + o);
      z[0] = make_float4(0.f, 0.f, 0.f, 0.f);
      z[1] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
  for (int s = per / 2; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
  if (r < rows && t % per == 0) D[r] = acc;
}
`,
  };
}

/** Blocks of 256 threads for spk_bwd_prep over rows of HS columns. */
export function bwdPrepGrid(rows: number, HS: number): number {
  return Math.ceil((rows * (HS / 8)) / 256);
}

/** The window kernels' parameters (this file's spk_bwd_win and attention-wg-backward.ts's), as launch() encodes them and in C. */
export const WIN_PARAMS: KernelSource['params'] = ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'f32'];
export const WIN_PARAMS_C = `    float* dk,                        // (B, NKV, T, HS) stored
    float* dv,                        // (B, NKV, T, HS) stored
    float* dq,                        // (B, NH, T, HS)  added to (atomically)
    const bf16* __restrict__ q,       // (B, NH, T, HS)
    const bf16* __restrict__ k,       // (B, NKV, T, HS)
    const bf16* __restrict__ v,       // (B, NKV, T, HS)
    const bf16* __restrict__ dout,    // (B, NH, T, HS)
    const float* __restrict__ lse,    // (B, NH, T) natural log; -inf for a row without keys
    const float* __restrict__ Dg,     // (B, NH, T) do_i . o_i
    int T, int NH, int NKV, int W, float scale`;

/**
 * Window pairs. Launch: grid (ceil(T / 64), NKV, B), block 128, dynamic shared bwdWinShared(v).
 * Warp w owns keys j0 + 16w .. j0 + 16w + 15 of the block; query tiles [j0 + 64t, j0 + 64t + 64),
 * t < ceil((W + 63) / 64), for each head of the group. Tiles where every (i, j) is a window pair
 * skip the mask.
 */
export function bwdWinSource(v: BackwardVariant): KernelSource {
  const o = full({ ...v, QB: 64 }); // sel's flag: win's source is the same for both
  const name = bwdWinName(o);
  return {
    name,
    params: WIN_PARAMS,
    source: `${common(o)}
extern "C" __global__ void __launch_bounds__(NTHR${o.MINB ? `, ${o.MINB}` : ''}) ${name}(
${WIN_PARAMS_C}) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);   // [2][BT][LDS]
  bf16* Os = Qs + 2 * BT * LDS;               // [2][BT][LDS] dO
  bf16* Ks = Os + 2 * BT * LDS;               // [BT][LDS]
  bf16* Vs = Ks + BT * LDS;                   // [BT][LDS]
  bf16* Ps = Vs + BT * LDS;                   // [BT keys][LDP queries] dS^T
  float* Ls = reinterpret_cast<float*>(Ps + BT * LDP); // [2][BT] lse * log2 e (+inf: no p)
  float* Dsm = Ls + 2 * BT;                   // [2][BT]
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g8 = lane >> 2, t4 = lane & 3;
  const int mi = lane >> 3, r8 = lane & 7;
  const int j0 = blockIdx.x * BT, h = blockIdx.y, b = blockIdx.z;
  const int G = NH / NKV;
  const size_t kv0 = ((size_t)b * NKV + h) * T;
  const float sl = scale * LOG2E;

  for (int x = tid; x < BT * CPR; x += NTHR) {
    const int r = x / CPR, cc = x % CPR, j = j0 + r;
    const size_t off = (kv0 + (j < T ? j : 0)) * HS + cc * 8;
    cp_async16(smem_addr(Ks + r * LDS + cc * 8), k + off, j < T ? 16 : 0);
    cp_async16(smem_addr(Vs + r * LDS + cc * 8), v + off, j < T ? 16 : 0);
  }
  cp_commit();
  int nQT = W > 0 ? (W + 2 * BT - 2) / BT : 0;          // ceil((W + 63) / 64): queries [j0, j0 + W + 62]
  nQT = min(nQT, (T - j0 + BT - 1) / BT);
  const int total = G * nQT;
  auto issue = [&](int x, int st) {
    const int gi = x / nQT, qa = j0 + (x % nQT) * BT;
    const size_t r0 = ((size_t)b * NH + h * G + gi) * T;
    bf16* qd = Qs + st * BT * LDS;
    bf16* od = Os + st * BT * LDS;
    for (int y = tid; y < BT * CPR; y += NTHR) {
      const int r = y / CPR, cc = y % CPR, i = qa + r;
      const size_t off = (r0 + (i < T ? i : 0)) * HS + cc * 8;
      cp_async16(smem_addr(qd + r * LDS + cc * 8), q + off, i < T ? 16 : 0);
      cp_async16(smem_addr(od + r * LDS + cc * 8), dout + off, i < T ? 16 : 0);
    }
    for (int r = tid; r < BT; r += NTHR) {
      const int i = qa + r;
      const float L = i < T ? lse[r0 + i] : -FINF;
      Ls[st * BT + r] = L == -FINF ? FINF : L * LOG2E;
      Dsm[st * BT + r] = i < T ? Dg[r0 + i] : 0.f;
    }
    cp_commit();
  };
  if (total > 0) issue(0, 0);

  float dka[NO][4], dva[NO][4];
#pragma unroll
  for (int n = 0; n < NO; n++)
#pragma unroll
    for (int e = 0; e < 4; e++) dka[n][e] = dva[n][e] = 0.f;
  const int wk = w * 16;

  for (int x = 0, st = 0; x < total; x++, st ^= 1) {
    if (x + 1 < total) { issue(x + 1, st ^ 1); cp_wait<1>(); }
    else cp_wait<0>();
    __syncthreads();
    const int gi = x / nQT, qa = j0 + (x % nQT) * BT;
    const bf16* Qst = Qs + st * BT * LDS;
    const bf16* Ost = Os + st * BT * LDS;
    const float* Lst = Ls + st * BT;
    const float* Dst = Dsm + st * BT;
    // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys x 64 queries
    float s[NT][4], dp[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
      u32 ka[4], va[4];
      ldsm4(smem_addr(Ks + (wk + (mi & 1) * 8 + r8) * LDS + ks * 16 + (mi >> 1) * 8), ka);
      ldsm4(smem_addr(Vs + (wk + (mi & 1) * 8 + r8) * LDS + ks * 16 + (mi >> 1) * 8), va);
#pragma unroll
      for (int n = 0; n < NT; n += 2) {
        u32 bq[4], bo[4];
        ldsm4(smem_addr(Qst + ((n + (mi >> 1)) * 8 + r8) * LDS + ks * 16 + (mi & 1) * 8), bq);
        ldsm4(smem_addr(Ost + ((n + (mi >> 1)) * 8 + r8) * LDS + ks * 16 + (mi & 1) * 8), bo);
        mma(s[n], ka, bq[0], bq[1]);
        mma(s[n + 1], ka, bq[2], bq[3]);
        mma(dp[n], va, bo[0], bo[1]);
        mma(dp[n + 1], va, bo[2], bo[3]);
      }
    }
    // every pair a window pair: queries [qa, qa + 63] all < T, qa >= j0 + 63, qa + 63 - j0 < W
    const bool whole = qa >= j0 + BT - 1 && qa + BT - 1 - j0 < W && qa + BT <= T;
    u32 pa[BT / 16][4], sa[BT / 16][4];
#pragma unroll
    for (int n = 0; n < NT; n++) {
      float p[4], ds[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int c = n * 8 + 2 * t4 + (e & 1);
        const int d = qa + c - (j0 + wk + g8 + 8 * (e >> 1)); // i - j
        const bool in = whole || (d >= 0 && d < W && qa + c < T);
        p[e] = in ? ex2(s[n][e] * sl - Lst[c]) : 0.f;
        ds[e] = p[e] * (dp[n][e] - Dst[c]);
      }
      pa[n >> 1][(n & 1) * 2 + 0] = pack_bf16(p[0], p[1]);
      pa[n >> 1][(n & 1) * 2 + 1] = pack_bf16(p[2], p[3]);
      sa[n >> 1][(n & 1) * 2 + 0] = pack_bf16(ds[0], ds[1]);
      sa[n >> 1][(n & 1) * 2 + 1] = pack_bf16(ds[2], ds[3]);
      // dS^T for the block's dQ product: [key][query]
      *reinterpret_cast<u32*>(Ps + (wk + g8) * LDP + n * 8 + 2 * t4) = sa[n >> 1][(n & 1) * 2 + 0];
      *reinterpret_cast<u32*>(Ps + (wk + g8 + 8) * LDP + n * 8 + 2 * t4) = sa[n >> 1][(n & 1) * 2 + 1];
    }
    // dV += P^T dO, dK += dS^T Q (k = queries: down the rows of the Q and dO tiles)
#pragma unroll
    for (int kk = 0; kk < BT / 16; kk++) {
      MMA_BT(dva, pa[kk], Ost + kk * 16 * LDS, LDS, NO, lane);
      MMA_BT(dka, sa[kk], Qst + kk * 16 * LDS, LDS, NO, lane);
    }
    __syncthreads();
    // dQ rows qa + 16w .. += scale dS K: A = dS from Ps ([key][query], so .trans), k = keys
    {
      float acc[NO][4];
#pragma unroll
      for (int n = 0; n < NO; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < BT / 16; kk++) {
        u32 a[4];
        ldsm4t(smem_addr(Ps + (kk * 16 + (mi >> 1) * 8 + r8) * LDP + wk + (mi & 1) * 8), a);
        MMA_BT(acc, a, Ks + kk * 16 * LDS, LDS, NO, lane);
      }
      const size_t r0 = ((size_t)b * NH + h * G + gi) * T;
#pragma unroll
      for (int rr = 0; rr < 2; rr++) {
        const int i = qa + wk + g8 + 8 * rr;
        if (i >= T) continue;
        float* dst = dq + (r0 + i) * HS + 2 * t4;
#pragma unroll
        for (int n = 0; n < NO; n++) red2(dst + n * 8, scale * acc[n][2 * rr], scale * acc[n][2 * rr + 1]);
      }
    }
    __syncthreads(); // Ps and this stage are free again
  }
  cp_wait<0>(); // W = 0: the K/V block's copies were never waited for
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    const int j = j0 + wk + g8 + 8 * rr;
    if (j >= T) continue;
#pragma unroll
    for (int n = 0; n < NO; n++) {
      const size_t at = (kv0 + j) * HS + n * 8 + 2 * t4;
      float2 a, c;
      a.x = scale * dka[n][2 * rr];
      a.y = scale * dka[n][2 * rr + 1];
      c.x = dva[n][2 * rr];
      c.y = dva[n][2 * rr + 1];
      *reinterpret_cast<float2*>(dk + at) = a;
      *reinterpret_cast<float2*>(dv + at) = c;
    }
  }
}
`,
  };
}

/**
 * A selected-pairs tile's per-key data for the thread's two keys (rows g8 and g8 + 8 of its warp's 16):
 * the block rows [klo, khi) that select each (packed in mrng as lo | hi << bits) and its score ku.
 */
export const keyRanges = (mask: string, bits: number): string => `      // this thread's two keys (rows g8 and g8 + 8 of the warp's 16): row ranges and scores
      int klo[2], khi[2];
      float ku[2];
#pragma unroll
      for (int rr = 0; rr < 2; rr++) {
        const int x = t * BT + wk + g8 + 8 * rr, rg = mrng[x];
        klo[rr] = rg & ${mask};
        khi[rr] = rg >> ${bits};
        ku[rr] = mu_[x];
      }
`;

/** Each of the thread's two keys' dg over the tile: the 4 lanes of its row, added to mdg at (prefix) t * BT + key. */
export function keySums(prefix: string): string {
  return `      // each key's dg over the tile's queries: the 4 lanes of its row (this warp alone owns the key${prefix ? ' in its warpgroup' : ''})
#pragma unroll
      for (int rr = 0; rr < 2; rr++) {
        float x = kdg[rr];
        x += __shfl_xor_sync(FULL, x, 1);
        x += __shfl_xor_sync(FULL, x, 2);
        if (t4 == 0 && x != 0.f) mdg[${prefix}t * BT + wk + g8 + 8 * rr] += x;
      }
`;
}

/**
 * The start of a selected-pairs block of R queries from i0 (this file's spk_bwd_sel and the wgmma one),
 * through its key slots. Sel_{i0}'s nsel keys (every one selected by row 0) take the first nselT tiles;
 * of the new candidates j in [rlo, rhi), which rows j + W - i0 on may select, only those that some block
 * row selects (a row i >= j + W with thk_i <= key_j) get slots, in order, after them. Late in a long
 * row few do (about K / i of them), so the block has about ceil(K / 64) + 1 key tiles instead of
 * ceil(K / 64) + R / 64 (session 10: 2.32 to 1.80 ms at 64K, HS 64, wgmma). Per slot x < nkeys = nT BT:
 * mpos (position, -1: empty), mu_ (score), mrng (the block rows [lo, hi) that select it, lo | hi << bits);
 * the arrays keep room for every candidate (ncap slots); mdg (dg per key, the caller's) follows them.
 * Needs bthk, qt, qlo, qhi, qL (scratch here) in shared memory and NTHR / 32 <= R.
 */
export const selKeySet = (R: string, bits: number): string => `  const int G = NH / NKV;
  const size_t kv0 = ((size_t)b * NKV + h) * T;
  const float sl = scale * LOG2E;
  const bf16* kb = k + kv0 * HS;
  const bf16* vb = v + kv0 * HS;
  const int* srow = sel + (((size_t)b * NKV + h) * ((T + 63) / 64) + i0 / 64) * K; // row i0 (i0 % 64 == 0)
  const int rlo = max(0, i0 - W + 1), rhi = K > 0 ? min(T, i0 + ${R} - W) : 0;
  const int nsel = min(K, rlo); // |Sel_i0| = min(K, n_i0), n_i0 = rlo: no load of count
  const int nselT = (nsel + BT - 1) / BT;
  const int ncap = nselT * BT + ((max(0, rhi - rlo) + BT - 1) / BT) * BT;
  float* mu_ = qhi + ${R};
  int* mpos = reinterpret_cast<int*>(mu_ + ncap);
  int* mrng = mpos + ncap;
  float* mdg = reinterpret_cast<float*>(mrng + ncap);
  for (int r = tid; r < ${R}; r += NTHR) {
    const int i = i0 + r;
    bthk[r] = i < T ? thk[kv0 + i] : ~0ull;
    const double td = i < T ? tau[kv0 + i] : (double)FINF;
    qt[r] = (float)td;
    free_bounds(td, qlo[r], qhi[r]);
  }
  __syncthreads();
  // the rows [lo, hi) that select key j: thk never decreases with i, so key >= thk_i holds for the rows
  // before hi (a search of the block's thk)
  const auto rows_of = [&](int j, float uj, int lo) {
    const u64 key = ((u64)ord_of(uj) << 32) | (unsigned)j;
    // all rows when the key reaches the last row's thk, none below the first's, else a search
    int a = key >= bthk[${R} - 1] ? ${R} : 0, z = key >= bthk[0] ? ${R} : 0;
    while (a < z) {
      const int mid = (a + z) >> 1;
      if (bthk[mid] <= key) a = mid + 1;
      else z = mid;
    }
    return lo | a << ${bits};
  };
  for (int x = tid; x < nselT * BT; x += NTHR) {
    const int j = x < nsel ? srow[x] : -1;
    const float uj = j >= 0 ? u[kv0 + j] : 0.f;
    mpos[x] = j;
    mu_[x] = uj;
    mrng[x] = j >= 0 ? rows_of(j, uj, 0) : 0;
  }
  int ncand = 0; // the new candidates kept, NTHR at a time: a ballot per warp, the warps' counts in qL
  int* wcount = reinterpret_cast<int*>(qL);
  for (int c0 = 0; c0 < rhi - rlo; c0 += NTHR) {
    const int j = rlo + c0 + tid;
    const float uj = j < rhi ? u[kv0 + j] : 0.f;
    const int rg = j < rhi ? rows_of(j, uj, min(${R}, max(0, j + W - i0))) : 0;
    const bool keep = (rg >> ${bits}) > (rg & ${(1 << bits) - 1});
    const unsigned ball = __ballot_sync(FULL, keep);
    if (lane == 0) wcount[tid >> 5] = __popc(ball);
    __syncthreads();
    int before = ncand, total = 0;
    for (int ww = 0; ww < NTHR / 32; ww++) {
      before += ww < (tid >> 5) ? wcount[ww] : 0;
      total += wcount[ww];
    }
    if (keep) {
      const int x = nselT * BT + before + __popc(ball & ((1u << lane) - 1));
      mpos[x] = j;
      mu_[x] = uj;
      mrng[x] = rg;
    }
    ncand += total;
    __syncthreads(); // wcount is read
  }
  const int nT = nselT + (ncand + BT - 1) / BT, nkeys = nT * BT;
  for (int x = nselT * BT + ncand + tid; x < nkeys; x += NTHR) {
    mpos[x] = -1;
    mu_[x] = 0.f;
    mrng[x] = 0;
  }
`;

/**
 * The selected pairs' per-element math, for this file's spk_bwd_sel and the wgmma one: with c0 the block
 * row of the thread's first column, s and dp the scores' and dP's element e of column group n, it forms
 * ds[e] and pg[e] (P g) under the selection mask, and adds the free-set dg to num[n][e & 1] and kdg.
 */
export const selPairs = (s: string, dp: string, num: string): string => `        const float2 L2 = *reinterpret_cast<const float2*>(qL + c0), D2 = *reinterpret_cast<const float2*>(qD + c0);
        const float2 t2 = *reinterpret_cast<const float2*>(qt + c0);
        const float2 lo2 = *reinterpret_cast<const float2*>(qlo + c0), hi2 = *reinterpret_cast<const float2*>(qhi + c0);
        float pg[4], ds[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int rr = e >> 1, c = c0 + (e & 1);
          const bool in = c >= klo[rr] && c < khi[rr]; // j in Sel_i
          const float Lc = (e & 1) ? L2.y : L2.x, Dc = (e & 1) ? D2.y : D2.x, tc = (e & 1) ? t2.y : t2.x;
${gatedPair({ s, dp, L: 'Lc', D: 'Dc', t: 'tc', lo: '((e & 1) ? lo2.y : lo2.x)', hi: '((e & 1) ? hi2.y : hi2.x)', u: 'ku[rr]', ds: 'ds[e]', pg: 'pg[e]' },
  `${num}[n][e & 1] += dg;`, 'kdg[rr] += dg;')}        }
`;

/**
 * One selected pair's math as CUDA statements (10 spaces in), shared by selPairs and the wgmma kernel's
 * transposed candidate tile (NARROW), so the two orientations cannot drift apart: with in (j in Sel_i), the
 * score s and dP dp, the query's L (lse log2 e), D, tau t and free-set bounds [lo, hi], and the key's score u,
 * it sets ds (dS) and pg (P g), and for j in F_i runs the statements onFree with dg = p dp.
 */
export function gatedPair(v: { s: string; dp: string; L: string; D: string; t: string; lo: string; hi: string; u: string; ds: string; pg: string }, ...onFree: string[]): string {
  return `          const float p = in ? ex2(${v.s} * sl - ${v.L}) : 0.f;
          const float gt = fminf(fmaxf(${v.u} - ${v.t}, 0.f), 1.f);
          ${v.ds} = p * (gt * ${v.dp} - ${v.D});
          ${v.pg} = p * gt;
          if (in && ${v.u} >= ${v.lo} && ${v.u} <= ${v.hi}) { // j in F_i
            const float dg = p * ${v.dp};
${onFree.map((x) => `            ${x}\n`).join('')}          }
`;
}

/** The selected-pairs kernels' parameters (this file's spk_bwd_sel and attention-wg-backward.ts's), as launch() encodes them and in C. */
export const SEL_PARAMS: KernelSource['params'] = ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr',
  'i32', 'i32', 'i32', 'i32', 'i32', 'f32'];
export const SEL_PARAMS_C = `    float* dq,                        // (B, NH, T, HS)  added to (this block owns its rows)
    float* dk,                        // (B, NKV, T, HS) added to (atomically)
    float* dv,                        // (B, NKV, T, HS) added to (atomically)
    double* dsel,                     // (B, NKV, T) added to: sum over queries i and heads of dg_ij [j in Sel_i ∩ F_i]
    double* mean,                     // (B, NKV, T) sum_{Sel_i ∩ F_i} dg_ij / |F_i| (0 when F_i is empty)
    const bf16* __restrict__ q,       // (B, NH, T, HS)
    const bf16* __restrict__ k,       // (B, NKV, T, HS)
    const bf16* __restrict__ v,       // (B, NKV, T, HS)
    const bf16* __restrict__ dout,    // (B, NH, T, HS)
    const float* __restrict__ lse,    // (B, NH, T) natural log
    const float* __restrict__ Dg,     // (B, NH, T)
    const float* __restrict__ u,      // (B, NKV, T)
    const double* __restrict__ tau,   // (B, NKV, T)
    const u64* __restrict__ thk,      // (B, NKV, T) key of Sel_i's weakest member (0: all selected)
    const int* __restrict__ count,    // (B, NKV, T) (not read: a block needs only min(K, n_i0))
    const int* __restrict__ sel,      // (B, NKV, ceil(T / 64), K) ascending positions: the rows of queries 64 r
    const int* __restrict__ nfree,    // (B, NKV, T) |F_i|
    int T, int NH, int NKV, int K, int W, float scale`;

/**
 * Selected pairs, in win's orientation. Launch: grid (bwdSelBlocks(v, T), NKV, B), block 128, dynamic
 * shared bwdSelShared(v, K). Runs after spk_bwd_win (adds to its dq, dk, dv). Each tile's keys: warp w owns
 * keys 16w .. 16w + 15 and computes S^T = K Q^T and dP^T = V dO^T; dV = (P g)^T dO and dK = dS^T Q come
 * from register fragments and go out with red.global.add per tile; dQ += dS K goes through one
 * transposed tile (dS^T) in shared memory and accumulates in registers (warp w: queries 16w ..) over
 * the block's tiles. A key's free-set dg is a row sum (2 shuffles); num_i is a per-thread column sum
 * reduced once at the end. (Measured against the query-major form, which formed dK and dV from dS and
 * P g in shared memory: 7% faster at 64K and HS 64, 14-17% at 4K; dev/cuda-attention-fast/README.md.)
 *
 * QB 128 (HS 64; what CudaBackend runs where two blocks fit an SM): 128 queries [i0, i0 + 128) over Sel_{i0} and the new candidates (i0 - W, i0 + 127 - W],
 * which by the block property cover each selected pair of the 128 rows once; a key's rows [lo, hi) now
 * span 128 (the search runs over 128 thk). Per key tile, the two 64-query halves in turn form S^T, dP^T,
 * the mask, dS^T (into a [64 keys][128 queries] Ps) and the dg sums; then one dV and one dK product over
 * all 128 queries (k = 128) and one set of reductions, so each gathered K/V row and each reduced dK/dV
 * row serves twice the pairs (64K: 3.65 to 2.65 ms). Registers run short (255, measured with ptxas,
 * nvcc 13.0), so dK and dV read dS and P g back from shared memory (Ps, Gs) rather than keeping both
 * halves' fragments; dQ stays in registers (32 rows a warp). 110.5 KiB at K = 512: two blocks per SM up
 * to K = 640.
 */
export function bwdSelSource(v: BackwardVariant): KernelSource {
  const o = full(v);
  const name = bwdSelName(o);
  // QB 128 is written into the 64-query form piece by piece, so that QB 64's source stays as it was
  // measured. R names the block's query count, hq a half's first block row, hn a half's per-thread arrays.
  const q2 = o.QB === 128;
  if (q2 && o.HS !== 64) throw new Error('spk_bwd_sel: QB 128 is built for HS 64 (at HS 128 it measured no faster)');
  const R = q2 ? 'QB' : 'BT', hq = q2 ? 'hf * BT + ' : '', hn = q2 ? '[hf]' : '';
  // one tile's pairs (QB 128: one half's): S^T, dP^T, the mask and gate, dS^T into Ps, the dg sums
  const pairs = `      // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys x 64 queries: win's loop, written out again
      // because as a shared __forceinline__ function it doubled this kernel's spills at MINB 3 (nvcc 13.0)
      float s[NT][4], dp[NT][4];
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < KS; ks++) {
        u32 ka[4], va[4];
        ldsm4(smem_addr(Kst + (wk + (mi & 1) * 8 + r8) * LDS + ks * 16 + (mi >> 1) * 8), ka);
        ldsm4(smem_addr(Vs + (wk + (mi & 1) * 8 + r8) * LDS + ks * 16 + (mi >> 1) * 8), va);
#pragma unroll
        for (int n = 0; n < NT; n += 2) {
          u32 bq[4], bo[4];
          ldsm4(smem_addr(Qs + (${hq}(n + (mi >> 1)) * 8 + r8) * LDS + ks * 16 + (mi & 1) * 8), bq);
          ldsm4(smem_addr(Os + (${hq}(n + (mi >> 1)) * 8 + r8) * LDS + ks * 16 + (mi & 1) * 8), bo);
          mma(s[n], ka, bq[0], bq[1]);
          mma(s[n + 1], ka, bq[2], bq[3]);
          mma(dp[n], va, bo[0], bo[1]);
          mma(dp[n + 1], va, bo[2], bo[3]);
        }
      }
${!q2 ? `      u32 pa[BT / 16][4], sa[BT / 16][4];
      float kdg[2] = {0.f, 0.f};
` : ''}#pragma unroll
      for (int n = 0; n < NT; n++) {
        const int c0 = ${hq}n * 8 + 2 * t4;
${selPairs('s[n][e]', 'dp[n][e]', `num${hn}`)}${q2 ? `        *reinterpret_cast<u32*>(Gs + (wk + g8) * LDP + c0) = pack_bf16(pg[0], pg[1]);
        *reinterpret_cast<u32*>(Gs + (wk + g8 + 8) * LDP + c0) = pack_bf16(pg[2], pg[3]);
        *reinterpret_cast<u32*>(Ps + (wk + g8) * LDP + c0) = pack_bf16(ds[0], ds[1]);
        *reinterpret_cast<u32*>(Ps + (wk + g8 + 8) * LDP + c0) = pack_bf16(ds[2], ds[3]);
` : `        pa[n >> 1][(n & 1) * 2 + 0] = pack_bf16(pg[0], pg[1]);
        pa[n >> 1][(n & 1) * 2 + 1] = pack_bf16(pg[2], pg[3]);
        sa[n >> 1][(n & 1) * 2 + 0] = pack_bf16(ds[0], ds[1]);
        sa[n >> 1][(n & 1) * 2 + 1] = pack_bf16(ds[2], ds[3]);
        *reinterpret_cast<u32*>(Ps + (wk + g8) * LDP + c0) = sa[n >> 1][(n & 1) * 2 + 0];
        *reinterpret_cast<u32*>(Ps + (wk + g8 + 8) * LDP + c0) = sa[n >> 1][(n & 1) * 2 + 1];
`}      }
`;
  const deeper = (body: string): string => body.replace(/^(?=[^#\n])/gm, '  '); // pragmas stay in column 0
  // QB 128: body (starting with its loop's pragma) once per half, unrolled
  const perHalf = (body: string, at: string): string => (q2 ? `#pragma unroll\n${at}for (int hf = 0; hf < 2; hf++)\n${deeper(body)}` : body);
  const halves = `      float kdg[2] = {0.f, 0.f};
#pragma unroll
      for (int hf = 0; hf < 2; hf++) { // the two halves in turn, against the same K and V tile
${deeper(pairs)}      }
`;
  return {
    name,
    params: SEL_PARAMS,
    source: `${common(o)}
extern "C" __global__ void __launch_bounds__(NTHR${o.MINB ? `, ${o.MINB}` : ''}) ${name}(
${SEL_PARAMS_C}) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem);   // [2][BT][LDS] (the next tile's K loads during this one)
  bf16* Vs = Ks + 2 * BT * LDS;               // [BT][LDS] (the next tile's V loads once dP^T is done)
  bf16* Qs = Vs + BT * LDS;                   // [${R}][LDS]
  bf16* Os = Qs + ${R} * LDS;                   // [${R}][LDS] dO
  bf16* Ps = Os + ${R} * LDS;                   // [BT keys][LDP queries] dS^T
${q2 ? `  bf16* Gs = Ps + BT * LDP;                   // [BT keys][LDP queries] (P g)^T
  u64* bthk = reinterpret_cast<u64*>(Gs + BT * LDP); // thk of the block's 128 queries (~0 past T)` : `  u64* bthk = reinterpret_cast<u64*>(Ps + BT * LDP); // thk of the block's ${q2 ? 128 : 64} queries (~0 past T)`}
  float* qL = reinterpret_cast<float*>(bthk + ${R});   // per query: lse log2 e (+inf: no p), this head
  float* qD = qL + ${R};                               // D_i, this head
  float* qt = qD + ${R};                               // tau_i as float (the gate's threshold)
  float* qlo = qt + ${R};                              // F_i's float bounds
  float* qhi = qlo + ${R};
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g8 = lane >> 2, t4 = lane & 3;
  const int mi = lane >> 3, r8 = lane & 7;
  const int i0 = blockIdx.x * ${R}, h = blockIdx.y, b = blockIdx.z;
${selKeySet(R, 8)}  for (int x = tid; x < nkeys; x += NTHR) mdg[x] = 0.f; // per key: its dg summed over the block's F pairs and heads

  auto issue = [&](int t, bf16* dst, const bf16* src) {
    for (int x = tid; x < BT * CPR; x += NTHR) {
      const int r = x / CPR, cc = x % CPR;
      const int j = mpos[t * BT + r];
      const size_t off = (size_t)(j >= 0 ? j : 0) * HS + cc * 8;
      cp_async16(smem_addr(dst + r * LDS + cc * 8), src + off, j >= 0 ? 16 : 0);
    }
    cp_commit();
  };

  const int wk = w * 16;
${q2 ? `  float num[2][NT][2];               // per half: column sums of free-set dg over this thread's keys, tiles and heads
#pragma unroll
  for (int n = 0; n < NT; n++) num[0][n][0] = num[0][n][1] = num[1][n][0] = num[1][n][1] = 0.f;
` : `  float num[NT][2];                  // column sums of free-set dg over this thread's keys, tiles and heads
#pragma unroll
  for (int n = 0; n < NT; n++) num[n][0] = num[n][1] = 0.f;
`}
  for (int gi = 0; gi < G && nT > 0; gi++) {
    const size_t r0 = ((size_t)b * NH + h * G + gi) * T;
    __syncthreads(); // metadata written; the previous head is done with Qs, Os, qL, qD and the stages
    for (int x = tid; x < ${R} * CPR; x += NTHR) {
      const int r = x / CPR, cc = x % CPR, i = i0 + r;
      const size_t off = (r0 + (i < T ? i : 0)) * HS + cc * 8;
      cp_async16(smem_addr(Qs + r * LDS + cc * 8), q + off, i < T ? 16 : 0);
      cp_async16(smem_addr(Os + r * LDS + cc * 8), dout + off, i < T ? 16 : 0);
    }
    cp_commit();
    issue(0, Ks, kb);
    issue(0, Vs, vb);
    for (int r = tid; r < ${R}; r += NTHR) {
      const int i = i0 + r;
      const float L = i < T ? lse[r0 + i] : -FINF;
      qL[r] = L == -FINF ? FINF : L * LOG2E;
      qD[r] = i < T ? Dg[r0 + i] : 0.f;
    }
${!q2 ? `    float acc[NO][4]; // dQ rows i0 + 16w ..
#pragma unroll
    for (int n = 0; n < NO; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
` : `    float acc[2][NO][4]; // dQ rows i0 + 64 hf + 16w ..
#pragma unroll
    for (int n = 0; n < NO; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[0][n][e] = acc[1][n][e] = 0.f;
`}
    for (int t = 0, st = 0; t < nT; t++, st ^= 1) {
      if (t + 1 < nT) { issue(t + 1, Ks + (st ^ 1) * BT * LDS, kb); cp_wait<1>(); }
      else cp_wait<0>();
      __syncthreads();
      const bf16* Kst = Ks + st * BT * LDS;
${keyRanges('255', 8)}${q2 ? halves : pairs}${keySums('')}      __syncthreads(); // dS^T complete; every warp is past dP^T
      if (t + 1 < nT) issue(t + 1, Vs, vb);
      // dV = (P g)^T dO, then dK = scale dS^T Q, for the warp's keys, added atomically${q2 ? ' (k: both halves)' : ''}
      const int jr[2] = {mpos[t * BT + wk + g8], mpos[t * BT + wk + g8 + 8]};
#pragma unroll
      for (int which = 0; which < 2; which++) {
        float c[NO][4];
#pragma unroll
        for (int n = 0; n < NO; n++) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.f;
#pragma unroll
${q2 ? `        for (int kk = 0; kk < QB / 16; kk++) {
          u32 a[4];
          ldsm4(smem_addr((which == 0 ? Gs : Ps) + (wk + (mi & 1) * 8 + r8) * LDP + kk * 16 + (mi >> 1) * 8), a);
          MMA_BT(c, a, (which == 0 ? Os : Qs) + kk * 16 * LDS, LDS, NO, lane)
        }` : `        for (int kk = 0; kk < BT / 16; kk++) {
          if (which == 0) MMA_BT(c, pa[kk], Os + kk * 16 * LDS, LDS, NO, lane)
          else MMA_BT(c, sa[kk], Qs + kk * 16 * LDS, LDS, NO, lane)
        }`}
        float* dst = which == 0 ? dv : dk;
        const float f = which == 0 ? 1.f : scale;
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
          if (jr[rr] < 0) continue;
          float* row = dst + (kv0 + jr[rr]) * HS + 2 * t4;
#pragma unroll
          for (int n = 0; n < NO; n++) red2(row + n * 8, f * c[n][2 * rr], f * c[n][2 * rr + 1]);
        }
      }
      // dQ rows i0 + ${q2 ? '64 hf + ' : ''}16w .. += dS K: A = dS from Ps ([key][query], so .trans), k = keys
${perHalf(`#pragma unroll
      for (int kk = 0; kk < BT / 16; kk++) {
        u32 a[4];
        ldsm4t(smem_addr(Ps + (kk * 16 + (mi >> 1) * 8 + r8) * LDP + ${hq}wk + (mi & 1) * 8), a);
        MMA_BT(acc${hn}, a, Kst + kk * 16 * LDS, LDS, NO, lane);
      }
`, '      ')}      __syncthreads(); // Ps and this stage are free again
    }
${perHalf(`#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      const int i = i0 + ${hq}wk + g8 + 8 * rr;
      if (i >= T) continue;
#pragma unroll
      for (int n = 0; n < NO; n++) {
        float2* p = reinterpret_cast<float2*>(dq + (r0 + i) * HS + n * 8 + 2 * t4);
        float2 x = *p;
        x.x += scale * acc${hn}[n][2 * rr];
        x.y += scale * acc${hn}[n][2 * rr + 1];
        *p = x;
      }
    }
`, '    ')}  }
  __syncthreads(); // every tile's key sums are in mdg; Ps is free
  for (int x = tid; x < nkeys; x += NTHR) {
    const float val = mdg[x];
    if (mpos[x] >= 0 && val != 0.f) atomicAdd(dsel + kv0 + mpos[x], (double)val);
  }
  // num_i: each column's sum over the warp's keys (the 8 lanes of one t4), then over the 4 warps
  float* wnum = reinterpret_cast<float*>(Ps); // [4][${R}]
${perHalf(`#pragma unroll
  for (int n = 0; n < NT; n++)
#pragma unroll
    for (int x = 0; x < 2; x++) {
      float val = num${hn}[n][x];
      val += __shfl_xor_sync(FULL, val, 4);
      val += __shfl_xor_sync(FULL, val, 8);
      val += __shfl_xor_sync(FULL, val, 16);
      if (g8 == 0) wnum[w * ${R} + ${hq}n * 8 + 2 * t4 + x] = val;
    }
`, '  ')}  __syncthreads();
  for (int r = tid; r < ${R}; r += NTHR) {
    const int i = i0 + r;
    if (i >= T) continue;
    const int nf = nfree[kv0 + i];
    const float tot = wnum[r] + wnum[${R} + r] + wnum[2 * ${R} + r] + wnum[3 * ${R} + r];
    mean[kv0 + i] = nf > 0 ? (double)tot / nf : 0.0;
  }
}
`,
  };
}
