// Layout probe for kernel.ts (no attention math): one warpgroup does the two products of an attention
// tile with the forward's shared layouts, fragments and descriptors, and the host compares them with
// exact CPU products (inputs are small integers, so every fp32 sum is exact):
//   C1 (64 x 64) = A (64 x HS) B (64 x HS)^T   wgmma SS, A and B K-major (the Q K^T step);
//   C2 (64 x HS) = P (64 x 64) V (64 x HS)     wgmma RS, P in the register A fragment, V key-major
//                                              (MN-major B, imm-trans-b = 1) (the P V step).
// Each HS runs twice: descriptors as kernel.ts documents them (swap false) and with leading and stride
// byte offsets exchanged (swap true), so one device run tells which one the hardware reads, and the
// mismatches print as (row, col, got, want).

import type { CudaRuntime, KernelSource } from '../../src/cuda/runtime.js';
import { PRELUDE, wgmmaRS, wgmmaSS } from './kernel.js';

export function probeName(HS: number, swap: boolean): string {
  return `wgmma_probe_hs${HS}${swap ? '_swap' : ''}`;
}

export function probeSource(HS: 64 | 128, swap: boolean): KernelSource {
  const name = probeName(HS, swap);
  const lead = swap ? HS * 16 : 128, stride = swap ? 128 : HS * 16;
  return {
    name,
    archSpecific: true,
    params: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'],
    source: `${PRELUDE}
#define HS ${HS}
#define CPR (HS / 8)
#define TILE_BYTES (64 * HS * 2)
${wgmmaSS(64)}
${wgmmaRS(HS, 1)}
extern "C" __global__ void __launch_bounds__(128) ${name}(
    float* c1,            // (64, 64)
    float* c2,            // (64, HS)
    const bf16* a,        // (64, HS) row-major
    const bf16* bm,       // (64, HS) row-major: B^T
    const bf16* p,        // (64, 64) row-major
    const bf16* vm) {     // (64, HS) row-major: key-major V
  extern __shared__ __align__(1024) unsigned char smem[];
  unsigned char* As = smem;
  unsigned char* Bs = As + TILE_BYTES;
  unsigned char* Vs = Bs + TILE_BYTES;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
  for (int x = tid; x < 64 * CPR; x += 128) {
    const int r = (x & 7) + ((x >> 3) / CPR) * 8, c = (x >> 3) % CPR;
    reinterpret_cast<uint4*>(As)[x] = reinterpret_cast<const uint4*>(a + r * HS + c * 8)[0];
    reinterpret_cast<uint4*>(Bs)[x] = reinterpret_cast<const uint4*>(bm + r * HS + c * 8)[0];
    reinterpret_cast<uint4*>(Vs)[x] = reinterpret_cast<const uint4*>(vm + r * HS + c * 8)[0];
  }
  fence_async_shared();
  __syncthreads();
  const u64 da = make_desc(smem_addr(As), ${lead}, ${stride});
  const u64 db = make_desc(smem_addr(Bs), ${lead}, ${stride});
  const u64 dv = make_desc(smem_addr(Vs), ${lead}, ${stride});
  float d1[32];
  wg_fence();
#pragma unroll
  for (int ks = 0; ks < HS / 16; ks++) wg_ss_n64(d1, da + ks * 16, db + ks * 16, ks);
  wg_commit();
  wg_wait<0>();
  reg_fence(d1);
  u32 pa[4][4];
  const u32* pw = reinterpret_cast<const u32*>(p);
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    const int r0 = 16 * w + g, r1 = r0 + 8, c0 = 16 * kk + 2 * t, c1 = c0 + 8;
    pa[kk][0] = pw[(r0 * 64 + c0) >> 1];
    pa[kk][1] = pw[(r1 * 64 + c0) >> 1];
    pa[kk][2] = pw[(r0 * 64 + c1) >> 1];
    pa[kk][3] = pw[(r1 * 64 + c1) >> 1];
  }
  float d2[HS / 2];
#pragma unroll
  for (int i = 0; i < HS / 2; i++) d2[i] = 0.f;
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < 4; kk++) wg_rs_n${HS}_t1(d2, pa[kk][0], pa[kk][1], pa[kk][2], pa[kk][3], dv + (u64)((kk * 2 * HS * 16) >> 4));
  wg_commit();
  wg_wait<0>();
  reg_fence(d2);
#pragma unroll
  for (int i = 0; i < 32; i++) c1[(16 * w + g + 8 * ((i >> 1) & 1)) * 64 + 8 * (i >> 2) + 2 * t + (i & 1)] = d1[i];
#pragma unroll
  for (int i = 0; i < HS / 2; i++) c2[(16 * w + g + 8 * ((i >> 1) & 1)) * HS + 8 * (i >> 2) + 2 * t + (i & 1)] = d2[i];
}
`,
  };
}

