// NCCL through koffi: the bindings of the few libnccl functions data-parallel training calls, the
// checker that names each failed call, and a communicator over device buffers. NCCL is loaded only
// here and only on demand (it is not part of the CUDA toolkit; find.ts's findNcclLibrary locates it).
// Not a launcher: processes, ranks and the exchange of the unique id are src/train/distributed.ts.
// Not multi-node: nothing here is specific to one host, but nothing has been tried across hosts.
//
// ABI notes (nccl.h): ncclUniqueId is `struct { char internal[128]; }` and ncclCommInitRank takes
// it BY VALUE; koffi passes a struct by value when the parameter's type is a koffi.struct, and
// takes a Uint8Array for a uint8_t[128] member (uint8_t, not char: koffi would turn a char array
// into a string and cut it at the first zero byte). ncclComm_t and cudaStream_t are pointers and
// travel as bigint, like the driver's handles in ffi.ts; a CUstream is a cudaStream_t.
// SPEC.md: section 7 (`sparsek train`, `sparsek doctor`); docs/distributed.md.

import koffi from 'koffi';
import type { LibraryHandle } from 'koffi';
import { DeviceError, SparsekError } from '../core/errors.js';
import { findNcclLibrary } from './find.js';
import type { NcclLibraryHit } from './find.js';

type Status = number;
type Ptr = bigint;

/** Bytes of an ncclUniqueId (NCCL_UNIQUE_ID_BYTES). */
export const NCCL_UNIQUE_ID_BYTES = 128;
// Enum values of nccl.h.
export const ncclFloat32 = 7;
export const ncclSum = 0;
export const ncclAvg = 4; // since NCCL 2.10
const ncclInProgress = 7;

/** Bindings of libnccl.so.2; ncclGetLastError (NCCL 2.13+) is null when the library lacks it. */
export function ncclApi(lib: LibraryHandle) {
  const UniqueId = koffi.struct({ internal: koffi.array('uint8_t', NCCL_UNIQUE_ID_BYTES) });
  let lastError: ((comm: Ptr | null) => string | null) | null = null;
  try {
    lastError = lib.func('const char *ncclGetLastError(void *comm)') as (comm: Ptr | null) => string | null;
  } catch {
    // older NCCL: errors are decoded by ncclGetErrorString alone
  }
  return {
    ncclGetVersion: lib.func('int ncclGetVersion(int *version)') as (version: Int32Array) => Status,
    ncclGetErrorString: lib.func('const char *ncclGetErrorString(int result)') as (result: number) => string | null,
    ncclGetLastError: lastError,
    ncclGetUniqueId: lib.func('int ncclGetUniqueId(void *uniqueId)') as (uniqueId: Uint8Array) => Status,
    ncclCommInitRank: lib.func('ncclCommInitRank', 'int', ['void *', 'int', UniqueId, 'int']) as
      (comm: BigUint64Array, nranks: number, commId: { internal: Uint8Array }, rank: number) => Status,
    ncclCommDestroy: lib.func('int ncclCommDestroy(void *comm)') as (comm: Ptr) => Status,
    ncclCommAbort: lib.func('int ncclCommAbort(void *comm)') as (comm: Ptr) => Status,
    ncclCommGetAsyncError: lib.func('int ncclCommGetAsyncError(void *comm, int *asyncError)') as (comm: Ptr, asyncError: Int32Array) => Status,
    ncclCommCount: lib.func('int ncclCommCount(void *comm, int *count)') as (comm: Ptr, count: Int32Array) => Status,
    ncclCommUserRank: lib.func('int ncclCommUserRank(void *comm, int *rank)') as (comm: Ptr, rank: Int32Array) => Status,
    ncclGroupStart: lib.func('int ncclGroupStart()') as () => Status,
    ncclGroupEnd: lib.func('int ncclGroupEnd()') as () => Status,
    // sendbuff/recvbuff are device addresses (equal for in-place); stream is a CUstream.
    ncclAllReduce: lib.func('int ncclAllReduce(void *sendbuff, void *recvbuff, size_t count, int datatype, int op, void *comm, void *stream)') as
      (sendbuff: Ptr, recvbuff: Ptr, count: number, datatype: number, op: number, comm: Ptr, stream: Ptr) => Status,
    ncclReduceScatter: lib.func('int ncclReduceScatter(void *sendbuff, void *recvbuff, size_t recvcount, int datatype, int op, void *comm, void *stream)') as
      (sendbuff: Ptr, recvbuff: Ptr, recvcount: number, datatype: number, op: number, comm: Ptr, stream: Ptr) => Status,
    ncclAllGather: lib.func('int ncclAllGather(void *sendbuff, void *recvbuff, size_t sendcount, int datatype, void *comm, void *stream)') as
      (sendbuff: Ptr, recvbuff: Ptr, sendcount: number, datatype: number, comm: Ptr, stream: Ptr) => Status,
  };
}

