// The CUDA backend: every op of the Backend interface (src/backend.ts) on one device, with the
// semantics of the CPU kernels (src/cpu/kernels/*.ts), which the tests compare against. Kernels are
// NVRTC-compiled from kernels/*.ts on first use; the linear layers are cuBLAS sgemm (fp32) or
// GemmEx (bf16 operands, fp32 accumulation, with precision 'bf16': see gemm()). All work is
// queued on the runtime's stream (two of the selection's kernels run beside it and are joined before
// the next op: CudaRuntime.concurrently), so ops return before the GPU is done: download() and
// synchronize() wait. Attention: sparsek, dense and window in kernels/selection-fast.ts and
// kernels/attention.ts; fixed, hash and qktopk in baselines-layer.ts and kernels/baselines.ts.
// Buffers come from the runtime's caching arena; views alias their parent and own nothing.
// Shapes are checked against buffer lengths on every call (a few comparisons): a wrong shape on
// the GPU would otherwise corrupt memory silently, which on the CPU would throw a RangeError.
// SPEC.md: section 7 (`--device cuda`).

import type { AdamwStep, AttentionConfig, AttentionLayer, Backend } from '../backend.js';
import { checkShape } from '../core/check.js';
import type { AttentionShape } from '../core/check.js';
import { ArgumentError, ShapeError } from '../core/errors.js';
import { baselineAttention } from './baselines-layer.js';
import { CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT, CUBLAS_OP_N, CUBLAS_OP_T, CUDA_R_16BF, CUDA_R_32F } from './ffi.js';
import { cudaRuntime } from './runtime.js';
import type { Arena, ArenaStats, CudaRuntime, DeviceBlock, Kernel, KernelSource } from './runtime.js';
import {
  attentionBackwardKeySource, attentionBackwardQuerySource, attentionForwardSource, attentionKernelName, keyOffsetsSource, meanChunks, meanChunksSource, meanPrefixSource,
  scoreGradLaunch, scoreGradSource, ATTENTION_WARPS, MEAN_THREADS, PREFIX_BLOCK,
} from './kernels/attention.js';
import type { AttentionVariant } from './kernels/attention.js';
import { keyIntervalsSource } from './kernels/selection.js';
import {
  fsAnchorLaunches, fsAnchorSource, FS_ANCHOR_STRIDE, fsBlockName, fsBlockSource, fsGeometry, fsLeavesSource, fsMerge2Source, fsMerges, fsMergeSource, fsRowsSource, FS_ANCHOR_THREADS, FS_CHUNK, FS_LEAVES, FS_ROWS_THREADS,
} from './kernels/selection-fast.js';
import { embeddingBackwardSource, embeddingForwardSource, EMBEDDING_BLOCK } from './kernels/embedding.js';
import {
  layernormBackwardSource, layernormForwardSource, layernormWeightPartialsSource,
  rmsnormBackwardSource, rmsnormForwardSource, rmsnormWeightPartialsSource,
} from './kernels/norm.js';
import { addInPlaceSource, fromHeadsSource, scoresFromHeadsSource, scoresToHeadsSource, toHeadsSource, LAYOUT_BLOCK } from './kernels/layout.js';
import { ropePartialRotateSource, ropeRotateSource, ropeTablesSource } from './kernels/rope.js';
import { geluBackwardSource, geluForwardSource, swigluBackwardSource, swigluForwardSource } from './kernels/activation.js';
import { crossEntropyBackwardSource, crossEntropyForwardSource } from './kernels/loss.js';
import { columnFinishSource, columnPartialsSource, COLUMN_ROWS } from './kernels/reduce.js';
import { addBiasSource } from './kernels/matmul.js';
import { adamwSource, sumSquaresSource, OPTIM_BLOCK, SUMSQ_BLOCKS } from './kernels/optim.js';
import { specialise, toBf16Source, toBf16x8Source } from './kernels/storage.js';
import { fastForwardShared, fastForwardSource, fastForwardThreads } from './kernels/attention-tc.js';
import { wgForwardBQ, wgForwardShared, wgForwardSource, wgForwardThreads } from './kernels/attention-wg.js';
import type { WgForwardVariant } from './kernels/attention-wg.js';
import type { FastForwardVariant } from './kernels/attention-tc.js';
import { bwdPrepGrid, bwdPrepName, bwdPrepSource, bwdSelBlocks, bwdSelShared, bwdSelSource, bwdWinShared, bwdWinSource, BT, BWD_THREADS } from './kernels/attention-tc-backward.js';
import type { BackwardVariant } from './kernels/attention-tc-backward.js';
import {
  bwdSelWgBlocks, bwdSelWgShared, bwdSelWgSource, bwdWinWgBlocks, bwdWinWgFlags, bwdWinWgShared, bwdWinWgSource, bwdWinWgThreads, BWD_SEL_WG_THREADS,
} from './kernels/attention-wg-backward.js';
import type { WgSelVariant, WgWindowVariant } from './kernels/attention-wg-backward.js';
import type { GeluForm, Precision, Storage } from '../backend.js';

/** A float buffer in device memory: `length` elements at address `ptr`, float32 or bfloat16. */
export class CudaBuffer {
  constructor(
    readonly ptr: bigint,
    readonly length: number,
    /** The arena block this buffer owns; null for a view. */
    readonly block: DeviceBlock | null,
    readonly dtype: 'f32' | 'bf16' = 'f32',
    /** For a view, the buffer that owns the memory (weights' bf16 shadows are kept per root), and the view's offset in it. */
    readonly root: CudaBuffer | null = null,
    readonly offset: number = 0,
  ) {}

  /** Bytes per element. */
  get size(): 2 | 4 {
    return this.dtype === 'bf16' ? 2 : 4;
  }
}

/** What a kernel argument may be: a buffer (its address, and its storage type for bf16 kernels), a raw address, a number. */
type KernelArg = CudaBuffer | CudaIntBuffer | DeviceBlock | bigint | number;

/** An int32 buffer in device memory (token ids, targets). */
export class CudaIntBuffer {
  constructor(readonly ptr: bigint, readonly length: number, readonly block: DeviceBlock | null) {}
}

// Launch configurations (threads per block): defaults, not tuned. Measured once on an H100 at
// N = 8192, C = 768, V = 50257: rmsnorm forward 35 us (1.4 TB/s of 3.35), backward 86 us; cross-
// entropy forward 2.8 ms (1.2 TB/s), backward 2.0 ms (2.5 TB/s); swiglu 2.0-2.5 TB/s; dev/ is
// where to tune them.
const NORM_BLOCK = 128;
const LOSS_BLOCK = 512;
const ROW_BLOCK = 128; // embedding rows, column sums
const ELEM_BLOCK = LAYOUT_BLOCK; // one thread per element
const INT32_MAX = 2147483647;

// cuda.h enums used by attention() alone (the others live in ffi.ts).
const CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
const CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1;

/** A GPU attention layer; plan() exposes SparseK's last selection for tests. */
export interface CudaAttentionLayer extends AttentionLayer<CudaBuffer> {
  /**
   * The last forward's selection as the device holds it, rows (B*NKV, T): tau, count and sel
   * (B*NKV, T, K), of which row i's first count[i] entries are Sel_i ascending. null for kinds other
   * than sparsek and before a forward. Synchronises.
   */
  plan(): { tau: Float64Array; count: Int32Array; sel: Int32Array; K: number } | null;
  /** Which kernels run: 'tensor-core' (bf16 operands, kernels/attention-tc*.ts) or 'fp32'. */
  readonly kernels: 'tensor-core' | 'fp32';
}

/** What a device attention layer's forward keeps for its backward (the selection fields are null unless the layer selects: SparseK, or dense and window on the tensor-core kernels). */
interface AttentionState {
  lse: DeviceBlock; // (B, NH, T) float
  tau: DeviceBlock | null; // (B, NKV, T) double
  thk: DeviceBlock | null; // (B, NKV, T) u64: key of Sel_i's weakest member
  count: DeviceBlock | null; // (B, NKV, T) int: |Sel_i|
  nfree: DeviceBlock | null; // (B, NKV, T) int: |F_i|
  /** What the attention kernels read: every query's row (B, NKV, T, K) for the fp32 kernels; for the
   * tensor-core ones only the rows of queries 64 b, compact (B, NKV, ceil(T / 64), K). */
  sel: DeviceBlock | null;
  /** Every query's row (B, NKV, T, K) under the tensor-core kernels, made on demand by plan(). */
  rows: DeviceBlock | null;
  e: DeviceBlock | null; // (B, NKV, T) int: key j is attended by queries [j, e_j) (the fp32 backward only)
}

/** The kernel variant for head size HS: float4 loads when HS allows and every row buffer is 16-byte aligned. */
function attentionVariant(HS: number, SEL: boolean, bufs: CudaBuffer[]): AttentionVariant {
  const VEC = HS % 4 === 0 && bufs.every((b) => b.ptr % 16n === 0n) ? 4 : 1;
  return { HS, VEC, SEL };
}

const ONE = new Float32Array([1]);
const ZERO = new Float32Array([0]);