export interface ProbeResult { HS: number; swap: boolean; ssBad: number; rsBad: number; detail: string }

// A descriptor read the wrong way round can address up to ~3 tiles past its own; the probe's shared
// allocation is padded so that such a reading returns wrong numbers instead of a fault that would end
// the process (the first device run faulted exactly so: CUDA_ERROR_ILLEGAL_ADDRESS).
const PAD = 64 * 1024;

/** Runs the probes for the given HS and descriptor readings; one result per (HS, swap). */
export function runProbes(rt: CudaRuntime, HSs: readonly (64 | 128)[] = [64, 128], swapsTried: readonly boolean[] = [false, true]): ProbeResult[] {
  const results: ProbeResult[] = [];
  const bits = (x: number): number => (x === 0 ? 0 : (new Uint32Array(new Float32Array([x]).buffer)[0] >>> 16)); // small ints: exact
  let seed = 12345;
  const rnd = (): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return ((seed >>> 16) % 5) - 2; };
  for (const HS of HSs) {
    const A = Float32Array.from({ length: 64 * HS }, rnd), Bm = Float32Array.from({ length: 64 * HS }, rnd);
    const P = Float32Array.from({ length: 64 * 64 }, rnd), V = Float32Array.from({ length: 64 * HS }, rnd);
    const want1 = new Float32Array(64 * 64), want2 = new Float32Array(64 * HS);
    for (let m = 0; m < 64; m++) for (let n = 0; n < 64; n++) { let s = 0; for (let kx = 0; kx < HS; kx++) s += A[m * HS + kx] * Bm[n * HS + kx]; want1[m * 64 + n] = s; }
    for (let m = 0; m < 64; m++) for (let d = 0; d < HS; d++) { let s = 0; for (let j = 0; j < 64; j++) s += P[m * 64 + j] * V[j * HS + d]; want2[m * HS + d] = s; }
    const dev = (x: Float32Array) => {
      const h = Uint16Array.from(x, bits);
      const blk = rt.arena.take(h.byteLength);
      rt.cu('cuMemcpyHtoDAsync_v2', blk.ptr, h, h.byteLength, rt.stream);
      rt.synchronize(); // h must outlive the copy
      return blk;
    };
    const da = dev(A), db = dev(Bm), dp = dev(P), dv = dev(V);
    const c1 = rt.arena.take(64 * 64 * 4), c2 = rt.arena.take(64 * HS * 4);
    for (const swap of swapsTried) {
      const k = rt.kernel(probeSource(HS, swap));
      const shared = 3 * 64 * HS * 2 + PAD;
      rt.cu('cuFuncSetAttribute', k.fn, 8, shared);
      rt.cu('cuMemsetD32Async', c1.ptr, 0x7fc00000, 64 * 64, rt.stream); // NaN: unwritten shows
      rt.cu('cuMemsetD32Async', c2.ptr, 0x7fc00000, 64 * HS, rt.stream);
      rt.launch(k, 1, 128, shared, [c1.ptr, c2.ptr, da.ptr, db.ptr, dp.ptr, dv.ptr]);
      rt.synchronize();
      const got1 = new Float32Array(64 * 64), got2 = new Float32Array(64 * HS);
      rt.cu('cuMemcpyDtoHAsync_v2', got1, c1.ptr, got1.byteLength, rt.stream);
      rt.cu('cuMemcpyDtoHAsync_v2', got2, c2.ptr, got2.byteLength, rt.stream);
      rt.synchronize();
      const bad = (got: Float32Array, want: Float32Array, cols: number, tag: string): [number, string] => {
        let n = 0;
        const ex: string[] = [];
        for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) { n++; if (ex.length < 4) ex.push(`${tag}(${Math.floor(i / cols)},${i % cols}) got ${got[i]} want ${want[i]}`); }
        return [n, ex.join('; ')];
      };
      const [b1, e1] = bad(got1, want1, 64, 'SS'), [b2, e2] = bad(got2, want2, HS, 'RS');
      results.push({ HS, swap, ssBad: b1, rsBad: b2, detail: [e1, e2].filter((s) => s).join(' | ') });
    }
    for (const b of [da, db, dp, dv, c1, c2]) rt.arena.give(b);
  }
  return results;
}
