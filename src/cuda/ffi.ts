// koffi declarations of the C functions the CUDA backend calls: the driver API (libcuda), NVRTC and
// cuBLAS. A plain list, one C prototype per function, with the TypeScript type of the binding; no
// logic and no error checking here (runtime.ts's `check` wraps every call). Not the CUDA runtime
// API (libcudart): the driver API needs no native build step and gives explicit contexts.
//
// Conventions, because koffi 3 passes pointers as BigInt:
// - handles (CUcontext, CUmodule, CUfunction, CUstream, CUevent, nvrtcProgram, cublasHandle_t) are
//   `void *` and travel as bigint; an out-parameter of any of them is a BigUint64Array(1);
// - device addresses (CUdeviceptr) are uint64_t, also bigint;
// - int / size_t / float out-parameters are an Int32Array(1) / BigUint64Array(1) / Float32Array(1)
//   (a typed array passed for a pointer is pinned for the duration of the call only, so none of
//   these may be kept by the callee: none of the functions below keeps one);
// - every function returns its status code as a number (CUresult, nvrtcResult, cublasStatus_t).
// SPEC.md: none directly; this is the plumbing of the `--device cuda` path of section 7.

import type { LibraryHandle } from 'koffi';

type Status = number;
type Ptr = bigint; // a host or device address, or a handle
type Out64 = BigUint64Array; // one handle, device address or size_t written by the callee
type OutI32 = Int32Array;
type HostIn = ArrayBufferView | null;