export type NcclApi = ReturnType<typeof ncclApi>;

/** An NCCL call that returned an error; the message names the call, the status and NCCL's last error text. */
export class NcclError extends SparsekError {
  constructor(readonly call: string, readonly status: number, readonly statusName: string, readonly detail: string) {
    super('E_NCCL', `${call} failed: ${statusName}${detail ? ` (${detail})` : ''}`);
  }
}

/** A loaded libnccl. */
export interface NcclLibrary {
  api: NcclApi;
  path: string;
  /** ncclGetVersion's code, e.g. 22105 for 2.21.5. */
  versionCode: number;
  version: string;
}

const loaded = new Map<string, NcclLibrary>(); // by path: koffi keeps a library loaded for the process anyway

/** "2.21.5" from NCCL_VERSION_CODE (major*10000 + minor*100 + patch since 2.9; major*1000 + ... before). */
export function ncclVersionString(code: number): string {
  const [major, rest] = code >= 10000 ? [Math.floor(code / 10000), code % 10000] : [Math.floor(code / 1000), code % 1000];
  return `${major}.${Math.floor(rest / 100)}.${rest % 100}`;
}

/** Why NCCL cannot be loaded, for a library that was not found. */
export function ncclMissingReason(hit: NcclLibraryHit): string {
  return `multi-GPU training needs NCCL, and libnccl.so.2 was not found (searched ${hit.searched.join(', ')}); ` +
    'set NCCL_HOME or LD_LIBRARY_PATH to the folder that holds it (PyTorch\'s pip install brings it in site-packages/nvidia/nccl/lib)';
}

/**
 * The process's libnccl, loaded on first use (from `path` when given, else where findNcclLibrary
 * finds it). Throws DeviceError when it is missing or older than 2.10 (ncclAvg).
 */
