// The CUDA runtime of the backend, over the driver API through koffi (ffi.ts): the primary context
// of one device (0 unless selectCudaDevice chose another), one stream that all work is queued on
// (and a side stream that concurrently() joins back into it),
// a caching device-memory arena with counters, events for timing, NVRTC compilation of kernel
// source with a memory + disk cache, the kernel launch helper, and the cuBLAS handle. Not the ops
// themselves (backend.ts) nor kernel source (kernels/*.ts); not multi-GPU (one device per process;
// data-parallel training runs a process per GPU). Everything is ordered on `stream`, which is what
// makes the arena's immediate reuse of freed blocks safe; the one exception is `concurrently`, whose
// side kernels run beside the main stream's on memory that no one frees until they are joined.
// Every driver, NVRTC and cuBLAS call goes through `check`, which names the call and decodes the
// status: "cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY".
// SPEC.md: section 7 (`--device cuda`, `sparsek doctor`).

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import type { LibraryHandle } from 'koffi';
import { ArgumentError, DeviceError, SparsekError } from '../core/errors.js';
import {
  cublasApi, driverApi, nvrtcApi,
  CUBLAS_DEFAULT_MATH, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
  CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, CU_EVENT_DEFAULT, CU_EVENT_DISABLE_TIMING, CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES,
  CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, CU_FUNC_ATTRIBUTE_NUM_REGS, CU_STREAM_NON_BLOCKING, CUDA_ERROR_OUT_OF_MEMORY,
  NVRTC_ERROR_COMPILATION,
} from './ffi.js';
import type { CublasApi, DriverApi, NvrtcApi } from './ffi.js';
import { findCudaLibraries, missingReason } from './find.js';
import type { CudaLibraryReport } from './find.js';

/** A driver, NVRTC or cuBLAS call that returned an error status. */
export class CudaError extends SparsekError {
  constructor(readonly call: string, readonly status: number, readonly statusName: string, hint = '') {
    super('E_CUDA', `${call} failed: ${statusName}${hint}`);
  }
}

/** Kernel source that NVRTC rejected; the message holds the compiler log and the numbered source. */
export class KernelCompileError extends SparsekError {
  constructor(readonly kernel: string, readonly log: string, source: string, options: readonly string[]) {
    super('E_KERNEL_COMPILE', `NVRTC could not compile ${kernel} (${options.join(' ')}):\n${log.trim()}\n${numbered(source)}`);
  }
}

/** A kernel parameter's C type: a device address, int, float or double. */
export type ParamKind = 'ptr' | 'i32' | 'f32' | 'f64';

/** What a kernel generator (kernels/*.ts) returns: CUDA C with one extern "C" entry point. */
export interface KernelSource {
  /** The entry point, `extern "C" __global__ void <name>(...)`. */
  name: string;
  source: string;
  /** The entry point's parameters in order; launch() encodes its arguments by these. */
  params: readonly ParamKind[];
  /**
   * Compile for the architecture-specific target (sm_90a rather than sm_90), which Hopper's
   * warpgroup instructions (wgmma, setmaxnreg) need; such a CUBIN runs only on that exact
   * architecture. Default false.
   */
  archSpecific?: boolean;
}

/** A compiled, loaded kernel. */
export interface Kernel {
  name: string;
  fn: bigint; // CUfunction
  params: readonly ParamKind[];
  registers: number; // per thread
  localBytes: number; // per thread; > 0 means spills or a local array
  maxThreads: number; // per block, given the register use
}

/** Device memory counters of the arena: what is in use by buffers, and what is held from the driver. */
export interface ArenaStats {
  inUseBytes: number;
  inUseCount: number;
  peakBytes: number;
  /** Bytes obtained from cuMemAlloc and not yet returned (in use + cached for reuse). */
  reservedBytes: number;
  /** Number of cuMemAlloc calls so far: constant across steps once the cache is warm. */
  driverAllocs: number;
}