/**
 * The CUDA implementation of Backend: fp32 ops on device 0.
 * @example
 *   const be = new CudaBackend();           // throws DeviceError if CUDA cannot be used here
 *   const x = be.alloc(N * C); be.upload(x, data);
 */
export class CudaBackend implements Backend<CudaBuffer, CudaIntBuffer> {
  readonly device = 'cuda' as const;
  readonly rt: CudaRuntime;
  readonly precision: Precision;
  private readonly kernels = new Map<string, Kernel>();
  /** Kernels (cache keys) opted in to more than 48 KiB of dynamic shared memory. */
  private readonly optedIn = new Set<string>();
  /**
   * bf16 copies of float32 buffers used as matrix-product weights, per root buffer, with whether the
   * root was written since (upload and adamw mark it stale; the next product re-copies it whole).
   */
  private readonly shadows = new Map<CudaBuffer, { copy: DeviceBlock; stale: boolean }>();

  /** precision 'bf16' stores 'act' buffers as bfloat16 (mixed-precision training); 'fp32' (the default) stores every buffer as float32. */
  constructor(rt: CudaRuntime = cudaRuntime(), opts: { precision?: Precision } = {}) {
    this.rt = rt;
    this.precision = opts.precision ?? 'fp32';
  }

  /** Device memory counters (in use, peak, reserved, driver allocations). */
  counters(): ArenaStats {
    return this.rt.arena.counters();
  }

  // ---- memory -------------------------------------------------------------------------------

  alloc(n: number, storage: Storage = 'f32'): CudaBuffer {
    checkCount('n', n);
    const dtype = storage === 'act' && this.precision === 'bf16' ? 'bf16' : 'f32';
    const block = this.rt.arena.take(n * (dtype === 'bf16' ? 2 : 4));
    const buf = new CudaBuffer(block.ptr, n, block, dtype);
    this.zero(buf);
    return buf;
  }

  allocInt(n: number): CudaIntBuffer {
    checkCount('n', n);
    const block = this.rt.arena.take(n * 4);
    const buf = new CudaIntBuffer(block.ptr, n, block);
    this.rt.cu('cuMemsetD32Async', buf.ptr, 0, n, this.rt.stream);
    return buf;
  }

  view(b: CudaBuffer, offset: number, n: number): CudaBuffer {
    checkCount('offset', offset);
    checkCount('n', n);
    if (offset + n > b.length) throw new ShapeError('view', `offset + n <= ${b.length} (the buffer's length)`, `offset ${offset} + n ${n}`);
    return new CudaBuffer(b.ptr + BigInt(offset * b.size), n, null, b.dtype, b.root ?? b, b.offset + offset);
  }

  /** Returns b's memory to the arena; a view owns none, so freeing one does nothing (as on the CPU). */
  free(b: CudaBuffer | CudaIntBuffer): void {
    if (b.block !== null) this.rt.arena.give(b.block); // a second free of the same buffer throws there
    const shadow = b instanceof CudaBuffer ? this.shadows.get(b) : undefined;
    if (shadow !== undefined) {
      this.rt.arena.give(shadow.copy);
      this.shadows.delete(b as CudaBuffer);
    }
  }

  length(b: CudaBuffer): number {
    return b.length;
  }

  upload(dst: CudaBuffer, src: Float32Array): void {
    if (src.length > dst.length) throw new ShapeError('upload(src)', `at most ${dst.length} elements (dst's length)`, `${src.length}`);
    this.markWritten(dst);
    if (src.length === 0) return;
    const host = dst.dtype === 'bf16' ? toBf16(src) : src;
    this.rt.cu('cuMemcpyHtoDAsync_v2', dst.ptr, host, host.byteLength, this.rt.stream);
    // A pageable-memory copy may return before the device has read the host buffer: keep a
    // converted temporary alive until the copy is done.
    if (host !== src) this.rt.synchronize();
  }

  uploadInt(dst: CudaIntBuffer, src: Int32Array): void {
    if (src.length > dst.length) throw new ShapeError('uploadInt(src)', `at most ${dst.length} elements (dst's length)`, `${src.length}`);
    if (src.length > 0) this.rt.cu('cuMemcpyHtoDAsync_v2', dst.ptr, src, src.length * 4, this.rt.stream);
  }

  download(src: CudaBuffer): Float32Array {
    const out = src.dtype === 'bf16' ? new Uint16Array(src.length) : new Float32Array(src.length);
    // From pageable memory the copy completes before the call returns; the sync orders it for sure.
    if (src.length > 0) this.rt.cu('cuMemcpyDtoHAsync_v2', out, src.ptr, out.byteLength, this.rt.stream);
    this.rt.synchronize();
    return out instanceof Uint16Array ? fromBf16(out) : out;
  }

  /** The int32 contents of src (for tests and debugging). */
  downloadInt(src: CudaIntBuffer): Int32Array {
    const out = new Int32Array(src.length);
    if (src.length > 0) this.rt.cu('cuMemcpyDtoHAsync_v2', out, src.ptr, src.length * 4, this.rt.stream);
    this.rt.synchronize();
    return out;
  }

  zero(b: CudaBuffer): void {
    this.fill(b, 0);
  }

  /** Sets every element of b to value (a memset of its bit pattern: no kernel). */
  fill(b: CudaBuffer, value: number): void {
    this.markWritten(b);
    if (b.length === 0) return;
    if (b.dtype === 'bf16') this.rt.cu('cuMemsetD16Async', b.ptr, toBf16(new Float32Array([value]))[0], b.length, this.rt.stream);
    else this.rt.cu('cuMemsetD32Async', b.ptr, new Uint32Array(new Float32Array([value]).buffer)[0], b.length, this.rt.stream);
  }

  synchronize(): void {
    this.rt.synchronize();
  }

  // ---- ops ----------------------------------------------------------------------------------

  embeddingForward(out: CudaBuffer, ids: CudaIntBuffer, wte: CudaBuffer, N: number, C: number): void {
    need('out', out, N * C, `(N=${N}, C=${C})`);
    need('ids', ids, N, `(N=${N})`);
    need('wte', wte, C, `(V, C=${C})`);
    this.launch('embedding_forward', embeddingForwardSource, N, ROW_BLOCK, [out, ids, wte, N, C, rows(wte, C)]);
  }

  embeddingBackward(dwte: CudaBuffer, dout: CudaBuffer, ids: CudaIntBuffer, N: number, C: number): void {
    need('dwte', dwte, C, `(V, C=${C})`);
    need('dout', dout, N * C, `(N=${N}, C=${C})`);
    need('ids', ids, N, `(N=${N})`);
    this.launch('embedding_backward', embeddingBackwardSource, [N, Math.ceil(C / EMBEDDING_BLOCK), 1], EMBEDDING_BLOCK,
      [dwte, dout, ids, N, C, rows(dwte, C)]);
  }

  rmsnormForward(out: CudaBuffer, rstd: CudaBuffer, inp: CudaBuffer, weight: CudaBuffer, N: number, C: number, eps: number): void {
    need('out', out, N * C, `(N=${N}, C=${C})`);
    need('rstd', rstd, N, `(N=${N})`);
    need('inp', inp, N * C, `(N=${N}, C=${C})`);
    need('weight', weight, C, `(C=${C})`);
    this.launch('rmsnorm_forward', () => rmsnormForwardSource({ BLOCK: NORM_BLOCK }), N, NORM_BLOCK,
      [out, rstd, inp, weight, N, C, eps]);
  }

  rmsnormBackward(
    dinp: CudaBuffer, dweight: CudaBuffer, dout: CudaBuffer, inp: CudaBuffer, weight: CudaBuffer, rstd: CudaBuffer, N: number, C: number,
  ): void {
    need('dinp', dinp, N * C, `(N=${N}, C=${C})`);
    need('dweight', dweight, C, `(C=${C})`);
    need('dout', dout, N * C, `(N=${N}, C=${C})`);
    need('inp', inp, N * C, `(N=${N}, C=${C})`);
    need('weight', weight, C, `(C=${C})`);
    need('rstd', rstd, N, `(N=${N})`);
    this.launch('rmsnorm_backward', () => rmsnormBackwardSource({ BLOCK: NORM_BLOCK }), N, NORM_BLOCK,
      [dinp, dout, inp, weight, rstd, N, C]);
    // dweight: pass 1 partial column sums of dy * x * r per chunk of rows, pass 2 their ordered sum
    const P = Math.ceil(N / COLUMN_ROWS);
    const partial = this.rt.arena.take(P * C * 8);
    this.launch('rmsnorm_weight_partials', rmsnormWeightPartialsSource, [P, Math.ceil(C / ROW_BLOCK), 1], ROW_BLOCK,
      [partial, dout, inp, rstd, N, C]);
    this.launch('column_finish', columnFinishSource, Math.ceil(C / ROW_BLOCK), ROW_BLOCK, [dweight, partial, P, C]);
    this.rt.arena.give(partial); // reusable at once: later work on the stream runs after these kernels
  }