export function loadNccl(opts: { path?: string; env?: NodeJS.ProcessEnv } = {}): NcclLibrary {
  let path = opts.path;
  if (path === undefined) {
    const hit = findNcclLibrary(opts.env);
    if (hit.path === null) throw new DeviceError('cuda', ncclMissingReason(hit));
    path = hit.path;
  }
  const cached = loaded.get(path);
  if (cached !== undefined) return cached;
  let api: NcclApi;
  try {
    api = ncclApi(koffi.load(path));
  } catch (err) {
    throw new DeviceError('cuda', `cannot load NCCL from ${path}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const v = new Int32Array(1);
  const status = api.ncclGetVersion(v);
  if (status !== 0) throw new NcclError('ncclGetVersion', status, api.ncclGetErrorString(status) ?? `ncclResult_t ${status}`, '');
  const version = ncclVersionString(v[0]);
  if (v[0] < 21000) throw new DeviceError('cuda', `NCCL ${version} at ${path} is too old: data-parallel training needs 2.10 or newer (ncclAvg)`);
  const lib = { api, path, versionCode: v[0], version };
  loaded.set(path, lib);
  return lib;
}

/** Lines for `sparsek doctor`: where NCCL is and its version, or why it is not usable. Never throws. */
export function ncclReport(env: NodeJS.ProcessEnv = process.env): string[] {
  const hit = findNcclLibrary(env);
  if (hit.path === null) return [`nccl     not found: libnccl.so.2 (train --gpus N needs it; set NCCL_HOME or LD_LIBRARY_PATH)`];
  try {
    const lib = loadNccl({ path: hit.path });
    return [`nccl     ${lib.version} (${lib.path}): available (train --gpus N)`];
  } catch (err) {
    return [`nccl     ${hit.path}: not usable: ${err instanceof Error ? err.message : String(err)}`];
  }
}

/** Throws NcclError naming `call` unless status is ncclSuccess; adds NCCL's own last error text when it has one. */
export function checkNccl(api: NcclApi, call: string, status: number, comm: Ptr | null = null): void {
  if (status === 0) return;
  const name = api.ncclGetErrorString(status) ?? `ncclResult_t ${status}`;
  let detail = '';
  try {
    detail = (api.ncclGetLastError?.(comm) ?? '').trim();
  } catch {
    // the text is a courtesy; the status already says what failed
  }
  throw new NcclError(call, status, name, detail);
}

/** A new ncclUniqueId: rank 0 makes it and every rank passes the same bytes to NcclComm.init. */
export function ncclUniqueId(lib: NcclLibrary = loadNccl()): Uint8Array {
  const id = new Uint8Array(NCCL_UNIQUE_ID_BYTES);
  checkNccl(lib.api, 'ncclGetUniqueId', lib.api.ncclGetUniqueId(id));
  return id;
}

/**
 * One rank's NCCL communicator, on the device current in this thread (the CUDA runtime's primary
 * context: create it first, with selectCudaDevice). Collectives are queued on the given stream, in
 * order with the kernels queued there, and are asynchronous like them.
 */
export class NcclComm {
  private handle: Ptr;

  private constructor(readonly lib: NcclLibrary, handle: Ptr, readonly world: number, readonly rank: number) {
    this.handle = handle;
  }

  /** Joins the communicator of `world` ranks named by `id`; blocks until every rank has joined. */
  static init(id: Uint8Array, world: number, rank: number, lib: NcclLibrary = loadNccl()): NcclComm {
    if (id.length !== NCCL_UNIQUE_ID_BYTES) throw new DeviceError('cuda', `an ncclUniqueId has ${NCCL_UNIQUE_ID_BYTES} bytes, got ${id.length}`);
    const out = new BigUint64Array(1);
    checkNccl(lib.api, 'ncclCommInitRank', lib.api.ncclCommInitRank(out, world, { internal: id }, rank));
    const comm = new NcclComm(lib, out[0], world, rank);
    // What NCCL agreed to, read back: a cheap guard against a by-value struct passed wrongly.
    const n = new Int32Array(1);
    comm.call('ncclCommCount', lib.api.ncclCommCount(comm.handle, n));
    const r = new Int32Array(1);
    comm.call('ncclCommUserRank', lib.api.ncclCommUserRank(comm.handle, r));
    if (n[0] !== world || r[0] !== rank) throw new DeviceError('cuda', `NCCL joined rank ${r[0]} of ${n[0]}, expected rank ${rank} of ${world}`);
    return comm;
  }

  private call(name: string, status: number): void {
    if (status === ncclInProgress) return; // non-blocking communicators only; ours are blocking
    checkNccl(this.lib.api, name, status, this.handle);
  }

  private live(): Ptr {
    if (this.handle === 0n) throw new DeviceError('cuda', 'this NCCL communicator was destroyed or aborted');
    return this.handle;
  }

  /**
   * Queues, in place, buf[i] = mean over ranks of buf[i] (ncclAvg) for the count float32 values at
   * device address buf. Every rank must make the same calls in the same order.
   */
  allReduceMean(buf: Ptr, count: number, stream: Ptr): void {
    this.call('ncclAllReduce', this.lib.api.ncclAllReduce(buf, buf, count, ncclFloat32, ncclAvg, this.live(), stream));
  }

  /** Several all-reduces launched as one group (one launch, one synchronization). */
  group(fn: () => void): void {
    this.call('ncclGroupStart', this.lib.api.ncclGroupStart());
    try {
      fn();
    } finally {
      this.call('ncclGroupEnd', this.lib.api.ncclGroupEnd());
    }
  }

  /** An error raised by NCCL's background work (a peer that died, a network failure), or null. */
  asyncError(): NcclError | null {
    const e = new Int32Array(1);
    this.call('ncclCommGetAsyncError', this.lib.api.ncclCommGetAsyncError(this.live(), e));
    if (e[0] === 0 || e[0] === ncclInProgress) return null;
    return new NcclError('NCCL (asynchronous)', e[0], this.lib.api.ncclGetErrorString(e[0]) ?? `ncclResult_t ${e[0]}`, '');
  }

  /** Frees the communicator after its queued work (every rank calls it at the end). */
  destroy(): void {
    if (this.handle === 0n) return;
    const h = this.handle;
    this.handle = 0n;
    checkNccl(this.lib.api, 'ncclCommDestroy', this.lib.api.ncclCommDestroy(h));
  }

  /** Frees the communicator without waiting for peers or queued work: what a failing rank does. */
  abort(): void {
    if (this.handle === 0n) return;
    const h = this.handle;
    this.handle = 0n;
    this.lib.api.ncclCommAbort(h); // best effort: the process is about to report its own error
  }
}