/** A block of device memory handed out by the arena. */
export interface DeviceBlock {
  readonly ptr: bigint;
  readonly bytes: number;
}

// Blocks are rounded up to this many bytes: 256-byte alignment (what cuMemAlloc gives and float4
// loads want), and fewer distinct sizes to cache.
const BLOCK_ALIGN = 512;
// Parameter area of the launch helper: up to MAX_PARAMS arguments of 8 bytes each.
const MAX_PARAMS = 32;

/**
 * Caching allocator: a freed block goes to a free list keyed by its rounded size and is handed out
 * again to the next request of that size. The model allocates the same shapes every step, so after
 * the first step there are no driver calls (cuMemAlloc and cuMemFree both synchronise the device).
 * Reuse is immediate: safe because all work is queued on one stream, so a kernel that reads a block
 * after it is reused is ordered after every kernel that used it before (concurrently()'s side kernels
 * touch only memory that nobody gives back before they are joined).
 */
export class Arena {
  private readonly cache = new Map<number, bigint[]>();
  private readonly live = new Map<bigint, number>(); // ptr -> bytes of blocks in use
  private stats: ArenaStats = { inUseBytes: 0, inUseCount: 0, peakBytes: 0, reservedBytes: 0, driverAllocs: 0 };

  constructor(
    private readonly driverAlloc: (bytes: number) => bigint | null, // null: out of memory
    private readonly driverFree: (ptr: bigint) => void,
  ) {}

  take(bytes: number): DeviceBlock {
    const size = Math.max(BLOCK_ALIGN, Math.ceil(bytes / BLOCK_ALIGN) * BLOCK_ALIGN);
    let ptr = this.cache.get(size)?.pop();
    if (ptr === undefined) {
      let got = this.driverAlloc(size);
      if (got === null) {
        // Out of memory: return every cached block to the driver and try once more.
        this.trim();
        got = this.driverAlloc(size);
        if (got === null) {
          throw new CudaError('cuMemAlloc_v2', CUDA_ERROR_OUT_OF_MEMORY, 'CUDA_ERROR_OUT_OF_MEMORY',
            ` (asked for ${size} bytes with ${this.stats.inUseBytes} in use in ${this.stats.inUseCount} buffers)`);
        }
      }
      ptr = got;
      this.stats.reservedBytes += size;
      this.stats.driverAllocs++;
    }
    this.live.set(ptr, size);
    this.stats.inUseBytes += size;
    this.stats.inUseCount++;
    this.stats.peakBytes = Math.max(this.stats.peakBytes, this.stats.inUseBytes);
    return { ptr, bytes: size };
  }

  give(block: DeviceBlock): void {
    const size = this.live.get(block.ptr);
    if (size === undefined) throw new DeviceError('cuda', `device block 0x${block.ptr.toString(16)} freed twice or never allocated`);
    this.live.delete(block.ptr);
    this.stats.inUseBytes -= size;
    this.stats.inUseCount--;
    let list = this.cache.get(size);
    if (list === undefined) this.cache.set(size, (list = []));
    list.push(block.ptr);
  }

  /** Returns every cached (free) block to the driver. */
  trim(): void {
    for (const [size, list] of this.cache) {
      for (const ptr of list) {
        this.driverFree(ptr);
        this.stats.reservedBytes -= size;
      }
    }
    this.cache.clear();
  }

  counters(): ArenaStats {
    return { ...this.stats };
  }

  /** Starts a new peak measurement from the current use. */
  resetPeak(): void {
    this.stats.peakBytes = this.stats.inUseBytes;
  }
}

/** Where compiled kernels are kept: $SPARSEK_CACHE/kernels, else ~/.cache/sparsek/kernels. */
export function kernelCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.SPARSEK_CACHE || join(homedir(), '.cache', 'sparsek'), 'kernels');
}

type Api = { cuda: DriverApi; nvrtc: NvrtcApi; cublas: CublasApi };
type Fn = (...args: unknown[]) => number;

