// Hopper (sm_90a) warpgroup matrix-multiply helpers shared by the wgmma kernels (attention-wg-backward.ts
// and the lab dev/cuda-attention-wgmma): CUDA C text for NVRTC (no headers), the PTX wrappers of
// wgmma.mma_async, its fences, cp.async and the shared-memory matrix descriptors. Sources that use them
// set `archSpecific: true`.
//
// Two shared-memory tile layouts. SW128 (at the end) is the 128-byte swizzle that the production kernels
// use. The no-swizzle layout (the lab's, slower) has core matrices of 8 rows x 16 bytes, each
// stored as 128 contiguous bytes. In a tile of R rows by C bf16 columns, row r's 16-byte chunk c (columns
// 8c .. 8c + 7) sits at byte ((r / 8) (C / 8) + c) 128 + (r % 8) 16 (cmOffset below). Descriptors
// (PTX ISA, matrix descriptor: bits 0-13 start >> 4, 16-29 leading byte offset >> 4, 32-45 stride byte
// offset >> 4, 62-63 swizzle 0 = none), probed on an H100 (dev/cuda-attention-wgmma/probe.ts):
//   K-major operand (the reduction runs along the tile's columns): leading = 128, stride = C 16; the
//     k-step of 16 columns starts 256 bytes on.
//   MN-major operand (the reduction runs down the tile's rows; transpose bit 1): leading = C 16 (the
//     next 8 rows, along the reduction), stride = 128 (the next 8 columns); the k-step of 16 rows starts
//     2 C 16 bytes on.

/** Byte offset of row r, 16-byte chunk c in a no-swizzle tile with C bf16 columns (TypeScript twin of CM_OFF). */
export function cmOffset(r: number, c: number, C: number): number {
  return ((Math.floor(r / 8) * (C / 8) + c) * 128) + (r % 8) * 16;
}

const list = (n: number, from: number): string => Array.from({ length: n }, (_, i) => `%${from + i}`).join(',');
const outs = (n: number, arr: string): string => Array.from({ length: n }, (_, i) => `"+f"(${arr}[${i}])`).join(', ');

/**
 * wg_ss_n{N}[_t{TA}{TB}](d, da, db, acc): D(64 x N) (+)= A(64 x 16) B(16 x N), both from shared memory;
 * TA / TB = 1 for an MN-major operand; D is overwritten when acc == 0.
 */
export function wgmmaSS(N: number, TA: 0 | 1 = 0, TB: 0 | 1 = 0): string {
  const nd = N / 2, suffix = TA || TB ? `_t${TA}${TB}` : '';
  return `__device__ __forceinline__ void wg_ss_n${N}${suffix}(float (&d)[${nd}], u64 da, u64 db, int acc) {
  asm volatile("{\\n.reg .pred p;\\nsetp.ne.b32 p, %${nd + 2}, 0;\\n"
    "wgmma.mma_async.sync.aligned.m64n${N}k16.f32.bf16.bf16 {${list(nd, 0)}}, %${nd}, %${nd + 1}, p, 1, 1, ${TA}, ${TB};\\n}"
    : ${outs(nd, 'd')}
    : "l"(da), "l"(db), "r"(acc));
}`;
}

/** wg_rs_n{N}_t{TB}(d, a0..a3, db): D(64 x N) += A(64 x 16, registers: mma.m16n8k16's A fragment per warp) B. */
export function wgmmaRS(N: number, TB: 0 | 1): string {
  const nd = N / 2;
  return `__device__ __forceinline__ void wg_rs_n${N}_t${TB}(float (&d)[${nd}], u32 a0, u32 a1, u32 a2, u32 a3, u64 db) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n${N}k16.f32.bf16.bf16 {${list(nd, 0)}}, {%${nd},%${nd + 1},%${nd + 2},%${nd + 3}}, %${nd + 4}, 1, 1, 1, ${TB};"
    : ${outs(nd, 'd')}
    : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db));
}`;
}

/** Types, shared addresses, cp.async, fences, descriptors, exp2 and bf16 packing. */
export const WGMMA_PRELUDE = `
typedef unsigned long long u64;
typedef unsigned short bf16;
typedef unsigned int u32;
#define FULL 0xffffffffu
#define FINF __int_as_float(0x7f800000)
// byte of row r, 16-byte chunk c in a no-swizzle tile of C bf16 columns
#define CM_OFF(r, c, C) ((((r) >> 3) * ((C) >> 3) + (c)) * 128 + ((r) & 7) * 16)
__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory"); }
// generic-proxy writes (cp.async, st.shared) made visible to the async proxy (wgmma operand reads)
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory"); }
// keeps reads of a wgmma accumulator below the wait that completes it
template <int N> __device__ __forceinline__ void reg_fence(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i]) :: "memory");
}
// matrix descriptor, no swizzle: start >> 4 (bits 0-13), leading >> 4 (16-29), stride >> 4 (32-45)
__device__ __forceinline__ u64 make_desc(u32 saddr, u32 lead, u32 stride) {
  return (u64)((saddr & 0x3FFFFu) >> 4) | ((u64)(lead >> 4) << 16) | ((u64)(stride >> 4) << 32);
}
// 2^x, approximate (MUFU.EX2; -inf -> 0)
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
  u32 d;
  asm("cvt.rn.bf16x2.f32 %0, %2, %1;" : "=r"(d) : "f"(lo), "f"(hi));
  return d;
}
`;

/**
 * The 128-byte swizzled tile layout and its descriptors (CUDA macros; the kernel defines BT, the rows of a
 * tile, and CPR, its 16-byte chunks a row). Columns go in sub-tiles of 64 ([BT][64], 128-byte rows); in a
 * sub-tile row r sits at byte 128 r with its chunk c at chunk c ^ (r % 8), so tiles start on a 1024-byte
 * boundary. Measured on an H100 against the no-swizzle layout above: 25 to 40 % faster (bench/RESULTS.md,
 * session 8).
 */
export const SW128 = `// 128-byte swizzle: columns in blocks of 64 (one [BT][64] sub-tile of 8 KiB each); in a sub-tile row r
// is at byte 128 r and its chunk c at chunk c ^ (r % 8). Copy x takes row x / CPR, chunk x % CPR.
#define COPY_ROW(x) ((x) / CPR)
#define COPY_CHUNK(x) ((x) % CPR)
#define SW_OFF(r, c) ((((c) >> 3) * BT * 128) + (r) * 128 + ((((c) & 7) ^ ((r) & 7)) << 4))
#define COPY_DST(x) SW_OFF((x) / CPR, (x) % CPR)
#define P_OFF(r, n) SW_OFF(r, n)
// a K-major k-step (16 columns): 32 bytes on within a sub-tile, the next sub-tile after 4; >> 4
#define KOFF(ks) (((((ks) >> 2) * BT * 128) + ((ks) & 3) * 32) >> 4)
// an MN-major k-step (16 rows): 2048 bytes, >> 4
#define MNSTEP(C) 128
// swizzle mode 1 (bits 62-63); stride 1024 (the next 8 rows); leading: for MN-major operands 128 columns
// wide, one sub-tile (the next 64 columns along M or N; the other reading failed validation on an H100),
// otherwise unused
#define DESC_K(a) (make_desc(a, 1024, 1024) | (1ull << 62))
#define DESC_MN(a, C) (((C) > 64 ? make_desc(a, BT * 128, 1024) : make_desc(a, 1024, 1024)) | (1ull << 62))
`;