  /**
   * out (N, OC) = inp (N, C) @ weight (OC, C)^T [+ bias]. cuBLAS is column-major, and a row-major
   * (R, K) matrix is, in the same memory, the column-major (K, R) one. So the product is
   *   out^T (OC, N) = op(weight-as-stored (C, OC)) @ inp-as-stored (C, N),  op = transpose:
   *   sgemm(transa T, transb N, m OC, n N, k C, A weight ld C, B inp ld C, C out ld OC), beta = 0.
   */
  matmulForward(out: CudaBuffer, inp: CudaBuffer, weight: CudaBuffer, bias: CudaBuffer | null, N: number, C: number, OC: number): void {
    need('out', out, N * OC, `(N=${N}, OC=${OC})`);
    need('inp', inp, N * C, `(N=${N}, C=${C})`);
    need('weight', weight, OC * C, `(OC=${OC}, C=${C})`);
    if (bias !== null) need('bias', bias, OC, `(OC=${OC})`);
    this.gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, weight, true, C, inp, C, ZERO, out, OC);
    if (bias !== null) this.launch('add_bias', addBiasSource, blocks(N * OC), ELEM_BLOCK, [out, bias, N, OC]);
  }

  /**
   * Backward of out = inp @ weight^T + bias, ACCUMULATING (beta = 1), in cuBLAS's column-major terms:
   *   dinp^T (C, N)     += weight^T-as-stored (C, OC) @ dout^T (OC, N):  sgemm(N, N, m C, n N, k OC, weight ld C, dout ld OC, dinp ld C)
   *   dweight^T (C, OC) += inp^T (C, N) @ dout (N, OC):                  sgemm(N, T, m C, n OC, k N, inp ld C, dout ld OC, dweight ld C)
   *   dbias (OC)        += column sums of dout, two deterministic passes (reduce.ts)
   */
  matmulBackward(
    dinp: CudaBuffer, dweight: CudaBuffer, dbias: CudaBuffer | null, dout: CudaBuffer, inp: CudaBuffer, weight: CudaBuffer,
    N: number, C: number, OC: number,
  ): void {
    need('dinp', dinp, N * C, `(N=${N}, C=${C})`);
    need('dweight', dweight, OC * C, `(OC=${OC}, C=${C})`);
    if (dbias !== null) need('dbias', dbias, OC, `(OC=${OC})`);
    need('dout', dout, N * OC, `(N=${N}, OC=${OC})`);
    need('inp', inp, N * C, `(N=${N}, C=${C})`);
    need('weight', weight, OC * C, `(OC=${OC}, C=${C})`);
    this.gemm(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, weight, true, C, dout, OC, ONE, dinp, C);
    this.gemm(CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, inp, false, C, dout, OC, ONE, dweight, C);
    if (dbias !== null) this.columnSums(dbias, dout, N, OC);
  }

  toHeads(out: CudaBuffer, inp: CudaBuffer, B: number, T: number, NH: number, HS: number): void {
    const n = B * T * NH * HS, dims = `(B=${B}, T=${T}, NH=${NH}, HS=${HS})`;
    need('out', out, n, dims);
    need('inp', inp, n, dims);
    this.launch('to_heads', toHeadsSource, blocks(n), ELEM_BLOCK, [out, inp, B, T, NH, HS]);
  }

  fromHeads(out: CudaBuffer, inp: CudaBuffer, B: number, T: number, NH: number, HS: number): void {
    const n = B * T * NH * HS, dims = `(B=${B}, T=${T}, NH=${NH}, HS=${HS})`;
    need('out', out, n, dims);
    need('inp', inp, n, dims);
    this.launch('from_heads', fromHeadsSource, blocks(n), ELEM_BLOCK, [out, inp, B, T, NH, HS]);
  }

  ropeForward(out: CudaBuffer, inp: CudaBuffer, B: number, NH: number, T: number, HS: number, theta: number, posOffset: number): void {
    this.rope(false, out, inp, B, NH, T, HS, theta, posOffset);
  }

  ropeBackward(dinp: CudaBuffer, dout: CudaBuffer, B: number, NH: number, T: number, HS: number, theta: number, posOffset: number): void {
    this.rope(true, dinp, dout, B, NH, T, HS, theta, posOffset);
  }

  scoresToHeads(u: CudaBuffer, uFlat: CudaBuffer, B: number, T: number, NKV: number, eps: number): void {
    const n = B * T * NKV, dims = `(B=${B}, T=${T}, NKV=${NKV})`;
    need('u', u, n, dims);
    need('uFlat', uFlat, n, dims);
    this.launch('scores_to_heads', scoresToHeadsSource, blocks(n), ELEM_BLOCK, [u, uFlat, B, T, NKV, eps]);
  }

  scoresFromHeads(duFlat: CudaBuffer, du: CudaBuffer, B: number, T: number, NKV: number): void {
    const n = B * T * NKV, dims = `(B=${B}, T=${T}, NKV=${NKV})`;
    need('duFlat', duFlat, n, dims);
    need('du', du, n, dims);
    this.launch('scores_from_heads', scoresFromHeadsSource, blocks(n), ELEM_BLOCK, [duFlat, du, B, T, NKV]);
  }

  swigluForward(out: CudaBuffer, gate: CudaBuffer, up: CudaBuffer, n: number): void {
    need('out', out, n, `(n=${n})`);
    need('gate', gate, n, `(n=${n})`);
    need('up', up, n, `(n=${n})`);
    this.launch('swiglu_forward', swigluForwardSource, blocks(n), ELEM_BLOCK, [out, gate, up, n]);
  }

  swigluBackward(dgate: CudaBuffer, dup: CudaBuffer, dout: CudaBuffer, gate: CudaBuffer, up: CudaBuffer, n: number): void {
    for (const [name, b] of [['dgate', dgate], ['dup', dup], ['dout', dout], ['gate', gate], ['up', up]] as const) need(name, b, n, `(n=${n})`);
    this.launch('swiglu_backward', swigluBackwardSource, blocks(n), ELEM_BLOCK, [dgate, dup, dout, gate, up, n]);
  }

  addInPlace(out: CudaBuffer, a: CudaBuffer, n: number): void {
    need('out', out, n, `(n=${n})`);
    need('a', a, n, `(n=${n})`);
    this.launch('add_in_place', addInPlaceSource, blocks(n), ELEM_BLOCK, [out, a, n]);
  }

  crossEntropyForward(losses: CudaBuffer, probs: CudaBuffer, logits: CudaBuffer, targets: CudaIntBuffer, N: number, V: number): void {
    need('losses', losses, N, `(N=${N})`);
    need('probs', probs, N * V, `(N=${N}, V=${V})`);
    need('logits', logits, N * V, `(N=${N}, V=${V})`);
    need('targets', targets, N, `(N=${N})`);
    this.launch('cross_entropy_forward', () => crossEntropyForwardSource({ BLOCK: LOSS_BLOCK }), N, LOSS_BLOCK,
      [losses, probs, logits, targets, N, V]);
  }

  crossEntropyBackward(dlogits: CudaBuffer, scale: number, probs: CudaBuffer, targets: CudaIntBuffer, N: number, V: number): void {
    need('dlogits', dlogits, N * V, `(N=${N}, V=${V})`);
    need('probs', probs, N * V, `(N=${N}, V=${V})`);
    need('targets', targets, N, `(N=${N})`);
    this.launch('cross_entropy_backward', crossEntropyBackwardSource, blocks(N * V), ELEM_BLOCK,
      [dlogits, probs, targets, scale, N, V]);
  }

  /**
   * The attention layer. sparsek, dense and window run on the GPU: SparseK's selection
   * (kernels/selection-fast.ts), then attention over the window and the selected keys
   * (kernels/attention.ts), forward and backward, all queued on the stream. fixed, hash and qktopk
   * are baselines-layer.ts's.
   * The forward keeps what the backward needs (lse; for SparseK the selection and each key's
   * interval of attending queries) in device memory owned by the layer, returned to the arena when
   * the layer is garbage-collected; q, k, v, u and out must stay unchanged until the backward.
   */
  attention(c: AttentionConfig, shape: AttentionShape): CudaAttentionLayer {
    switch (c.attention) {
      case 'sparsek':
      case 'dense':
      case 'window':
        return this.deviceAttention(c, shape);
      case 'fixed':
      case 'hash':
      case 'qktopk':
        return baselineAttention(this.rt, c, shape);
    }
  }

  /** attention() for sparsek, dense (W = T) and window: see kernels/attention.ts for the passes. */
  private deviceAttention(c: AttentionConfig, shape: AttentionShape): CudaAttentionLayer {
    const { B, T, NH, NKV, HS } = checkShape(shape);
    if (HS > 768) throw new ArgumentError('shape.HS', 'at most 768 on CUDA (the backward keeps 8 key and value rows per block in 48 KiB of shared memory)', HS);
    if (NH > 65535) throw new ArgumentError('shape.NH', 'at most 65535 on CUDA (a grid dimension)', NH);
    if (B * NKV > 65535) throw new ArgumentError('shape.B', `B * NKV <= 65535 on CUDA (a grid dimension; NKV = ${NKV})`, B);
    const sparse = c.attention === 'sparsek';
    const K = sparse ? c.k : 0;
    const W = c.attention === 'dense' ? T : c.window;
    if (!Number.isInteger(K) || K < 0) throw new ArgumentError('k', 'an integer >= 0', K);
    if (!Number.isInteger(W) || W < 0) throw new ArgumentError('window', 'an integer >= 0', W);
    if (T * K > INT32_MAX) throw new ArgumentError('k', `T * K <= ${INT32_MAX} on CUDA (T = ${T})`, K);
    const BH = B * NKV, nq = B * NH * T * HS, nkv = BH * T * HS, nu = BH * T;
    const dims = `(B=${B}, NH=${NH}, NKV=${NKV}, T=${T}, HS=${HS})`;
    const scale = 1 / Math.sqrt(HS);
    const rows = Math.ceil(T / ATTENTION_WARPS);
    // Under precision bf16 the tensor-core kernels (kernels/attention-tc*.ts) run on bf16 copies of
    // q, k, v where they apply; otherwise the fp32 kernels of kernels/attention.ts. They serve
    // dense and window too, as SparseK with K = 0 (W = T for dense): a selection of nothing.
    const tc = this.tensorCoreVariants(HS, K, W, NH / NKV, T);
    const selects = sparse || tc !== null;
    // The tensor-core kernels read bf16 q, k, v and dout: a bf16 buffer is read in place, a float32
    // one through a bf16 copy made here (io says which the caller should hand over).
    const asBf16 = (x: CudaBuffer, copy: () => DeviceBlock): bigint => {
      if (x.dtype === 'bf16') return x.ptr;
      const b = copy();
      this.copyToBf16(b, x, x.length);
      return b.ptr;
    };
    const half = new Map<'q' | 'k' | 'v', DeviceBlock>(); // the copies of float32 q, k, v, kept for the backward
    const halfOf = (slot: 'q' | 'k' | 'v', n: number) => (): DeviceBlock => {
      let b = half.get(slot);
      if (b === undefined) half.set(slot, b = own(n * 2));
      return b;
    };
    let last16: { q: bigint; k: bigint; v: bigint } | null = null;
    // OWNQ's flags (WgWindowVariant), up when they hold the call's epoch: zeroed once, and again when the
    // epoch wraps (an i32 argument)
    let qflags: DeviceBlock | null = null;
    let epoch = 0;
    const ownedDq = (): { flags: bigint; epoch: number } => {
      if (qflags === null || epoch === 0x7fffffff) {
        const n = bwdWinWgFlags(B, NH, T);
        qflags ??= own(n * 4);
        this.rt.cu('cuMemsetD32Async', qflags.ptr, 0, n, this.rt.stream);
        epoch = 0;
      }
      return { flags: qflags.ptr, epoch: ++epoch };
    };
    // Device memory the forward leaves for the backward, taken on the first forward.
    const held: DeviceBlock[] = [];
    const own = (bytes: number): DeviceBlock => {
      const b = this.rt.arena.take(Math.max(4, bytes));
      held.push(b);
      return b;
    };
    let st: AttentionState | null = null;
    let last: { out: CudaBuffer; q: CudaBuffer; k: CudaBuffer; v: CudaBuffer; u: CudaBuffer | null } | null = null;
    const nothing = 0n; // the pointer passed for a SEL-only argument of a window kernel, which never reads it
    // The tensor-core kernels read only each block's first selection row (SPEC section 3's block
    // property), so their forward writes those alone (T / 64 rows, not T: 32 MiB rather than 2 GiB at
    // T = 64K, K = 512, 16 heads); plan() makes every row on demand.
    let rowsComplete = false;
    const plan = (): { tau: Float64Array; count: Int32Array; sel: Int32Array; K: number } | null => {
      if (!sparse || st === null || st.tau === null || st.count === null || st.sel === null) return null;
      if (tc !== null && !rowsComplete && last?.u) {
        st.rows ??= own(nu * K * 4);
        this.sparsekSelect(st, last.u, BH, T, K, W, { rows: st.rows, all: true });
        rowsComplete = true;
      }
      const rows = tc !== null ? st.rows : st.sel;
      if (rows === null) return null;
      return { tau: this.downloadRaw(st.tau, new Float64Array(nu)), count: this.downloadRaw(st.count, new Int32Array(nu)),
        sel: this.downloadRaw(rows, new Int32Array(nu * K)), K };
    };
    const layer: CudaAttentionLayer = {
      forward: (out, q, k, v, u) => {
        need('out', out, nq, dims);
        need('q', q, nq, dims);
        need('k', k, nkv, dims);
        need('v', v, nkv, dims);
        if (tc === null) float32Only({ out, q, k, v });
        float32Only({ u });
        if (sparse) {
          if (u === null) throw new ArgumentError('u', `the scores (B, NKV, T) ${dims} of SparseK attention`, null);
          need('u', u, nu, dims);
        }
        if (st === null) {
          st = { lse: own(B * NH * T * 4), tau: null, thk: null, count: null, nfree: null, sel: null, rows: null, e: null };
          if (selects) {
            st.tau = own(nu * 8);
            st.thk = own(nu * 8);
            st.count = own(nu * 4);
            st.nfree = own(nu * 4);
            st.sel = own((tc !== null ? BH * Math.ceil(T / FS_CHUNK) : nu) * K * 4);
            st.e = tc === null ? own(nu * 4) : null; // the fp32 backward's key intervals
          }
        }
        const s = st;
        if (sparse && u !== null && s.sel !== null) {
          rowsComplete = false;
          // only the rows of the queries where a block of the tensor-core forward or backward starts
          const fwdBQ = tc === null ? 64 : tc.fwdWg ? wgForwardBQ(tc.fwdWg) : tc.fwd.BQ;
          const bwdQB = tc === null ? 64 : tc.selWg ? (tc.selWg.QB ?? 128) : (tc.sel.QB ?? 64);
          this.sparsekSelect(s, u, BH, T, K, W, { rows: s.sel, all: tc === null, every: [fwdBQ / FS_CHUNK, bwdQB / FS_CHUNK] });
        }
        else if (selects) this.selectNothing(s, BH, T);
        last = { out, q, k, v, u };
        if (tc !== null && s.tau && s.thk && s.count && s.sel) {
          last16 = { q: asBf16(q, halfOf('q', nq)), k: asBf16(k, halfOf('k', nkv)), v: asBf16(v, halfOf('v', nkv)) };
          const args: KernelArg[] = [out.ptr, s.lse, last16.q, last16.k, last16.v, u ?? s.tau, s.tau, s.thk, s.count, s.sel, T, NH, NKV, K, W, scale];
          if (tc.fwdWg) {
            const wg = { ...tc.fwdWg, OUT: out.dtype };
            this.launch(wgForwardSource(wg).name, () => wgForwardSource(wg), [Math.ceil(T / wgForwardBQ(wg)), NH / (wg.GH ?? 1), B], wgForwardThreads(wg), args, wgForwardShared(wg, K, W));
            return;
          }
          const fwd = { ...tc.fwd, OUT: out.dtype };
          this.launch(fastForwardSource(fwd).name, () => fastForwardSource(fwd), [Math.ceil(T / fwd.BQ), NH / (fwd.GH ?? 1), B], fastForwardThreads(fwd),
            args, fastForwardShared(fwd, K, W));
          return;
        }
        const o = attentionVariant(HS, sparse, [q, k, v]);
        this.launch(attentionKernelName('attention_forward', o), () => attentionForwardSource(o), [rows, NH, B], 32 * ATTENTION_WARPS,
          [out, s.lse, q, k, v, u ?? nothing, s.tau ?? nothing, s.count ?? nothing, s.sel ?? nothing,
            T, NH, NKV, K, W, scale]);
      },
      backward: (dq, dk, dv, du, dout) => {
        if (last === null || st === null) throw new Error('attention backward called before forward');
        need('dq', dq, nq, dims);
        need('dk', dk, nkv, dims);
        need('dv', dv, nkv, dims);
        need('dout', dout, nq, dims);
        if (du !== null) need('du', du, nu, dims);
        float32Only({ dq, dk, dv, du });
        if (tc === null) float32Only({ dout });
        const { out, q, k, v, u } = last;
        const s = st;
        const o = attentionVariant(HS, sparse, [q, k, v, dout]);
        const scratch: DeviceBlock[] = [];
        const take = (bytes: number): DeviceBlock => {
          const b = this.rt.arena.take(Math.max(4, bytes));
          scratch.push(b);
          return b;
        };
        const D = take(B * NH * T * 4);
        const mean = selects ? take(nu * 8) : null;
        // The gate gradients' way to du: the tensor-core backward sums them per key (dsel); the fp32
        // one stores each selected pair's in dgk, by key (off), for sparsek_score_grad to sum.
        const dsel = tc !== null && selects ? take(nu * 8) : null;
        const off = tc === null && selects ? take(BH * (T + 1) * 4) : null;
        const dgk = tc === null && selects ? take(nu * K * 4) : null;
        if (off !== null && s.e !== null && u !== null && s.thk !== null) {
          // each key's interval of attending queries, and its first slot in dgk
          this.launch('sparsek_key_intervals', keyIntervalsSource, blocks(nu), ELEM_BLOCK, [s.e, u, s.thk, BH, T, W]);
          this.launch('sparsek_key_offsets', keyOffsetsSource, BH, PREFIX_BLOCK, [off, s.e, T, W]);
        }
        if (tc !== null && last16 !== null && dsel !== null && mean !== null && s.tau && s.thk && s.count && s.sel && s.nfree) {
          // prep: D and dq = 0 (or win stores dq first: OWNQ); win: the window pairs (stores dk, dv); sel: the selected pairs (adds).
          const h = last16;
          const dout16 = asBf16(dout, () => take(nq * 2));
          this.rt.cu('cuMemsetD32Async', dsel.ptr, 0, 2 * nu, this.rt.stream); // (dk and dv need no zeros: win stores every row)
          // OWNQ: the window kernel stores each dq row before anything adds to it, so prep leaves dq alone
          const owned = tc.winWg?.OWNQ === true ? ownedDq() : null;
          this.launch(`${bwdPrepName(out.dtype)}_hs${HS}`, () => bwdPrepSource(out.dtype, HS), bwdPrepGrid(B * NH * T, HS), 256,
            [D, owned ? nothing : dq, dout16, out.ptr, B * NH * T, HS]);
          const winArgs = [dk, dv, dq, h.q, h.k, h.v, dout16, s.lse, D, T, NH, NKV, W, scale, ...(owned ? [owned.flags, owned.epoch] : [])];
          const wg = tc.winWg;
          if (wg !== null) {
            this.launch(bwdWinWgSource(wg).name, () => bwdWinWgSource(wg), [bwdWinWgBlocks(wg, T), NKV, B], bwdWinWgThreads(wg), winArgs, bwdWinWgShared(wg));
          } else {
            this.launch(bwdWinSource(tc.win).name, () => bwdWinSource(tc.win), [Math.ceil(T / BT), NKV, B], BWD_THREADS, winArgs, bwdWinShared(tc.win));
          }
          const selArgs = [dq, dk, dv, dsel, mean, h.q, h.k, h.v, dout16, s.lse, D, u ?? s.tau, s.tau, s.thk, s.count, s.sel, s.nfree, T, NH, NKV, K, W, scale];
          const sg = tc.selWg;
          if (sg !== null) {
            this.launch(bwdSelWgSource(sg).name, () => bwdSelWgSource(sg), [bwdSelWgBlocks(sg, T), NKV, B], BWD_SEL_WG_THREADS, selArgs, bwdSelWgShared(sg, K));
          } else {
            this.launch(bwdSelSource(tc.sel).name, () => bwdSelSource(tc.sel), [bwdSelBlocks(tc.sel, T), NKV, B], BWD_THREADS, selArgs, bwdSelShared(tc.sel, K));
          }
        } else {
          // pass 1: dq, D, gate gradients; pass 2: dk, dv
          this.launch(attentionKernelName('attention_backward_query', o), () => attentionBackwardQuerySource(o), [rows, NKV, B], 32 * ATTENTION_WARPS,
            [dq, D, mean ?? nothing, dgk ?? nothing, dout, out, s.lse, q, k, v, u ?? nothing,
              s.tau ?? nothing, s.count ?? nothing, s.sel ?? nothing, s.nfree ?? nothing, off ?? nothing, T, NH, NKV, K, W, scale]);
          this.launch(attentionKernelName('attention_backward_key', o), () => attentionBackwardKeySource(o), [rows, NKV, B], 32 * ATTENTION_WARPS,
            [dk, dv, dout, s.lse, D, q, k, v, u ?? nothing, s.tau ?? nothing, s.e ?? nothing,
              T, NH, NKV, W, scale]);
        }
        if (du !== null && u !== null && mean !== null && s.tau !== null) {
          const P = take(BH * (T + 1) * 8);
          const sums = take(BH * meanChunks(T) * 8);
          this.launch('sparsek_mean_chunks', meanChunksSource, [meanChunks(T), BH, 1], MEAN_THREADS, [sums, mean, T]);
          this.launch('sparsek_mean_prefix', meanPrefixSource, [meanChunks(T), BH, 1], MEAN_THREADS, [P, sums, mean, T]);
          const sg = scoreGradLaunch(T, BH);
          if (dsel !== null) {
            this.launch('sparsek_score_grad_sums', () => scoreGradSource('sums'), sg.grid, sg.block, [du, u, s.tau, dsel, P, BH, T, K, W, sg.C], sg.shared);
          } else if (off !== null && dgk !== null && s.e !== null) {
            this.launch('sparsek_score_grad', () => scoreGradSource('slots'), sg.grid, sg.block, [du, u, s.tau, s.e, off, dgk, P, BH, T, K, W, sg.C], sg.shared);
          }
        }
        for (const b of scratch) this.rt.arena.give(b); // reusable at once: later work on the stream runs after these kernels
      },
      selections: () => {
        const p = plan();
        const uh = last?.u ? this.download(last.u) : null;
        if (p === null || uh === null) return null;
        return Array.from({ length: BH }, (_, bh) => {
          const rowsOf = Array.from({ length: T }, (_, i) => p.sel.subarray((bh * T + i) * K, (bh * T + i) * K + p.count[bh * T + i]));
          const gates = rowsOf.map((row, i) => Float64Array.from(row, (j) => Math.min(1, Math.max(0, uh[bh * T + j] - p.tau[bh * T + i]))));
          return { T, rows: rowsOf, gates };
        });
      },
      plan,
      kernels: tc !== null ? 'tensor-core' : 'fp32',
      io: tc !== null ? 'act' : 'f32',
      dispose: () => {
        // Explicit release, so a training step is allocation-neutral; the registry below only
        // covers layers dropped without dispose().
        CudaBackend.layerMemory.unregister(layer);
        for (const b of held) this.rt.arena.give(b);
        held.length = 0;
      },
    };
    CudaBackend.layerMemory.register(layer, { arena: this.rt.arena, blocks: held }, layer);
    return layer;
  }

  /**
   * SparseK's selection of every (b, KV head) row into s, exactly as the CPU's CausalSelector
   * (kernels/selection-fast.ts, O(T log^2 T) per row, parallel over queries): a merge-sort tree of
   * each row's scores, one anchor per block of 64 queries, the anchors' rows, then every query's
   * tau, thk, count, nfree; into out.rows every query's row (all: the (B, NKV, T, K) layout) or only
   * those of queries 64 b, which the tensor-core kernels read (compact, (B, NKV, ceil(T / 64), K)).
   * (The fp32 backward makes each key's interval of attending queries from thk when it needs them.)
   */
  private sparsekSelect(s: AttentionState, u: CudaBuffer, BH: number, T: number, K: number, W: number,
    out: { rows: DeviceBlock; all: boolean; every?: [number, number] }): void {
    const { tau, thk, count, nfree } = s;
    if (tau === null || thk === null || count === null || nfree === null) return;
    const { d, Tx, NL, nb } = fsGeometry(T, W);
    const rowsShared = 4 * Math.ceil(Tx / 32); // fs_rows' bitmap over the row's positions
    if (rowsShared > this.sharedOptin() - 1024) {
      throw new ArgumentError('shape.T', `at most about ${8 * (this.sharedOptin() - 1024) - 64} on this GPU for SparseK (the selection marks a row's positions in shared memory)`, T);
    }
    const lvl = BH * Tx;
    const scratch: DeviceBlock[] = [];
    const take = (bytes: number): DeviceBlock => {
      const b = this.rt.arena.take(Math.max(8, bytes));
      scratch.push(b);
      return b;
    };
    const tk = take(NL * lvl * 8), tp = take(NL * lvl * 8);
    const athk = take(BH * (nb + 1) * 8), atau = take(BH * (nb + 1) * 8);
    const g = (n: number): number => Math.ceil(n / 256);
    // 1. the tree: nodes up to FS_LEAVES sorted in shared memory, then merges of node size
    // s = FS_LEAVES, 4 FS_LEAVES, ..., two levels a launch (the levels of node size >= 64 kept)
    this.launch('sparsek_fs_leaves', fsLeavesSource, [Math.ceil(Tx / FS_LEAVES), BH, 1], FS_LEAVES, [tk, tp, u, BH, T, Tx, d]);
    const level = (size: number): bigint => BigInt(Math.log2(size / FS_CHUNK) * lvl * 8);
    for (const { s: size, two } of fsMerges(Tx, BH)) {
      const into = [tk.ptr + level(2 * size), tp.ptr + level(2 * size)];
      const from = [tk.ptr + level(size), tp.ptr + level(size)];
      if (two) this.launch('sparsek_fs_merge2', fsMerge2Source, g(lvl), 256, [...into, tk.ptr + level(4 * size), tp.ptr + level(4 * size), ...from, BH, Tx, size]);
      else this.launch('sparsek_fs_merge', fsMergeSource, g(lvl), 256, [...into, ...from, BH, Tx, size]);
    }
    // 2. anchors, 3. their rows (the rows of queries 64 b), 4. every query (and, with out.all, its row)
    for (const { phase, AW, grid } of fsAnchorLaunches(BH, nb, K, this.rt.multiprocessors)) {
      this.launch(`sparsek_fs_anchor_w${AW}`, () => fsAnchorSource(AW), grid, FS_ANCHOR_THREADS,
        [athk, atau, tk, tp, u, BH, T, K, W, Tx, d, NL, nb, FS_ANCHOR_STRIDE, phase]);
    }
    const [every1, every2] = out.all ? [1, 1] : (out.every ?? [1, 1]);
    const rows = (): void => this.launch('sparsek_fs_rows', fsRowsSource, [nb, BH, 1], FS_ROWS_THREADS,
      [out.rows, athk, tk, u, BH, T, K, W, Tx, d, NL, nb, out.all ? T : nb, out.all ? 6 : 0, every1, every2], rowsShared);
    const all = { ALL: out.all };
    const walks = (): void => this.launch(fsBlockName(all), () => fsBlockSource(all), [nb, BH, 1], FS_CHUNK,
      [tau, thk, count, nfree, out.rows, athk, atau, tk, tp, u, BH, T, K, W, Tx, d, NL, nb]);
    // Without ALL the walks read nothing the rows write: both latency-bound, they run side by side
    if (out.all) {
      rows();
      walks();
    } else {
      this.rt.concurrently(rows, walks);
    }
    for (const b of scratch) this.rt.arena.give(b); // reusable at once: later work on the stream runs after these kernels
  }

  /**
   * The selection state of K = 0 (dense and window on the tensor-core kernels): nothing selected
   * (thk = ~0 admits no key) and no free keys. u is never read where nothing is selected, so tau
   * stands in for it as an address.
   */
  private selectNothing(s: AttentionState, BH: number, T: number): void {
    if (s.tau === null || s.thk === null || s.count === null || s.nfree === null) return;
    const n = BH * T;
    this.rt.cu('cuMemsetD32Async', s.tau.ptr, 0, 2 * n, this.rt.stream);
    this.rt.cu('cuMemsetD32Async', s.thk.ptr, 0xffffffff, 2 * n, this.rt.stream);
    this.rt.cu('cuMemsetD32Async', s.count.ptr, 0, n, this.rt.stream);
    this.rt.cu('cuMemsetD32Async', s.nfree.ptr, 0, n, this.rt.stream);
  }

  private optin = 0;
  /** The most dynamic shared memory a block may opt in to on this device (bytes). */
  private sharedOptin(): number {
    if (this.optin === 0) {
      const out = new Int32Array(1);
      this.rt.cu('cuDeviceGetAttribute', out, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, this.rt.ordinal);
      this.optin = out[0];
    }
    return this.optin;
  }

  /**
   * The tensor-core kernels' variants for head size HS, or null where they do not apply: they take
   * bf16 q, k, v (so precision 'bf16' only), HS 64 or 128, and shared memory that grows with K + W.
   * Variants as measured fastest in dev/cuda-attention-fast (H100).
   */
  private tensorCoreVariants(HS: number, K: number, W: number, G: number, T: number):
    { fwd: FastForwardVariant; fwdWg: WgForwardVariant | null; win: BackwardVariant; winWg: WgWindowVariant | null; sel: BackwardVariant; selWg: WgSelVariant | null } | null {
    if (this.precision !== 'bf16' || (HS !== 64 && HS !== 128)) return null;
    // The forward (H100, 64K, K = W = 512): at HS 64 two 16-row tiles per warp (1.86 to 1.62 ms),
    // 128 queries a block, or with GQA 64 queries of two heads (1.65 to 1.48 ms at G = 4). HS 128 keeps
    // one tile per warp (two would not fit the registers), and two heads a block with GQA (3.20 to 3.10).
    // Lazy rescaling: 1.675 to 1.642 ms at 64K.
    const GH = G % 2 === 0 ? 2 : 1;
    const fwd: FastForwardVariant = HS === 64
      ? { HS, BQ: GH === 2 ? 64 : 128, WM: 2, GH, OUT: 'f32', META: 'all', STAGES: 2, FASTEXP: true, MASK: 'rows', LAZY: true }
      : { HS, BQ: 64, GH, OUT: 'f32', META: 'all', STAGES: 2, FASTEXP: true, MASK: 'rows', LAZY: true };
    // The backward's selected pairs at HS 64: 128 queries a block (two halves against each gathered key
    // tile, one dK/dV reduction for both; 64K: 3.65 to 2.65 ms) where two such blocks fit an SM's shared
    // memory (K up to about 640), else 64. At HS 128, 128 was slower at 4K and 16K and even at 64K.
    const win: BackwardVariant = { HS, FASTEXP: true, MINB: HS === 64 ? 3 : 0 };
    const wide: BackwardVariant = { HS, FASTEXP: true, QB: 128 };
    const sel = HS === 64 && 2 * (bwdSelShared(wide, K) + 1024) <= this.sharedOptin() + 1024 ? wide : win;
    // The window pairs on Hopper: wgmma with 128-byte swizzled tiles (attention-wg-backward.ts), and dQ by
    // bulk reductions staged in the Q/dO stage each tile has just used (64K: 2.03 to 1.51 to 1.50 ms at
    // HS 64; 3.12 to 2.91 at HS 128, where a staging area of its own left one block an SM: 4.18). HS 64
    // keeps the mma.sync kernel below 8K, where it was faster (4K: 0.174 against 0.186 ms, session 8).
    // Three Q/dO stages at HS 64 (still three blocks an SM): 1.46 to 1.41 ms at 64K (session 12); at
    // HS 128 they leave one block an SM (2.79 to 3.61).
    // At HS 128 dQ is staged in rows rotated against bank conflicts, and each warp adds its own rows by
    // red.global.add.v4 in place of the two bulk reductions and their barrier (ROWQ, session 18: window
    // pairs 2.87 to 2.65 ms at 64K). Each tile's dQ is stored by the first key block to reach it and added
    // to by the others, so prep need not zero dq (OWNQ, needs W > 0; session 20: layer fwd+bwd 8.05 to
    // 7.93 ms at 64K; with GQA 7.38 to 7.31 with the flag read at each tile's start).
    const hopper = this.rt.arch === 'sm_90';
    const winWg: WgWindowVariant | null = !hopper ? null
      : HS === 64 ? (T >= 8192 ? { HS, STAGES: 3, MINB: 3, ASYNCL: true, BULKQ: true, QSTAGE: true, SW: true } : null)
        : { HS, STAGES: 2, ASYNCL: true, BULKQ: true, QSTAGE: true, ROWQ: true, OWNQ: W > 0, SW: true };
    // The selected pairs on Hopper: two warpgroups over each gathered key tile, 128 queries a block at
    // HS 128 (64K: 6.62 to 4.08 ms against mma.sync at 64 queries) and 256 at HS 64 (64K: 2.67 to 2.33 ms
    // against mma.sync at 128; at 128 queries the wgmma kernel was level with it); 1.81 and 3.51 ms since
    // selKeySet skips the candidates no block row selects. Its dK and dV go out a whole row a warp (KVROWS,
    // session 17: 3.43 to 3.21 ms at HS 128, 1.74 to 1.68 at HS 64) where the staging rows fit (K <= 1408 at
    // HS 128); past that, from the accumulators. At HS 128 the dq rows at a head's end go out the same way
    // (QROWS), and a candidate tile of at most 16 keys, most late blocks' (median 2 with random scores at
    // 64K), is taken transposed with the keys as the products' N (NARROW). Session 18, layer forward +
    // backward at 64K: 8.46 to 8.09 ms with ROWQ; QROWS alone gave 0.12 ms, NARROW 0.03. At HS 64 NARROW
    // spills (256 queries a block) and QROWS was not measured.
    const sgBase: WgSelVariant = HS === 64 ? { HS, QB: 256 } : { HS };
    const sgRows: WgSelVariant = HS === 64 ? { ...sgBase, KVROWS: true } : { ...sgBase, KVROWS: true, QROWS: true, NARROW: true };
    const sg = bwdSelWgShared(sgRows, K) <= this.sharedOptin() ? sgRows : sgBase;
    const selWg = hopper && bwdSelWgShared(sg, K) <= this.sharedOptin() ? sg : null;
    // The forward on Hopper: wgmma, warpgroups of 64 queries sharing each K/V tile, stages tracked by
    // mbarriers (attention-wg.ts, session 11). 64K: 1.60 to 1.28 ms at HS 64 with two warpgroups (two
    // blocks an SM at 128 registers); 3.09 to 2.26 at HS 128 with two, 2.10 with three (168 registers).
    // With GQA at HS 64 a block takes 64 positions of two heads of a group (64K, NKV 4: 1.29 to 1.14 ms,
    // session 14); at HS 128 that was level with three warpgroups on one head. At HS 128 four stages, refilled
    // two tiles behind (LAG 2), let a warpgroup run further ahead of the others (1.81 to 1.75 ms, session 15).
    const wgf: WgForwardVariant = HS === 64 ? { HS, OUT: 'f32', NC: 2, STAGES: 4, MINB: 2, GH } : { HS, OUT: 'f32', NC: 3, STAGES: 4, LAG: 2 };
    // (its copies take 32-bit byte offsets within a head's keys)
    const fwdWg = hopper && T * HS * 2 < 2 ** 32 && wgForwardShared(wgf, K, W) <= this.sharedOptin() ? wgf : null;
    const fits = Math.max(fwdWg ? 0 : fastForwardShared(fwd, K, W), bwdSelShared(sel, K), bwdWinShared(win), winWg ? bwdWinWgShared(winWg) : 0) <= this.sharedOptin();
    return fits ? { fwd, fwdWg, win, winWg, sel, selWg } : null;
  }

  /** launch() with dynamic shared memory, raising the kernel's limit past the default 48 KiB on first use. */
  private launchShared(name: string, make: () => KernelSource, grid: [number, number, number], block: number, sharedBytes: number,
    args: KernelArg[]): void {
    this.launch(name, make, grid, block, args, sharedBytes);
  }

  /** The contents of a raw device block (doubles, ints) into host, after the queued work. */
  private downloadRaw<A extends Float64Array | Int32Array>(src: DeviceBlock, host: A): A {
    if (host.byteLength > 0) this.rt.cu('cuMemcpyDtoHAsync_v2', host, src.ptr, host.byteLength, this.rt.stream);
    this.rt.synchronize();
    return host;
  }

  /** Device blocks of attention layers, returned to their arena when the layer is collected. */
  private static readonly layerMemory = new FinalizationRegistry<{ arena: Arena; blocks: DeviceBlock[] }>(({ arena, blocks }) => {
    for (const b of blocks) arena.give(b);
  });


  /** sum of x^2: per-block double partials on the GPU, added on the host in block order. */
  sumSquares(x: CudaBuffer): number {
    const n = checkCount('x.length', x.length);
    const partials = this.rt.arena.take(SUMSQ_BLOCKS * 8);
    try {
      this.launch('sum_squares', sumSquaresSource, SUMSQ_BLOCKS, OPTIM_BLOCK, [partials, x, n]);
      const host = new Float64Array(SUMSQ_BLOCKS);
      this.rt.cu('cuMemcpyDtoHAsync_v2', host, partials.ptr, SUMSQ_BLOCKS * 8, this.rt.stream);
      this.rt.synchronize();
      let ss = 0;
      for (let b = 0; b < SUMSQ_BLOCKS; b++) ss += host[b];
      return ss;
    } finally {
      this.rt.arena.give(partials);
    }
  }

  adamw(p: CudaBuffer, g: CudaBuffer, m: CudaBuffer, v: CudaBuffer, o: AdamwStep): void {
    const n = p.length;
    for (const [name, b] of [['p', p], ['g', g], ['m', m], ['v', v]] as const) {
      if (b.dtype !== 'f32') throw new ArgumentError(name, 'a float32 buffer (parameters and optimizer state stay fp32)', 'bf16');
    }
    this.markWritten(p);
    for (const [name, b] of [['g', g], ['m', m], ['v', v]] as const) need(name, b, n, `(n=${n}, as p)`);
    if (!Number.isInteger(o.step) || o.step < 1) throw new ArgumentError('step', 'an integer >= 1', o.step);
    const bc1 = 1 - Math.pow(o.beta1, o.step);
    const bc2 = 1 - Math.pow(o.beta2, o.step);
    this.launch('adamw', adamwSource, Math.ceil(n / OPTIM_BLOCK), OPTIM_BLOCK,
      [p, g, m, v, n, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, bc1, bc2, o.gradScale]);
  }

  // ---- helpers ------------------------------------------------------------------------------

  /**
   * Column-major C (m, n) = op(A) op(B) + beta C, cuBLAS's terms (the callers write down the
   * row-major mapping). All float32: sgemm, true fp32. Otherwise a mixed-precision product: A and B
   * in bf16 (a float32 weight through its bf16 shadow, any other float32 operand through a bf16
   * copy), C in its own storage, accumulated in fp32 (cublasGemmEx, CUBLAS_COMPUTE_32F).
   */
  private gemm(ta: number, tb: number, m: number, n: number, k: number, A: CudaBuffer, aIsWeight: boolean, lda: number,
    B: CudaBuffer, ldb: number, beta: Float32Array, Cm: CudaBuffer, ldc: number): void {
    this.markWritten(Cm);
    if (A.dtype === 'f32' && B.dtype === 'f32' && Cm.dtype === 'f32') {
      this.rt.blas('cublasSgemm_v2', this.rt.cublas, ta, tb, m, n, k, ONE, A.ptr, lda, B.ptr, ldb, beta, Cm.ptr, ldc);
      return;
    }
    const copies: DeviceBlock[] = [];
    const bf16 = (x: CudaBuffer, weight: boolean): bigint => {
      if (x.dtype === 'bf16') return x.ptr;
      if (weight) return this.shadow(x);
      const copy = this.rt.arena.take(x.length * 2);
      copies.push(copy);
      this.copyToBf16(copy, x, x.length);
      return copy.ptr;
    };
    const a = bf16(A, aIsWeight), b = bf16(B, false);
    const ct = Cm.dtype === 'bf16' ? CUDA_R_16BF : CUDA_R_32F;
    this.rt.blas('cublasGemmEx', this.rt.cublas, ta, tb, m, n, k, ONE, a, CUDA_R_16BF, lda, b, CUDA_R_16BF, ldb, beta, Cm.ptr, ct, ldc,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    for (const c of copies) this.rt.arena.give(c); // reusable at once: later work on the stream runs after the product
  }

  /** dst (bf16, n elements) = src (float32) rounded to nearest even: 8 a thread where n and the addresses allow. */
  private copyToBf16(dst: DeviceBlock, src: CudaBuffer, n: number): void {
    if (n % 8 === 0 && dst.ptr % 16n === 0n && src.ptr % 16n === 0n) {
      this.launch('to_bf16_x8', toBf16x8Source, blocks(n / 8), ELEM_BLOCK, [dst, src, n / 8]);
    } else this.launch('to_bf16', toBf16Source, blocks(n), ELEM_BLOCK, [dst, src, n]);
  }

  /** The address of float32 weight w's bf16 copy, refreshing its root's copy when the root was written since. */
  private shadow(w: CudaBuffer): bigint {
    const root = w.root ?? w;
    let sh = this.shadows.get(root);
    if (sh === undefined) {
      sh = { copy: this.rt.arena.take(root.length * 2), stale: true };
      this.shadows.set(root, sh);
    }
    if (sh.stale) {
      this.copyToBf16(sh.copy, root, root.length);
      sh.stale = false;
    }
    return sh.copy.ptr + BigInt(w.offset * 2);
  }

  /** Marks b's root as written, so its bf16 shadow (if any) is refreshed before the next product reads it. */
  private markWritten(b: CudaBuffer): void {
    const sh = this.shadows.get(b.root ?? b);
    if (sh !== undefined) sh.stale = true;
  }

  /** Forward rotation (overwrites out) or backward (accumulates into out), through a (T, HS/2) cos/sin table. */
  private rope(backward: boolean, out: CudaBuffer, inp: CudaBuffer, B: number, NH: number, T: number, HS: number, theta: number, posOffset: number): void {
    if (HS % 2 !== 0) throw new ArgumentError('HS', 'an even head size (RoPE rotates pairs)', HS);
    if (!Number.isInteger(posOffset) || posOffset < 0) throw new ArgumentError('posOffset', 'an integer >= 0', posOffset);
    const n = B * NH * T * HS, dims = `(B=${B}, NH=${NH}, T=${T}, HS=${HS})`;
    need(backward ? 'dinp' : 'out', out, n, dims);
    need(backward ? 'dout' : 'inp', inp, n, dims);
    const half = HS / 2;
    const tables = this.rt.arena.take(2 * T * half * 4);
    const cosT = tables.ptr, sinT = tables.ptr + BigInt(T * half * 4);
    this.launch('rope_tables', ropeTablesSource, blocks(T * half), ELEM_BLOCK, [cosT, sinT, T, HS, theta, posOffset]);
    this.launch(backward ? 'rope_backward' : 'rope_forward', () => ropeRotateSource({ backward }), blocks(n / 2), ELEM_BLOCK,
      [out, inp, cosT, sinT, B * NH, T, HS]);
    this.rt.arena.give(tables);
  }

  /** out (C) += column sums of x (N, C), in two ordered passes through a double scratch. */
  private columnSums(out: CudaBuffer, x: CudaBuffer, N: number, C: number): void {
    const P = Math.ceil(N / COLUMN_ROWS);
    const partial = this.rt.arena.take(P * C * 8);
    this.launch('column_partials', columnPartialsSource, [P, Math.ceil(C / ROW_BLOCK), 1], ROW_BLOCK, [partial, x, N, C]);
    this.launch('column_finish', columnFinishSource, Math.ceil(C / ROW_BLOCK), ROW_BLOCK, [out, partial, P, C]);
    this.rt.arena.give(partial);
  }

  /**
   * Launches the kernel `name`, compiling it from `make()` on its first use, specialised to the
   * storage of the buffers passed: each bf16 buffer makes its `float*` parameter `bf16*`
   * (kernels/storage.ts), a variant compiled and cached under its own name.
   */
  private launch(name: string, make: () => KernelSource, grid: number | [number, number, number], block: number, args: KernelArg[],
    sharedBytes = 0): void {
    const bf16 = args.map((a) => a instanceof CudaBuffer && a.dtype === 'bf16');
    const key = bf16.some(Boolean) ? `${name}@${bf16.map((b) => (b ? 'h' : '.')).join('')}` : name;
    let k = this.kernels.get(key);
    if (k === undefined) {
      k = this.rt.kernel(specialise(make(), bf16));
      this.kernels.set(key, k);
    }
    // Past the default 48 KiB of dynamic shared memory, opt in to the device's most (less the
    // kernel's static shared memory) on the first launch that needs it, whatever earlier launches of
    // the kernel took (the selection's row bitmap grows with T).
    if (sharedBytes > 48 * 1024 && !this.optedIn.has(key)) {
      const staticBytes = new Int32Array(1);
      this.rt.cu('cuFuncGetAttribute', staticBytes, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, k.fn);
      this.rt.cu('cuFuncSetAttribute', k.fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, this.sharedOptin() - staticBytes[0]);
      this.optedIn.add(key);
    }
    this.rt.launch(k, grid, block, sharedBytes, args.map((a) => (typeof a === 'object' ? a.ptr : a)));
  }

  // ---- imported architectures (GPT-2, GPT-NeoX; issue 6) ------------------------------------
  // LayerNorm, GELU and partial RoPE: kernels in the same files and conventions as RMSNorm, SwiGLU
  // and RoPE. Llama-family models never call them.

  layernormForward(out: CudaBuffer, mean: CudaBuffer, rstd: CudaBuffer, inp: CudaBuffer, weight: CudaBuffer, bias: CudaBuffer, N: number, C: number, eps: number): void {
    const dims = `(N=${N}, C=${C})`;
    need('out', out, N * C, dims);
    need('mean', mean, N, dims);
    need('rstd', rstd, N, dims);
    need('inp', inp, N * C, dims);
    need('weight', weight, C, dims);
    need('bias', bias, C, dims);
    this.launch('layernorm_forward', () => layernormForwardSource({ BLOCK: NORM_BLOCK }), N, NORM_BLOCK,
      [out, mean, rstd, inp, weight, bias, N, C, eps]);
  }

  layernormBackward(dinp: CudaBuffer, dweight: CudaBuffer, dbias: CudaBuffer, dout: CudaBuffer, inp: CudaBuffer, weight: CudaBuffer, mean: CudaBuffer, rstd: CudaBuffer, N: number, C: number): void {
    const dims = `(N=${N}, C=${C})`;
    need('dinp', dinp, N * C, dims);
    need('dweight', dweight, C, dims);
    need('dbias', dbias, C, dims);
    need('dout', dout, N * C, dims);
    need('inp', inp, N * C, dims);
    need('weight', weight, C, dims);
    need('mean', mean, N, dims);
    need('rstd', rstd, N, dims);
    this.launch('layernorm_backward', () => layernormBackwardSource({ BLOCK: NORM_BLOCK }), N, NORM_BLOCK,
      [dinp, dout, inp, weight, mean, rstd, N, C]);
    // dweight: partial column sums of dy * xhat per chunk of rows, then their ordered sum; dbias: column sums of dy
    const P = Math.ceil(N / COLUMN_ROWS);
    const partial = this.rt.arena.take(P * C * 8);
    this.launch('layernorm_weight_partials', layernormWeightPartialsSource, [P, Math.ceil(C / ROW_BLOCK), 1], ROW_BLOCK,
      [partial, dout, inp, mean, rstd, N, C]);
    this.launch('column_finish', columnFinishSource, Math.ceil(C / ROW_BLOCK), ROW_BLOCK, [dweight, partial, P, C]);
    this.rt.arena.give(partial); // reusable at once: later work on the stream runs after these kernels
    this.columnSums(dbias, dout, N, C);
  }

  geluForward(out: CudaBuffer, inp: CudaBuffer, n: number, form: GeluForm): void {
    checkGeluForm(form);
    need('out', out, n, `(n=${n})`);
    need('inp', inp, n, `(n=${n})`);
    this.launch(`gelu_${form}_forward`, () => geluForwardSource({ form }), blocks(n), ELEM_BLOCK, [out, inp, n]);
  }

  geluBackward(dinp: CudaBuffer, dout: CudaBuffer, inp: CudaBuffer, n: number, form: GeluForm): void {
    checkGeluForm(form);
    for (const [name, b] of [['dinp', dinp], ['dout', dout], ['inp', inp]] as const) need(name, b, n, `(n=${n})`);
    this.launch(`gelu_${form}_backward`, () => geluBackwardSource({ form }), blocks(n), ELEM_BLOCK, [dinp, dout, inp, n]);
  }

  ropePartialForward(out: CudaBuffer, inp: CudaBuffer, B: number, NH: number, T: number, HS: number, R: number, theta: number, posOffset: number): void {
    this.ropePartial(false, out, inp, B, NH, T, HS, R, theta, posOffset);
  }

  ropePartialBackward(dinp: CudaBuffer, dout: CudaBuffer, B: number, NH: number, T: number, HS: number, R: number, theta: number, posOffset: number): void {
    this.ropePartial(true, dinp, dout, B, NH, T, HS, R, theta, posOffset);
  }

  /** Partial RoPE: rope_tables for a head of size R, then the pass that rotates R features and passes the rest. */
  private ropePartial(
    backward: boolean, out: CudaBuffer, inp: CudaBuffer, B: number, NH: number, T: number, HS: number, R: number, theta: number, posOffset: number,
  ): void {
    checkRotary(R, HS, posOffset);
    const n = B * NH * T * HS, dims = `(B=${B}, NH=${NH}, T=${T}, HS=${HS})`;
    need(backward ? 'dinp' : 'out', out, n, dims);
    need(backward ? 'dout' : 'inp', inp, n, dims);
    const half = R / 2;
    const tables = this.rt.arena.take(2 * T * half * 4);
    const cosT = tables.ptr, sinT = tables.ptr + BigInt(T * half * 4);
    this.launch('rope_tables', ropeTablesSource, blocks(T * half), ELEM_BLOCK, [cosT, sinT, T, R, theta, posOffset]);
    this.launch(backward ? 'rope_partial_backward' : 'rope_partial_forward', () => ropePartialRotateSource({ backward }),
      blocks(B * NH * T * (HS - half)), ELEM_BLOCK, [out, inp, cosT, sinT, B * NH, T, HS, R]);
    this.rt.arena.give(tables);
  }
}