/** The process's CUDA state; get it with cudaRuntime(). */
export class CudaRuntime {
  readonly name: string;
  readonly computeCapability: [number, number];
  /** NVRTC's -arch, e.g. sm_90. */
  readonly arch: string;
  readonly multiprocessors: number;
  readonly totalMemory: number;
  readonly driverVersion: number; // e.g. 13000 for CUDA 13.0
  readonly nvrtcVersion: [number, number];
  readonly cublasVersion: number;
  readonly stream: bigint;
  readonly cublas: bigint;
  readonly arena: Arena;
  readonly cacheDir: string;
  /** Kernels compiled by NVRTC in this process (disk-cache misses), for tests of the cache. */
  compiles = 0;

  private readonly api: Api;
  private readonly context: bigint;
  private readonly kernels = new Map<string, Kernel>();
  private readonly modules: bigint[] = [];
  private readonly priorities: [least: number, greatest: number];
  private current: bigint; // the stream launches go to: `stream`, or the side stream inside concurrently()
  private side: { stream: bigint; fork: bigint; join: bigint } | null = null;
  private readonly paramBase: bigint; // MAX_PARAMS pointers, then MAX_PARAMS 8-byte value slots
  private readonly paramValues: DataView;
  private cacheWarned = false;
  // Scratch for out-parameters (the callee writes them before returning; nothing keeps them).
  private readonly out64 = new BigUint64Array(1);
  private readonly outI32 = new Int32Array(1);

  /** The device ordinal this runtime runs on (selectCudaDevice; 0 unless data-parallel training chose another). */
  readonly ordinal: number;
  private readonly dev: number; // the CUdevice of `ordinal`

