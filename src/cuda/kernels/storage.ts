// bfloat16 storage for the elementwise and row kernels. Kernels are written once, over `float*`; the
// backend specialises a kernel to the buffers it is launched with: each `float*` parameter that
// receives a bf16 buffer becomes `bf16*`. bf16 below converts to float on every read and rounds to
// nearest even on every write, so arithmetic stays fp32 (or double where a kernel says so) and only
// storage is narrow. The struct is two bytes, so `p[i]`, `p + i` and `p[i] += x` keep their
// meaning. A kernel that reinterprets a float pointer (float4 loads, __ldg) cannot take bf16: the
// backend refuses those buffers before launching (the attention kernels; see backend.ts).
// Not here: cuBLAS's bf16 products (backend.ts, cublasGemmEx).

import type { KernelSource } from '../runtime.js';

/** The bf16 storage type: float on read, round-to-nearest-even on write, NaN kept NaN. */
export const BF16_SOURCE = `
struct bf16 {
  unsigned short bits;
  __device__ __forceinline__ operator float() const { return __uint_as_float((unsigned)bits << 16); }
  __device__ __forceinline__ bf16& operator=(float f) {
    unsigned u = __float_as_uint(f);
    bits = (u & 0x7fffffffu) > 0x7f800000u ? (unsigned short)((u >> 16) | 0x40u)
                                            : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return *this;
  }
  __device__ __forceinline__ bf16& operator+=(float f) { return *this = (float)*this + f; }
};
`;

/** The float32 -> bfloat16 copy of n elements (the weights' bf16 shadow, operand casts). Grid ceil(n / 256), block 256. */
export function toBf16Source(): KernelSource {
  return {
    name: 'to_bf16',
    params: ['ptr', 'ptr', 'i32'],
    source: `${BF16_SOURCE}
extern "C" __global__ void to_bf16(
    bf16* out,           // (n)
    const float* inp,    // (n)
    int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = inp[i];
}
`,
  };
}

/**
 * The same copy, 8 elements a thread: two float4 loads and one 16-byte store (n8 = n / 8; both
 * addresses 16-byte aligned). It rounds exactly as to_bf16 (the same bf16 struct) and is what the
 * backend launches when n and the addresses allow. Grid ceil(n8 / 256), block 256.
 */
export function toBf16x8Source(): KernelSource {
  return {
    name: 'to_bf16_x8',
    params: ['ptr', 'ptr', 'i32'],
    source: `${BF16_SOURCE}
extern "C" __global__ void to_bf16_x8(
    bf16* out,           // (8 n8), 16-byte aligned
    const float* inp,    // (8 n8), 16-byte aligned
    int n8) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n8) return;
  const float4 a = reinterpret_cast<const float4*>(inp)[2 * i], b = reinterpret_cast<const float4*>(inp)[2 * i + 1];
  __align__(16) bf16 r[8];
  r[0] = a.x; r[1] = a.y; r[2] = a.z; r[3] = a.w;
  r[4] = b.x; r[5] = b.y; r[6] = b.z; r[7] = b.w;
  reinterpret_cast<uint4*>(out)[i] = *reinterpret_cast<const uint4*>(r);
}
`,
  };
}

/**
 * kernel with the `float*` parameters at the positions flagged in bf16 made `bf16*` (positions are
 * the kernel's parameter indices). Returns kernel itself when no position is flagged. Throws when a
 * flagged parameter is not a float pointer: a bf16 buffer passed where the kernel cannot take one.
 */
export function specialise(kernel: KernelSource, bf16: readonly boolean[]): KernelSource {
  if (!bf16.some(Boolean)) return kernel;
  const src = kernel.source;
  const entry = src.indexOf(`${kernel.name}(`, src.indexOf('extern "C" __global__'));
  if (entry < 0) throw new Error(`specialise: no entry point ${kernel.name} in its source`);
  // The parameter list, split at commas outside comments (comments hold shapes like "(N, C)").
  const open = entry + kernel.name.length;
  const params: string[] = [];
  let cur = '';
  let i = open + 1;
  for (; i < src.length && src[i] !== ')'; i++) {
    if (src.startsWith('//', i)) {
      while (i < src.length && src[i] !== '\n') i++;
      continue;
    }
    if (src[i] === ',') {
      params.push(cur);
      cur = '';
    } else cur += src[i];
  }
  params.push(cur);
  if (params.length !== kernel.params.length) {
    throw new Error(`specialise: ${kernel.name} declares ${params.length} parameters, its KernelSource lists ${kernel.params.length}`);
  }
  const typed = params.map((p, k) => {
    const decl = p.trim();
    if (!bf16[k]) return decl;
    if (!/^(const\s+)?float\s*\*/.test(decl)) throw new Error(`specialise: parameter ${k} of ${kernel.name} (${decl}) cannot take a bf16 buffer`);
    return decl.replace('float', 'bf16');
  });
  const source = `${src.includes(BF16_SOURCE) ? '' : BF16_SOURCE}${src.slice(0, open)}(\n    ${typed.join(',\n    ')}${src.slice(i)}`;
  return { ...kernel, source };
}