/** The form names a kernel (and its cache entry): anything but the two known ones is refused. */
function checkGeluForm(form: GeluForm): void {
  if (form !== 'erf' && form !== 'tanh') throw new ArgumentError('form', "'erf' or 'tanh'", form);
}

function checkRotary(R: number, HS: number, posOffset: number): void {
  if (!Number.isInteger(R) || R < 2 || R > HS || R % 2 !== 0) throw new ArgumentError('R', `an even integer in [2, HS=${HS}] (rotated features per head)`, R);
  if (!Number.isInteger(posOffset) || posOffset < 0) throw new ArgumentError('posOffset', 'an integer >= 0', posOffset);
}

function checkCount(name: string, n: number): number {
  if (!Number.isInteger(n) || n < 0 || n > INT32_MAX) throw new ArgumentError(name, `an integer in [0, ${INT32_MAX}]`, n);
  return n;
}

/** Throws ShapeError unless buffer b holds at least n elements. */
function need(name: string, b: CudaBuffer | CudaIntBuffer, n: number, dims: string): void {
  if (!Number.isInteger(n) || n < 0 || n > INT32_MAX) throw new ArgumentError(name, `a shape ${dims} of at most ${INT32_MAX} elements`, n);
  if (b.length < n) throw new ShapeError(name, `at least ${n} elements ${dims}`, `${b.length}`);
}

/**
 * Throws unless every buffer given is float32: the attention kernels read rows with vector loads
 * and keep their tensors in fp32 (the model allocates q, k, v and their gradients so).
 */
function float32Only(bufs: Record<string, CudaBuffer | null>): void {
  for (const [name, b] of Object.entries(bufs)) {
    if (b !== null && b.dtype !== 'f32') throw new ArgumentError(name, 'a float32 buffer (CUDA attention runs in fp32)', 'bf16');
  }
}

/** Rows of a (rows, C) table held in b. */
function rows(b: CudaBuffer, C: number): number {
  return C > 0 ? Math.floor(b.length / C) : 0;
}

function blocks(n: number): number {
  return Math.ceil(n / ELEM_BLOCK);
}

/** float32 -> bfloat16 bits, rounding to nearest even (NaN stays NaN), as kernels/storage.ts's bf16 does on the device. */
export function toBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const b = u[i];
    out[i] = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** bfloat16 bits -> float32 (exact). */
export function fromBf16(h: Uint16Array): Float32Array {
  const u = new Uint32Array(h.length);
  for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
  return new Float32Array(u.buffer);
}