  constructor(api: Api, readonly libraries: CudaLibraryReport, ordinal = 0) {
    this.api = api;
    this.ordinal = ordinal;
    this.cu('cuInit', 0);
    this.cu('cuDriverGetVersion', this.outI32);
    this.driverVersion = this.outI32[0];
    this.cu('cuDeviceGetCount', this.outI32);
    if (this.outI32[0] < 1) throw new DeviceError('cuda', 'the driver sees no CUDA device');
    if (ordinal >= this.outI32[0]) throw new DeviceError('cuda', `device ${ordinal} was asked for; the driver sees ${this.outI32[0]} (0 to ${this.outI32[0] - 1})`);
    this.cu('cuDeviceGet', this.outI32, ordinal);
    const dev = this.outI32[0];
    this.dev = dev;
    const nameBuf = new Uint8Array(256);
    this.cu('cuDeviceGetName', nameBuf, nameBuf.length, dev);
    this.name = Buffer.from(nameBuf.subarray(0, nameBuf.indexOf(0))).toString('utf8');
    const attr = (a: number): number => {
      this.cu('cuDeviceGetAttribute', this.outI32, a, dev);
      return this.outI32[0];
    };
    this.computeCapability = [attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR), attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)];
    this.arch = `sm_${this.computeCapability[0]}${this.computeCapability[1]}`;
    this.multiprocessors = attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
    this.cu('cuDeviceTotalMem_v2', this.out64, dev);
    this.totalMemory = Number(this.out64[0]);
    // The primary context is the one the CUDA runtime inside cuBLAS uses too: one context, shared.
    this.cu('cuDevicePrimaryCtxRetain', this.out64, dev);
    this.context = this.out64[0];
    this.cu('cuCtxSetCurrent', this.context);
    // The main stream at the highest priority, the side stream of `concurrently` at the lowest: where
    // both have blocks waiting, the main stream's (the critical path) take the free SMs first.
    const least = new Int32Array(1), greatest = new Int32Array(1);
    this.cu('cuCtxGetStreamPriorityRange', least, greatest);
    this.priorities = [least[0], greatest[0]];
    this.cu('cuStreamCreateWithPriority', this.out64, CU_STREAM_NON_BLOCKING, greatest[0]);
    this.stream = this.out64[0];
    this.current = this.stream;

    const major = new Int32Array(1), minor = new Int32Array(1);
    this.rtc('nvrtcVersion', major, minor);
    this.nvrtcVersion = [major[0], minor[0]];

    this.blas('cublasCreate_v2', this.out64);
    this.cublas = this.out64[0];
    this.blas('cublasSetStream_v2', this.cublas, this.stream);
    this.blas('cublasSetMathMode', this.cublas, CUBLAS_DEFAULT_MATH);
    this.blas('cublasGetVersion_v2', this.cublas, this.outI32);
    this.cublasVersion = this.outI32[0];

    this.arena = new Arena(
      (bytes) => {
        const status = this.api.cuda.cuMemAlloc_v2(this.out64, bytes);
        if (status === CUDA_ERROR_OUT_OF_MEMORY) return null;
        this.check('cuda', 'cuMemAlloc_v2', status);
        return this.out64[0];
      },
      (ptr) => this.cu('cuMemFree_v2', ptr),
    );

    // One fixed native block for kernel arguments (koffi.alloc memory does not move): the pointer
    // table is written once, each launch only rewrites the value slots. cuLaunchKernel copies the
    // values before returning, so the next launch may overwrite them at once.
    this.paramBase = koffi.alloc('uint8_t', MAX_PARAMS * 16) as bigint;
    const view = new DataView(koffi.view(this.paramBase, MAX_PARAMS * 16));
    for (let i = 0; i < MAX_PARAMS; i++) view.setBigUint64(i * 8, this.paramBase + BigInt(MAX_PARAMS * 8 + i * 8), true);
    this.paramValues = new DataView(view.buffer, MAX_PARAMS * 8, MAX_PARAMS * 8);
    this.cacheDir = kernelCacheDir();
  }

  // ---- the checker --------------------------------------------------------------------------

  /** Throws CudaError naming `call` unless `status` is success; decodes the status through the library. */
  check(library: keyof Api, call: string, status: number): void {
    if (status === 0) return;
    let name: string;
    let hint = '';
    if (library === 'cuda') {
      const p = new BigUint64Array(1);
      name = this.api.cuda.cuGetErrorName(status, p) === 0 && p[0] !== 0n ? koffi.decode(p[0], 'char', -1) as string : `CUresult ${status}`;
      // 700-799 are sticky launch failures, reported by whichever call comes next.
      if (status >= 700 && status < 800 && status !== 701) {
        hint = ' (raised by an earlier kernel; CUDA_LAUNCH_BLOCKING=1 makes the failing launch report it)';
      }
    } else if (library === 'nvrtc') {
      name = this.api.nvrtc.nvrtcGetErrorString(status) ?? `nvrtcResult ${status}`;
    } else {
      name = this.api.cublas.cublasGetStatusName(status) ?? `cublasStatus_t ${status}`;
    }
    throw new CudaError(call, status, name, hint);
  }

  cu<K extends keyof DriverApi>(call: K, ...args: Parameters<DriverApi[K]>): void {
    this.check('cuda', call, (this.api.cuda[call] as Fn)(...args));
  }

  rtc<K extends keyof NvrtcApi>(call: K, ...args: Parameters<NvrtcApi[K]>): void {
    this.check('nvrtc', call, (this.api.nvrtc[call] as Fn)(...args));
  }

  blas<K extends keyof CublasApi>(call: K, ...args: Parameters<CublasApi[K]>): void {
    this.check('cublas', call, (this.api.cublas[call] as Fn)(...args));
  }

  // ---- streams and events -------------------------------------------------------------------

  /** Waits until all queued work on the stream is done. */
  synchronize(): void {
    this.cu('cuStreamSynchronize', this.stream);
  }

  createEvent(): bigint {
    const p = new BigUint64Array(1);
    this.cu('cuEventCreate', p, CU_EVENT_DEFAULT);
    return p[0];
  }

  destroyEvent(event: bigint): void {
    this.cu('cuEventDestroy_v2', event);
  }

  record(event: bigint): void {
    this.cu('cuEventRecord', event, this.current);
  }

  /**
   * Queues side()'s kernel launches on a second, low-priority stream and main()'s on the main one, so
   * that they may run at once: side's start after all work queued before, and the main stream waits
   * for them at the end, so everything queued later is ordered after both. For filling the GPU while
   * main's kernels are latency-bound. side() may only launch kernels, on memory that stays owned
   * until the end: main() may take from the arena, and give back only what side's kernels never touch.
   */
  concurrently(side: () => void, main: () => void): void {
    if (this.side === null) {
      this.cu('cuStreamCreateWithPriority', this.out64, CU_STREAM_NON_BLOCKING, this.priorities[0]);
      const stream = this.out64[0];
      const event = (): bigint => {
        this.cu('cuEventCreate', this.out64, CU_EVENT_DISABLE_TIMING);
        return this.out64[0];
      };
      this.side = { stream, fork: event(), join: event() };
    }
    const { stream, fork, join } = this.side;
    this.cu('cuEventRecord', fork, this.stream);
    this.cu('cuStreamWaitEvent', stream, fork, 0);
    this.current = stream;
    try {
      side();
    } finally {
      this.current = this.stream;
      this.cu('cuEventRecord', join, stream);
    }
    try {
      main();
    } finally {
      this.cu('cuStreamWaitEvent', this.stream, join, 0);
    }
  }

  /** Milliseconds between two recorded events (waits for the second). */
  elapsedMs(start: bigint, end: bigint): number {
    this.cu('cuEventSynchronize', end);
    const ms = new Float32Array(1);
    this.cu('cuEventElapsedTime', ms, start, end);
    return ms[0];
  }

  /** The device's free and total memory in bytes (all processes). */
  memoryInfo(): { free: number; total: number } {
    const free = new BigUint64Array(1), total = new BigUint64Array(1);
    this.cu('cuMemGetInfo_v2', free, total);
    return { free: Number(free[0]), total: Number(total[0]) };
  }

  // ---- kernels ------------------------------------------------------------------------------

  /**
   * The loaded kernel for `src`, compiled at most once per process and once per machine: the
   * CUBIN is cached in memory and on disk under a hash of source, options, architecture and NVRTC
   * version. Throws KernelCompileError with the log and numbered source if NVRTC rejects it.
   */
  kernel(src: KernelSource): Kernel {
    const options = [`--gpu-architecture=${this.arch}${src.archSpecific === true ? 'a' : ''}`, '--std=c++17'];
    const key = createHash('sha256')
      .update(src.source).update('\0').update(options.join(' ')).update('\0')
      .update(`${this.arch} nvrtc ${this.nvrtcVersion.join('.')}`)
      .digest('hex').slice(0, 32);
    const cached = this.kernels.get(key);
    if (cached !== undefined) return cached;
    const file = join(this.cacheDir, `${src.name}-${key}.cubin`);
    let cubin: Uint8Array | null = null;
    try {
      cubin = readFileSync(file);
    } catch {
      // not cached yet
    }
    if (cubin === null) {
      cubin = this.compile(src, options);
      this.compiles++;
      try {
        mkdirSync(this.cacheDir, { recursive: true });
        const tmp = `${file}.tmp-${process.pid}`;
        writeFileSync(tmp, cubin);
        renameSync(tmp, file); // atomic: a concurrent reader sees no half-written CUBIN
      } catch (err) {
        if (!this.cacheWarned) {
          this.cacheWarned = true;
          console.warn(`sparsek: cannot write the kernel cache ${this.cacheDir} (${(err as Error).message}); kernels will be recompiled in each process`);
        }
      }
    }
    this.cu('cuModuleLoadData', this.out64, cubin);
    const module = this.out64[0];
    this.modules.push(module);
    this.cu('cuModuleGetFunction', this.out64, module, src.name);
    const fn = this.out64[0];
    const attr = (a: number): number => {
      this.cu('cuFuncGetAttribute', this.outI32, a, fn);
      return this.outI32[0];
    };
    const k: Kernel = {
      name: src.name, fn, params: src.params,
      registers: attr(CU_FUNC_ATTRIBUTE_NUM_REGS),
      localBytes: attr(CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES),
      maxThreads: attr(CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
    };
    this.kernels.set(key, k);
    return k;
  }

  private compile(src: KernelSource, options: string[]): Uint8Array {
    const prog = new BigUint64Array(1);
    this.rtc('nvrtcCreateProgram', prog, src.source, `${src.name}.cu`, 0, null, null);
    try {
      const status = this.api.nvrtc.nvrtcCompileProgram(prog[0], options.length, options);
      if (status === NVRTC_ERROR_COMPILATION) throw new KernelCompileError(src.name, this.programLog(prog[0]), src.source, options);
      this.check('nvrtc', 'nvrtcCompileProgram', status);
      const size = new BigUint64Array(1);
      this.rtc('nvrtcGetCUBINSize', prog[0], size);
      const cubin = new Uint8Array(Number(size[0]));
      this.rtc('nvrtcGetCUBIN', prog[0], cubin);
      return cubin;
    } finally {
      this.rtc('nvrtcDestroyProgram', prog);
    }
  }

  private programLog(prog: bigint): string {
    const size = new BigUint64Array(1);
    this.rtc('nvrtcGetProgramLogSize', prog, size);
    const log = new Uint8Array(Number(size[0]));
    this.rtc('nvrtcGetProgramLog', prog, log);
    const end = log.indexOf(0);
    return Buffer.from(log.subarray(0, end < 0 ? log.length : end)).toString('utf8');
  }

  /**
   * Queues kernel k on the stream with `grid` blocks of `block` threads. args follow k.params:
   * a bigint device address for 'ptr', a number for 'i32', 'f32' and 'f64'.
   */
  launch(k: Kernel, grid: number | [number, number, number], block: number, sharedBytes: number, args: readonly (bigint | number)[]): void {
    if (args.length !== k.params.length) {
      throw new DeviceError('cuda', `kernel ${k.name} takes ${k.params.length} arguments, got ${args.length}`);
    }
    const v = this.paramValues;
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      switch (k.params[i]) {
        case 'ptr':
          if (typeof a !== 'bigint') throw new DeviceError('cuda', `kernel ${k.name} argument ${i}: expected a device address`);
          v.setBigUint64(i * 8, a, true);
          break;
        case 'i32':
          if (typeof a !== 'number' || !Number.isInteger(a) || a < -2147483648 || a > 2147483647) {
            throw new DeviceError('cuda', `kernel ${k.name} argument ${i}: expected a 32-bit integer, got ${String(a)}`);
          }
          v.setInt32(i * 8, a, true);
          break;
        case 'f32':
          v.setFloat32(i * 8, Number(a), true);
          break;
        case 'f64':
          v.setFloat64(i * 8, Number(a), true);
          break;
      }
    }
    const [gx, gy, gz] = typeof grid === 'number' ? [grid, 1, 1] : grid;
    if (gx < 1 || gy < 1 || gz < 1) return; // nothing to do (an empty shape)
    const timing = this.profiling?.(k.name);
    this.cu('cuLaunchKernel', k.fn, gx, gy, gz, block, 1, 1, sharedBytes, this.current, this.paramBase, null);
    timing?.();
  }

  private profiling: ((name: string) => () => void) | null = null;

  /**
   * Runs fn with a CUDA event pair around every kernel launch and returns the GPU time per kernel
   * name (ms, summed over its launches; the events serialise nothing, the stream is in order).
   * For benchmarks: cuBLAS calls are not counted.
   */
  profile(fn: () => void): { name: string; calls: number; ms: number }[] {
    const pairs: { name: string; start: bigint; end: bigint }[] = [];
    this.profiling = (name) => {
      const p = { name, start: this.createEvent(), end: this.createEvent() };
      pairs.push(p);
      this.record(p.start);
      return () => this.record(p.end);
    };
    try {
      fn();
    } finally {
      this.profiling = null;
    }
    const byName = new Map<string, { name: string; calls: number; ms: number }>();
    for (const p of pairs) {
      const e = byName.get(p.name) ?? { name: p.name, calls: 0, ms: 0 };
      e.calls++;
      e.ms += this.elapsedMs(p.start, p.end);
      byName.set(p.name, e);
      this.destroyEvent(p.start);
      this.destroyEvent(p.end);
    }
    return [...byName.values()].sort((a, b) => b.ms - a.ms);
  }

  /** Releases the cuBLAS handle, modules, stream, arena and the primary context (end of process). */
  close(): void {
    this.synchronize();
    this.blas('cublasDestroy_v2', this.cublas);
    for (const m of this.modules) this.cu('cuModuleUnload', m);
    this.modules.length = 0;
    this.kernels.clear();
    this.arena.trim();
    this.cu('cuStreamDestroy_v2', this.stream);
    if (this.side !== null) {
      this.cu('cuEventDestroy_v2', this.side.fork);
      this.cu('cuEventDestroy_v2', this.side.join);
      this.cu('cuStreamDestroy_v2', this.side.stream);
      this.side = null;
    }
    this.cu('cuDevicePrimaryCtxRelease_v2', this.dev);
    koffi.free(this.paramBase);
    if (runtime === this) runtime = null; // the next cudaRuntime() starts afresh
  }
}