/** Bindings of libcuda.so.1 (the driver API; names are the ABI symbols, e.g. cuMemAlloc_v2). */
export function driverApi(lib: LibraryHandle) {
  return {
    cuGetErrorName: lib.func('int cuGetErrorName(int error, void *pStr)') as (error: number, pStr: Out64) => Status,
    cuInit: lib.func('int cuInit(unsigned int flags)') as (flags: number) => Status,
    cuDriverGetVersion: lib.func('int cuDriverGetVersion(int *version)') as (version: OutI32) => Status,
    cuDeviceGetCount: lib.func('int cuDeviceGetCount(int *count)') as (count: OutI32) => Status,
    cuDeviceGet: lib.func('int cuDeviceGet(int *device, int ordinal)') as (device: OutI32, ordinal: number) => Status,
    cuDeviceGetName: lib.func('int cuDeviceGetName(void *name, int len, int dev)') as (name: Uint8Array, len: number, dev: number) => Status,
    cuDeviceGetAttribute: lib.func('int cuDeviceGetAttribute(int *pi, int attrib, int dev)') as (pi: OutI32, attrib: number, dev: number) => Status,
    cuDeviceTotalMem_v2: lib.func('int cuDeviceTotalMem_v2(void *bytes, int dev)') as (bytes: Out64, dev: number) => Status,
    cuDevicePrimaryCtxRetain: lib.func('int cuDevicePrimaryCtxRetain(void *pctx, int dev)') as (pctx: Out64, dev: number) => Status,
    cuDevicePrimaryCtxRelease_v2: lib.func('int cuDevicePrimaryCtxRelease_v2(int dev)') as (dev: number) => Status,
    cuCtxSetCurrent: lib.func('int cuCtxSetCurrent(void *ctx)') as (ctx: Ptr) => Status,
    cuCtxSynchronize: lib.func('int cuCtxSynchronize()') as () => Status,
    cuMemGetInfo_v2: lib.func('int cuMemGetInfo_v2(void *free, void *total)') as (free: Out64, total: Out64) => Status,
    cuMemAlloc_v2: lib.func('int cuMemAlloc_v2(void *dptr, size_t bytes)') as (dptr: Out64, bytes: number) => Status,
    cuMemFree_v2: lib.func('int cuMemFree_v2(uint64_t dptr)') as (dptr: Ptr) => Status,
    cuMemcpyHtoDAsync_v2: lib.func('int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t bytes, void *stream)') as
      (dst: Ptr, src: HostIn, bytes: number, stream: Ptr) => Status,
    cuMemcpyDtoHAsync_v2: lib.func('int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t bytes, void *stream)') as
      (dst: ArrayBufferView, src: Ptr, bytes: number, stream: Ptr) => Status,
    cuMemcpyDtoDAsync_v2: lib.func('int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *stream)') as
      (dst: Ptr, src: Ptr, bytes: number, stream: Ptr) => Status,
    cuMemsetD32Async: lib.func('int cuMemsetD32Async(uint64_t dst, unsigned int value, size_t n, void *stream)') as
      (dst: Ptr, value: number, n: number, stream: Ptr) => Status,
    cuMemsetD16Async: lib.func('int cuMemsetD16Async(uint64_t dst, unsigned short value, size_t n, void *stream)') as
      (dst: Ptr, value: number, n: number, stream: Ptr) => Status,
    cuStreamCreate: lib.func('int cuStreamCreate(void *stream, unsigned int flags)') as (stream: Out64, flags: number) => Status,
    cuStreamCreateWithPriority: lib.func('int cuStreamCreateWithPriority(void *stream, unsigned int flags, int priority)') as
      (stream: Out64, flags: number, priority: number) => Status,
    cuCtxGetStreamPriorityRange: lib.func('int cuCtxGetStreamPriorityRange(int *least, int *greatest)') as
      (least: OutI32, greatest: OutI32) => Status,
    cuStreamWaitEvent: lib.func('int cuStreamWaitEvent(void *stream, void *event, unsigned int flags)') as
      (stream: Ptr, event: Ptr, flags: number) => Status,
    cuStreamDestroy_v2: lib.func('int cuStreamDestroy_v2(void *stream)') as (stream: Ptr) => Status,
    cuStreamSynchronize: lib.func('int cuStreamSynchronize(void *stream)') as (stream: Ptr) => Status,
    cuEventCreate: lib.func('int cuEventCreate(void *event, unsigned int flags)') as (event: Out64, flags: number) => Status,
    cuEventDestroy_v2: lib.func('int cuEventDestroy_v2(void *event)') as (event: Ptr) => Status,
    cuEventRecord: lib.func('int cuEventRecord(void *event, void *stream)') as (event: Ptr, stream: Ptr) => Status,
    cuEventSynchronize: lib.func('int cuEventSynchronize(void *event)') as (event: Ptr) => Status,
    // The v1 symbol: every driver since CUDA 4 exports it (the _v2 of CUDA 12.8 only adds checks).
    cuEventElapsedTime: lib.func('int cuEventElapsedTime(float *ms, void *start, void *end)') as
      (ms: Float32Array, start: Ptr, end: Ptr) => Status,
    cuModuleLoadData: lib.func('int cuModuleLoadData(void *module, const void *image)') as (module: Out64, image: Uint8Array) => Status,
    cuModuleUnload: lib.func('int cuModuleUnload(void *module)') as (module: Ptr) => Status,
    cuModuleGetFunction: lib.func('int cuModuleGetFunction(void *fn, void *module, const char *name)') as
      (fn: Out64, module: Ptr, name: string) => Status,
    cuFuncGetAttribute: lib.func('int cuFuncGetAttribute(int *pi, int attrib, void *fn)') as (pi: OutI32, attrib: number, fn: Ptr) => Status,
    cuFuncSetAttribute: lib.func('int cuFuncSetAttribute(void *fn, int attrib, int value)') as (fn: Ptr, attrib: number, value: number) => Status,
    // kernelParams: the address of an array of pointers, one per kernel argument (runtime.ts's Launcher).
    cuLaunchKernel: lib.func(
      'int cuLaunchKernel(void *fn, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, ' +
        'unsigned int sharedMemBytes, void *stream, void *kernelParams, void *extra)',
    ) as (fn: Ptr, gx: number, gy: number, gz: number, bx: number, by: number, bz: number, shared: number, stream: Ptr, params: Ptr, extra: null) => Status,
  };
}

/** Bindings of libnvrtc.so (the run-time compiler). */
export function nvrtcApi(lib: LibraryHandle) {
  return {
    nvrtcGetErrorString: lib.func('const char *nvrtcGetErrorString(int result)') as (result: number) => string,
    nvrtcVersion: lib.func('int nvrtcVersion(int *major, int *minor)') as (major: OutI32, minor: OutI32) => Status,
    nvrtcCreateProgram: lib.func(
      'int nvrtcCreateProgram(void *prog, const char *src, const char *name, int numHeaders, const char **headers, const char **includeNames)',
    ) as (prog: Out64, src: string, name: string, numHeaders: number, headers: null, includeNames: null) => Status,
    nvrtcDestroyProgram: lib.func('int nvrtcDestroyProgram(void *prog)') as (prog: Out64) => Status,
    nvrtcCompileProgram: lib.func('int nvrtcCompileProgram(void *prog, int numOptions, const char **options)') as
      (prog: Ptr, numOptions: number, options: string[]) => Status,
    nvrtcGetProgramLogSize: lib.func('int nvrtcGetProgramLogSize(void *prog, void *size)') as (prog: Ptr, size: Out64) => Status,
    nvrtcGetProgramLog: lib.func('int nvrtcGetProgramLog(void *prog, void *log)') as (prog: Ptr, log: Uint8Array) => Status,
    nvrtcGetCUBINSize: lib.func('int nvrtcGetCUBINSize(void *prog, void *size)') as (prog: Ptr, size: Out64) => Status,
    nvrtcGetCUBIN: lib.func('int nvrtcGetCUBIN(void *prog, void *cubin)') as (prog: Ptr, cubin: Uint8Array) => Status,
  };
}