let runtime: CudaRuntime | null = null;
let failure: DeviceError | null = null;
let selectedOrdinal = 0;

/**
 * Chooses the device the process's runtime will use (default 0); call before the first
 * cudaRuntime(). Data-parallel training gives each worker process its own (src/train/distributed.ts).
 */
export function selectCudaDevice(ordinal: number): void {
  if (!Number.isInteger(ordinal) || ordinal < 0) throw new ArgumentError('ordinal', 'a CUDA device index >= 0', ordinal);
  if (runtime !== null && runtime.ordinal !== ordinal) {
    throw new DeviceError('cuda', `this process already runs on device ${runtime.ordinal}; select device ${ordinal} before the first use of CUDA`);
  }
  selectedOrdinal = ordinal;
}

/**
 * The process's CUDA runtime on device 0 (or the one selectCudaDevice chose), created on first
 * use. Throws DeviceError saying what is missing (a library, the driver, a device) when CUDA
 * cannot be used here; the same error again on later calls.
 * @example
 *   const rt = cudaRuntime();
 *   console.log(rt.name, rt.arch);
 */
export function cudaRuntime(): CudaRuntime {
  if (runtime !== null) return runtime;
  if (failure !== null) throw failure;
  const libs = findCudaLibraries();
  const missing = missingReason(libs);
  try {
    if (missing !== null) throw new DeviceError('cuda', missing);
    const load = (path: string): LibraryHandle => koffi.load(path);
    const api: Api = {
      cuda: driverApi(load(libs.cuda.path!)),
      nvrtc: nvrtcApi(load(libs.nvrtc.path!)),
      cublas: cublasApi(load(libs.cublas.path!)),
    };
    runtime = new CudaRuntime(api, libs, selectedOrdinal);
    return runtime;
  } catch (err) {
    failure = err instanceof DeviceError ? err : new DeviceError('cuda', err instanceof Error ? err.message : String(err));
    throw failure;
  }
}

/** Whether CUDA can be used here and, if not, why (for `sparsek doctor` and for skipping tests). */
export function cudaAvailability(): { available: true; runtime: CudaRuntime } | { available: false; reason: string } {
  try {
    return { available: true, runtime: cudaRuntime() };
  } catch (err) {
    const msg = err instanceof DeviceError ? err.message.replace(/^device 'cuda' is not available: /, '') : String(err);
    return { available: false, reason: msg };
  }
}

/** Source with line numbers, as compile errors show it. */
function numbered(source: string): string {
  const lines = source.split('\n');
  const w = String(lines.length).length;
  return lines.map((l, i) => `${String(i + 1).padStart(w)} | ${l}`).join('\n');
}