/** Bindings of libcublas.so (names are the ABI symbols of the v2 API). */
export function cublasApi(lib: LibraryHandle) {
  return {
    cublasGetStatusName: lib.func('const char *cublasGetStatusName(int status)') as (status: number) => string,
    cublasCreate_v2: lib.func('int cublasCreate_v2(void *handle)') as (handle: Out64) => Status,
    cublasDestroy_v2: lib.func('int cublasDestroy_v2(void *handle)') as (handle: Ptr) => Status,
    cublasGetVersion_v2: lib.func('int cublasGetVersion_v2(void *handle, int *version)') as (handle: Ptr, version: OutI32) => Status,
    cublasSetStream_v2: lib.func('int cublasSetStream_v2(void *handle, void *stream)') as (handle: Ptr, stream: Ptr) => Status,
    cublasSetMathMode: lib.func('int cublasSetMathMode(void *handle, int mode)') as (handle: Ptr, mode: number) => Status,
    // Column-major C (m, n) = alpha op(A) op(B) + beta C; alpha and beta are host pointers (the
    // default CUBLAS_POINTER_MODE_HOST), A, B, C device addresses.
    cublasSgemm_v2: lib.func(
      'int cublasSgemm_v2(void *handle, int transa, int transb, int m, int n, int k, const float *alpha, uint64_t A, int lda, ' +
        'uint64_t B, int ldb, const float *beta, uint64_t C, int ldc)',
    ) as (handle: Ptr, transa: number, transb: number, m: number, n: number, k: number, alpha: Float32Array, A: Ptr, lda: number,
      B: Ptr, ldb: number, beta: Float32Array, C: Ptr, ldc: number) => Status,
    // The same product over typed operands (bf16 A and B, bf16 or fp32 C) with a compute type; alpha
    // and beta are floats for CUBLAS_COMPUTE_32F.
    cublasGemmEx: lib.func(
      'int cublasGemmEx(void *handle, int transa, int transb, int m, int n, int k, const float *alpha, uint64_t A, int Atype, int lda, ' +
        'uint64_t B, int Btype, int ldb, const float *beta, uint64_t C, int Ctype, int ldc, int computeType, int algo)',
    ) as (handle: Ptr, transa: number, transb: number, m: number, n: number, k: number, alpha: Float32Array, A: Ptr, Atype: number,
      lda: number, B: Ptr, Btype: number, ldb: number, beta: Float32Array, C: Ptr, Ctype: number, ldc: number, computeType: number,
      algo: number) => Status,
  };
}

export type DriverApi = ReturnType<typeof driverApi>;
export type NvrtcApi = ReturnType<typeof nvrtcApi>;
export type CublasApi = ReturnType<typeof cublasApi>;

// Enum values used by runtime.ts (cuda.h, nvrtc.h, cublas_api.h).
export const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
export const CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0;
export const CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3;
export const CU_FUNC_ATTRIBUTE_NUM_REGS = 4;
export const CU_STREAM_NON_BLOCKING = 0x1;
export const CU_EVENT_DEFAULT = 0x0;
export const CU_EVENT_DISABLE_TIMING = 0x2;
export const CUDA_SUCCESS = 0;
export const CUDA_ERROR_OUT_OF_MEMORY = 2;
export const NVRTC_SUCCESS = 0;
export const NVRTC_ERROR_COMPILATION = 6;
export const CUBLAS_STATUS_SUCCESS = 0;
export const CUBLAS_OP_N = 0;
export const CUBLAS_OP_T = 1;
export const CUBLAS_DEFAULT_MATH = 0; // true fp32: no TF32 tensor-core rounding of the inputs
export const CUDA_R_32F = 0; // cudaDataType
export const CUDA_R_16BF = 14;
export const CUBLAS_COMPUTE_32F = 68;
export const CUBLAS_GEMM_DEFAULT = -1;
