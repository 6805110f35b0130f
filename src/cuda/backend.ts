// The CUDA backend: every op of the Backend interface (src/backend.ts) on device 0, fp32, with the
// semantics of the CPU kernels (src/cpu/kernels/*.ts), which the tests compare against. Kernels are
// NVRTC-compiled from kernels/*.ts on first use; the linear layers are cuBLAS sgemm. All work is
// queued on the runtime's one stream, so ops return before the GPU is done: download() and
// synchronize() wait. Not bf16 (later), not multi-GPU. Attention: sparsek, dense and window run on the
// GPU (kernels/selection.ts, kernels/attention.ts); fixed, hash and qktopk still run the CPU layer on
// downloaded q, k, v and upload the result, and say so once on stderr.
// Buffers come from the runtime's caching arena; views alias their parent and own nothing.
// Shapes are checked against buffer lengths on every call (a few comparisons): a wrong shape on
// the GPU would otherwise corrupt memory silently, which on the CPU would throw a RangeError.
// SPEC.md: section 7 (`--device cuda`).

import type { AdamwStep, AttentionConfig, AttentionLayer, Backend } from '../backend.js';
import type { AttentionShape } from '../core/check.js';
import { ArgumentError, ShapeError } from '../core/errors.js';
import { makeAttention } from '../cpu/attention-layer.js';
import { CUBLAS_OP_N, CUBLAS_OP_T } from './ffi.js';
import { cudaRuntime } from './runtime.js';
import type { Arena, ArenaStats, CudaRuntime, DeviceBlock, Kernel, KernelSource } from './runtime.js';
import {
  attentionBackwardKeySource, attentionBackwardQuerySource, attentionForwardSource, attentionKernelName, keyOffsetsSource, meanPrefixSource,
  scoreGradSource, ATTENTION_WARPS, PREFIX_BLOCK,
} from './kernels/attention.js';
import type { AttentionVariant } from './kernels/attention.js';
import { keyIntervalsSource, selectGlobalSource, selectSharedSource, SELECT_BQ } from './kernels/selection.js';
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
import type { GeluForm } from '../backend.js';

/** A float32 buffer in device memory: `length` floats at address `ptr`. */
export class CudaBuffer {
  constructor(
    readonly ptr: bigint,
    readonly length: number,
    /** The arena block this buffer owns; null for a view. */
    readonly block: DeviceBlock | null,
  ) {}
}

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

let attentionFallbackAnnounced = false;

// cuda.h enums used by attention() alone (the others live in ffi.ts).
const CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

/** A GPU attention layer; plan() exposes SparseK's last selection for tests. */
export interface CudaAttentionLayer extends AttentionLayer<CudaBuffer> {
  /**
   * The last forward's selection as the device holds it, rows (B*NKV, T): tau, count and sel
   * (B*NKV, T, K), of which row i's first count[i] entries are Sel_i ascending. null for kinds other
   * than sparsek and before a forward. Synchronises.
   */
  plan(): { tau: Float64Array; count: Int32Array; sel: Int32Array; K: number } | null;
}

/** What a device attention layer's forward keeps for its backward (SparseK's fields are null for dense and window). */
interface AttentionState {
  lse: DeviceBlock; // (B, NH, T) float
  tau: DeviceBlock | null; // (B, NKV, T) double
  thk: DeviceBlock | null; // (B, NKV, T) u64: key of Sel_i's weakest member
  count: DeviceBlock | null; // (B, NKV, T) int: |Sel_i|
  nfree: DeviceBlock | null; // (B, NKV, T) int: |F_i|
  sel: DeviceBlock | null; // (B, NKV, T, K) int
  e: DeviceBlock | null; // (B, NKV, T) int: key j is attended by queries [j, e_j)
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
  private readonly kernels = new Map<string, Kernel>();

  constructor(rt: CudaRuntime = cudaRuntime()) {
    this.rt = rt;
  }

  /** Device memory counters (in use, peak, reserved, driver allocations). */
  counters(): ArenaStats {
    return this.rt.arena.counters();
  }

  // ---- memory -------------------------------------------------------------------------------

  alloc(n: number): CudaBuffer {
    checkCount('n', n);
    const block = this.rt.arena.take(n * 4);
    const buf = new CudaBuffer(block.ptr, n, block);
    this.rt.cu('cuMemsetD32Async', buf.ptr, 0, n, this.rt.stream);
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
    return new CudaBuffer(b.ptr + BigInt(offset * 4), n, null);
  }

  /** Returns b's memory to the arena; a view owns none, so freeing one does nothing (as on the CPU). */
  free(b: CudaBuffer | CudaIntBuffer): void {
    if (b.block !== null) this.rt.arena.give(b.block); // a second free of the same buffer throws there
  }

  length(b: CudaBuffer): number {
    return b.length;
  }

  upload(dst: CudaBuffer, src: Float32Array): void {
    if (src.length > dst.length) throw new ShapeError('upload(src)', `at most ${dst.length} elements (dst's length)`, `${src.length}`);
    if (src.length > 0) this.rt.cu('cuMemcpyHtoDAsync_v2', dst.ptr, src, src.length * 4, this.rt.stream);
  }

  uploadInt(dst: CudaIntBuffer, src: Int32Array): void {
    if (src.length > dst.length) throw new ShapeError('uploadInt(src)', `at most ${dst.length} elements (dst's length)`, `${src.length}`);
    if (src.length > 0) this.rt.cu('cuMemcpyHtoDAsync_v2', dst.ptr, src, src.length * 4, this.rt.stream);
  }

  download(src: CudaBuffer): Float32Array {
    const out = new Float32Array(src.length);
    // From pageable memory the copy completes before the call returns; the sync orders it for sure.
    if (src.length > 0) this.rt.cu('cuMemcpyDtoHAsync_v2', out, src.ptr, src.length * 4, this.rt.stream);
    this.rt.synchronize();
    return out;
  }

  /** The int32 contents of src (for tests and debugging). */
  downloadInt(src: CudaIntBuffer): Int32Array {
    const out = new Int32Array(src.length);
    if (src.length > 0) this.rt.cu('cuMemcpyDtoHAsync_v2', out, src.ptr, src.length * 4, this.rt.stream);
    this.rt.synchronize();
    return out;
  }

  zero(b: CudaBuffer): void {
    if (b.length > 0) this.rt.cu('cuMemsetD32Async', b.ptr, 0, b.length, this.rt.stream);
  }

  /** Sets every element of b to value (a memset of its 32-bit pattern: no kernel). */
  fill(b: CudaBuffer, value: number): void {
    const bits = new Uint32Array(new Float32Array([value]).buffer)[0];
    if (b.length > 0) this.rt.cu('cuMemsetD32Async', b.ptr, bits, b.length, this.rt.stream);
  }

  synchronize(): void {
    this.rt.synchronize();
  }

  // ---- ops ----------------------------------------------------------------------------------

  embeddingForward(out: CudaBuffer, ids: CudaIntBuffer, wte: CudaBuffer, N: number, C: number): void {
    need('out', out, N * C, `(N=${N}, C=${C})`);
    need('ids', ids, N, `(N=${N})`);
    need('wte', wte, C, `(V, C=${C})`);
    this.launch('embedding_forward', embeddingForwardSource, N, ROW_BLOCK, [out.ptr, ids.ptr, wte.ptr, N, C, rows(wte, C)]);
  }

  embeddingBackward(dwte: CudaBuffer, dout: CudaBuffer, ids: CudaIntBuffer, N: number, C: number): void {
    need('dwte', dwte, C, `(V, C=${C})`);
    need('dout', dout, N * C, `(N=${N}, C=${C})`);
    need('ids', ids, N, `(N=${N})`);
    this.launch('embedding_backward', embeddingBackwardSource, [N, Math.ceil(C / EMBEDDING_BLOCK), 1], EMBEDDING_BLOCK,
      [dwte.ptr, dout.ptr, ids.ptr, N, C, rows(dwte, C)]);
  }

  rmsnormForward(out: CudaBuffer, rstd: CudaBuffer, inp: CudaBuffer, weight: CudaBuffer, N: number, C: number, eps: number): void {
    need('out', out, N * C, `(N=${N}, C=${C})`);
    need('rstd', rstd, N, `(N=${N})`);
    need('inp', inp, N * C, `(N=${N}, C=${C})`);
    need('weight', weight, C, `(C=${C})`);
    this.launch('rmsnorm_forward', () => rmsnormForwardSource({ BLOCK: NORM_BLOCK }), N, NORM_BLOCK,
      [out.ptr, rstd.ptr, inp.ptr, weight.ptr, N, C, eps]);
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
      [dinp.ptr, dout.ptr, inp.ptr, weight.ptr, rstd.ptr, N, C]);
    // dweight: pass 1 partial column sums of dy * x * r per chunk of rows, pass 2 their ordered sum
    const P = Math.ceil(N / COLUMN_ROWS);
    const partial = this.rt.arena.take(P * C * 8);
    this.launch('rmsnorm_weight_partials', rmsnormWeightPartialsSource, [P, Math.ceil(C / ROW_BLOCK), 1], ROW_BLOCK,
      [partial.ptr, dout.ptr, inp.ptr, rstd.ptr, N, C]);
    this.launch('column_finish', columnFinishSource, Math.ceil(C / ROW_BLOCK), ROW_BLOCK, [dweight.ptr, partial.ptr, P, C]);
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
    this.rt.blas('cublasSgemm_v2', this.rt.cublas, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, ONE, weight.ptr, C, inp.ptr, C, ZERO, out.ptr, OC);
    if (bias !== null) this.launch('add_bias', addBiasSource, blocks(N * OC), ELEM_BLOCK, [out.ptr, bias.ptr, N, OC]);
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
    const h = this.rt.cublas;
    this.rt.blas('cublasSgemm_v2', h, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, ONE, weight.ptr, C, dout.ptr, OC, ONE, dinp.ptr, C);
    this.rt.blas('cublasSgemm_v2', h, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, ONE, inp.ptr, C, dout.ptr, OC, ONE, dweight.ptr, C);
    if (dbias !== null) this.columnSums(dbias, dout, N, OC);
  }

  toHeads(out: CudaBuffer, inp: CudaBuffer, B: number, T: number, NH: number, HS: number): void {
    const n = B * T * NH * HS, dims = `(B=${B}, T=${T}, NH=${NH}, HS=${HS})`;
    need('out', out, n, dims);
    need('inp', inp, n, dims);
    this.launch('to_heads', toHeadsSource, blocks(n), ELEM_BLOCK, [out.ptr, inp.ptr, B, T, NH, HS]);
  }

  fromHeads(out: CudaBuffer, inp: CudaBuffer, B: number, T: number, NH: number, HS: number): void {
    const n = B * T * NH * HS, dims = `(B=${B}, T=${T}, NH=${NH}, HS=${HS})`;
    need('out', out, n, dims);
    need('inp', inp, n, dims);
    this.launch('from_heads', fromHeadsSource, blocks(n), ELEM_BLOCK, [out.ptr, inp.ptr, B, T, NH, HS]);
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
    this.launch('scores_to_heads', scoresToHeadsSource, blocks(n), ELEM_BLOCK, [u.ptr, uFlat.ptr, B, T, NKV, eps]);
  }

  scoresFromHeads(duFlat: CudaBuffer, du: CudaBuffer, B: number, T: number, NKV: number): void {
    const n = B * T * NKV, dims = `(B=${B}, T=${T}, NKV=${NKV})`;
    need('duFlat', duFlat, n, dims);
    need('du', du, n, dims);
    this.launch('scores_from_heads', scoresFromHeadsSource, blocks(n), ELEM_BLOCK, [duFlat.ptr, du.ptr, B, T, NKV]);
  }

  swigluForward(out: CudaBuffer, gate: CudaBuffer, up: CudaBuffer, n: number): void {
    need('out', out, n, `(n=${n})`);
    need('gate', gate, n, `(n=${n})`);
    need('up', up, n, `(n=${n})`);
    this.launch('swiglu_forward', swigluForwardSource, blocks(n), ELEM_BLOCK, [out.ptr, gate.ptr, up.ptr, n]);
  }

  swigluBackward(dgate: CudaBuffer, dup: CudaBuffer, dout: CudaBuffer, gate: CudaBuffer, up: CudaBuffer, n: number): void {
    for (const [name, b] of [['dgate', dgate], ['dup', dup], ['dout', dout], ['gate', gate], ['up', up]] as const) need(name, b, n, `(n=${n})`);
    this.launch('swiglu_backward', swigluBackwardSource, blocks(n), ELEM_BLOCK, [dgate.ptr, dup.ptr, dout.ptr, gate.ptr, up.ptr, n]);
  }

  addInPlace(out: CudaBuffer, a: CudaBuffer, n: number): void {
    need('out', out, n, `(n=${n})`);
    need('a', a, n, `(n=${n})`);
    this.launch('add_in_place', addInPlaceSource, blocks(n), ELEM_BLOCK, [out.ptr, a.ptr, n]);
  }

  crossEntropyForward(losses: CudaBuffer, probs: CudaBuffer, logits: CudaBuffer, targets: CudaIntBuffer, N: number, V: number): void {
    need('losses', losses, N, `(N=${N})`);
    need('probs', probs, N * V, `(N=${N}, V=${V})`);
    need('logits', logits, N * V, `(N=${N}, V=${V})`);
    need('targets', targets, N, `(N=${N})`);
    this.launch('cross_entropy_forward', () => crossEntropyForwardSource({ BLOCK: LOSS_BLOCK }), N, LOSS_BLOCK,
      [losses.ptr, probs.ptr, logits.ptr, targets.ptr, N, V]);
  }

  crossEntropyBackward(dlogits: CudaBuffer, scale: number, probs: CudaBuffer, targets: CudaIntBuffer, N: number, V: number): void {
    need('dlogits', dlogits, N * V, `(N=${N}, V=${V})`);
    need('probs', probs, N * V, `(N=${N}, V=${V})`);
    need('targets', targets, N, `(N=${N})`);
    this.launch('cross_entropy_backward', crossEntropyBackwardSource, blocks(N * V), ELEM_BLOCK,
      [dlogits.ptr, probs.ptr, targets.ptr, scale, N, V]);
  }

  /**
   * The attention layer. sparsek, dense and window run on the GPU: SparseK's selection
   * (kernels/selection.ts), then attention over the window and the selected keys
   * (kernels/attention.ts), forward and backward, all queued on the stream. fixed, hash and qktopk
   * have no CUDA kernels yet: they run the CPU layer (src/cpu/attention-layer.ts) on host copies,
   * synchronising each call, announced once per process.
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
        return this.hostAttention(c, shape);
    }
  }

  /** attention() for sparsek, dense (W = T) and window: see kernels/attention.ts for the passes. */
  private deviceAttention(c: AttentionConfig, shape: AttentionShape): CudaAttentionLayer {
    const { B, T, NH, NKV, HS } = shape;
    for (const [name, x] of [['B', B], ['T', T], ['NH', NH], ['NKV', NKV], ['HS', HS]] as const) {
      if (!Number.isInteger(x) || x < 1) throw new ArgumentError(`shape.${name}`, 'an integer >= 1', x);
    }
    if (NH % NKV !== 0) throw new ArgumentError('shape.NH', `a multiple of shape.NKV (${NKV})`, NH);
    if (HS > 1024) throw new ArgumentError('shape.HS', 'at most 1024 on CUDA', HS);
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
    const cap = this.selectCapacity();
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
    const plan = (): { tau: Float64Array; count: Int32Array; sel: Int32Array; K: number } | null => {
      if (st === null || st.tau === null || st.count === null || st.sel === null) return null;
      return { tau: this.downloadRaw(st.tau, new Float64Array(nu)), count: this.downloadRaw(st.count, new Int32Array(nu)),
        sel: this.downloadRaw(st.sel, new Int32Array(nu * K)), K };
    };
    const layer: CudaAttentionLayer = {
      forward: (out, q, k, v, u) => {
        need('out', out, nq, dims);
        need('q', q, nq, dims);
        need('k', k, nkv, dims);
        need('v', v, nkv, dims);
        if (sparse) {
          if (u === null) throw new ArgumentError('u', `the scores (B, NKV, T) ${dims} of SparseK attention`, null);
          need('u', u, nu, dims);
        }
        if (st === null) {
          st = { lse: own(B * NH * T * 4), tau: null, thk: null, count: null, nfree: null, sel: null, e: null };
          if (sparse) {
            st.tau = own(nu * 8);
            st.thk = own(nu * 8);
            st.count = own(nu * 4);
            st.nfree = own(nu * 4);
            st.sel = own(nu * K * 4);
            st.e = own(nu * 4);
          }
        }
        const s = st;
        if (sparse && u !== null) this.sparsekSelect(s, u, BH, T, K, W, cap);
        const o = attentionVariant(HS, sparse, [q, k, v]);
        this.launch(attentionKernelName('attention_forward', o), () => attentionForwardSource(o), [rows, NH, B], 32 * ATTENTION_WARPS,
          [out.ptr, s.lse.ptr, q.ptr, k.ptr, v.ptr, u?.ptr ?? nothing, s.tau?.ptr ?? nothing, s.count?.ptr ?? nothing, s.sel?.ptr ?? nothing,
            T, NH, NKV, K, W, scale]);
        last = { out, q, k, v, u };
      },
      backward: (dq, dk, dv, du, dout) => {
        if (last === null || st === null) throw new Error('attention backward called before forward');
        need('dq', dq, nq, dims);
        need('dk', dk, nkv, dims);
        need('dv', dv, nkv, dims);
        need('dout', dout, nq, dims);
        if (du !== null) need('du', du, nu, dims);
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
        const off = sparse ? take(BH * (T + 1) * 4) : null;
        const dgk = sparse ? take(nu * K * 4) : null;
        const mean = sparse ? take(nu * 8) : null;
        if (off !== null && s.e !== null) this.launch('sparsek_key_offsets', keyOffsetsSource, BH, PREFIX_BLOCK, [off.ptr, s.e.ptr, T, W]);
        // pass 1: dq, D, gate gradients; pass 2: dk, dv
        this.launch(attentionKernelName('attention_backward_query', o), () => attentionBackwardQuerySource(o), [rows, NKV, B], 32 * ATTENTION_WARPS,
          [dq.ptr, D.ptr, mean?.ptr ?? nothing, dgk?.ptr ?? nothing, dout.ptr, out.ptr, s.lse.ptr, q.ptr, k.ptr, v.ptr, u?.ptr ?? nothing,
            s.tau?.ptr ?? nothing, s.count?.ptr ?? nothing, s.sel?.ptr ?? nothing, s.nfree?.ptr ?? nothing, off?.ptr ?? nothing, T, NH, NKV, K, W, scale]);
        this.launch(attentionKernelName('attention_backward_key', o), () => attentionBackwardKeySource(o), [rows, NKV, B], 32 * ATTENTION_WARPS,
          [dk.ptr, dv.ptr, dout.ptr, s.lse.ptr, D.ptr, q.ptr, k.ptr, v.ptr, u?.ptr ?? nothing, s.tau?.ptr ?? nothing, s.e?.ptr ?? nothing,
            T, NH, NKV, W, scale]);
        if (du !== null && u !== null && mean !== null && off !== null && dgk !== null && s.tau !== null && s.e !== null) {
          const P = take(BH * (T + 1) * 8);
          this.launch('sparsek_mean_prefix', meanPrefixSource, BH, PREFIX_BLOCK, [P.ptr, mean.ptr, T]);
          this.launch('sparsek_score_grad', scoreGradSource, blocks(nu), ELEM_BLOCK,
            [du.ptr, u.ptr, s.tau.ptr, s.e.ptr, off.ptr, dgk.ptr, P.ptr, BH, T, K, W]);
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
   * SparseK's selection of every (b, KV head) row into s (kernels/selection.ts): pass 1 all tiles
   * with S in shared memory, pass 2 the tiles flagged as too large for it, then each key's interval.
   */
  private sparsekSelect(s: AttentionState, u: CudaBuffer, BH: number, T: number, K: number, W: number, cap: number): void {
    if (s.tau === null || s.thk === null || s.count === null || s.nfree === null || s.sel === null || s.e === null) return;
    const ntiles = Math.ceil(T / SELECT_BQ);
    const jbits = T > 1 ? 32 - Math.clz32(T - 1) : 0;
    const flags = this.rt.arena.take(BH * ntiles * 4);
    this.launchShared(`sparsek_select_shared_c${cap}`, () => selectSharedSource({ CAP: cap }), [ntiles, BH, 1], SELECT_BQ, 16 * cap,
      [s.tau.ptr, s.thk.ptr, s.count.ptr, s.nfree.ptr, s.sel.ptr, flags.ptr, u.ptr, T, K, W, jbits]);
    let capG = 1;
    while (capG < T) capG *= 2;
    const G = Math.min(this.rt.multiprocessors, ntiles * BH);
    const scratch = this.rt.arena.take(G * 2 * capG * 8);
    this.launch('sparsek_select_global', selectGlobalSource, G, SELECT_BQ,
      [s.tau.ptr, s.thk.ptr, s.count.ptr, s.nfree.ptr, s.sel.ptr, flags.ptr, scratch.ptr, u.ptr, T, K, W, jbits, ntiles, BH, capG]);
    this.launch('sparsek_key_intervals', keyIntervalsSource, blocks(BH * T), ELEM_BLOCK, [s.e.ptr, u.ptr, s.thk.ptr, BH, T, W]);
    this.rt.arena.give(flags);
    this.rt.arena.give(scratch);
  }

  /** Entries of the selection's shared-memory set S: 4096 (64 KiB) where the device lets a block opt in to that much, else 2048. */
  private selectCapacity(): number {
    const out = new Int32Array(1);
    this.rt.cu('cuDeviceGetAttribute', out, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, 0);
    return out[0] >= 16 * 4096 + 8192 ? 4096 : 2048;
  }

  /** launch() with dynamic shared memory, raising the kernel's limit past the default 48 KiB on first use. */
  private launchShared(name: string, make: () => KernelSource, grid: [number, number, number], block: number, sharedBytes: number,
    args: (bigint | number)[]): void {
    let k = this.kernels.get(name);
    if (k === undefined) {
      k = this.rt.kernel(make());
      if (sharedBytes > 48 * 1024) this.rt.cu('cuFuncSetAttribute', k.fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, sharedBytes);
      this.kernels.set(name, k);
    }
    this.rt.launch(k, grid, block, sharedBytes, args);
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

  /**
   * attention() for fixed, hash and qktopk, the CPU's (src/cpu/attention-layer.ts) on host copies:
   * forward downloads q, k, v, u and uploads out; backward downloads dout and uploads dq, dk, dv, du.
   * Each call synchronises the stream. The fallback is announced once per process.
   */
  private hostAttention(c: AttentionConfig, shape: AttentionShape): CudaAttentionLayer {
    if (!attentionFallbackAnnounced) {
      attentionFallbackAnnounced = true;
      console.warn(`sparsek: CUDA has no ${c.attention} attention kernels yet; it runs on the CPU (q, k, v copied each layer)`);
    }
    const cpu = makeAttention(c, shape);
    const { B, T, NH, NKV, HS } = shape;
    const nq = B * NH * T * HS, nkv = B * NKV * T * HS, nu = B * NKV * T;
    const dims = `(B=${B}, NH=${NH}, NKV=${NKV}, T=${T}, HS=${HS})`;
    const host = (b: CudaBuffer, n: number): Float32Array => this.download(b).subarray(0, n);
    return {
      forward: (out, q, k, v, u) => {
        need('out', out, nq, dims);
        need('q', q, nq, dims);
        need('k', k, nkv, dims);
        need('v', v, nkv, dims);
        if (u !== null) need('u', u, nu, dims);
        const hostOut = new Float32Array(nq);
        cpu.forward(hostOut, host(q, nq), host(k, nkv), host(v, nkv), u === null ? null : host(u, nu));
        this.upload(out, hostOut);
      },
      backward: (dq, dk, dv, du, dout) => {
        need('dq', dq, nq, dims);
        need('dk', dk, nkv, dims);
        need('dv', dv, nkv, dims);
        if (du !== null) need('du', du, nu, dims);
        const hq = new Float32Array(nq), hk = new Float32Array(nkv), hv = new Float32Array(nkv);
        const hu = du === null ? null : new Float32Array(nu);
        cpu.backward(hq, hk, hv, hu, host(dout, nq));
        this.upload(dq, hq);
        this.upload(dk, hk);
        this.upload(dv, hv);
        if (du !== null && hu !== null) this.upload(du, hu);
      },
      selections: () => cpu.selections(),
      plan: () => null,
      dispose: () => cpu.dispose(),
    };
  }

  /** sum of x^2: per-block double partials on the GPU, added on the host in block order. */
  sumSquares(x: CudaBuffer): number {
    const n = checkCount('x.length', x.length);
    const partials = this.rt.arena.take(SUMSQ_BLOCKS * 8);
    try {
      this.launch('sum_squares', sumSquaresSource, SUMSQ_BLOCKS, OPTIM_BLOCK, [partials.ptr, x.ptr, n]);
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
    for (const [name, b] of [['g', g], ['m', m], ['v', v]] as const) need(name, b, n, `(n=${n}, as p)`);
    if (!Number.isInteger(o.step) || o.step < 1) throw new ArgumentError('step', 'an integer >= 1', o.step);
    const bc1 = 1 - Math.pow(o.beta1, o.step);
    const bc2 = 1 - Math.pow(o.beta2, o.step);
    this.launch('adamw', adamwSource, Math.ceil(n / OPTIM_BLOCK), OPTIM_BLOCK,
      [p.ptr, g.ptr, m.ptr, v.ptr, n, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, bc1, bc2, o.gradScale]);
  }

  // ---- helpers ------------------------------------------------------------------------------

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
      [out.ptr, inp.ptr, cosT, sinT, B * NH, T, HS]);
    this.rt.arena.give(tables);
  }

  /** out (C) += column sums of x (N, C), in two ordered passes through a double scratch. */
  private columnSums(out: CudaBuffer, x: CudaBuffer, N: number, C: number): void {
    const P = Math.ceil(N / COLUMN_ROWS);
    const partial = this.rt.arena.take(P * C * 8);
    this.launch('column_partials', columnPartialsSource, [P, Math.ceil(C / ROW_BLOCK), 1], ROW_BLOCK, [partial.ptr, x.ptr, N, C]);
    this.launch('column_finish', columnFinishSource, Math.ceil(C / ROW_BLOCK), ROW_BLOCK, [out.ptr, partial.ptr, P, C]);
    this.rt.arena.give(partial);
  }

  /** Launches the kernel `name`, compiling it from `make()` on its first use. */
  private launch(name: string, make: () => KernelSource, grid: number | [number, number, number], block: number, args: (bigint | number)[]): void {
    let k = this.kernels.get(name);
    if (k === undefined) {
      k = this.rt.kernel(make());
      this.kernels.set(name, k);
    }
    this.rt.launch(k, grid, block, 0, args);
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
      [out.ptr, mean.ptr, rstd.ptr, inp.ptr, weight.ptr, bias.ptr, N, C, eps]);
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
      [dinp.ptr, dout.ptr, inp.ptr, weight.ptr, mean.ptr, rstd.ptr, N, C]);
    // dweight: partial column sums of dy * xhat per chunk of rows, then their ordered sum; dbias: column sums of dy
    const P = Math.ceil(N / COLUMN_ROWS);
    const partial = this.rt.arena.take(P * C * 8);
    this.launch('layernorm_weight_partials', layernormWeightPartialsSource, [P, Math.ceil(C / ROW_BLOCK), 1], ROW_BLOCK,
      [partial.ptr, dout.ptr, inp.ptr, mean.ptr, rstd.ptr, N, C]);
    this.launch('column_finish', columnFinishSource, Math.ceil(C / ROW_BLOCK), ROW_BLOCK, [dweight.ptr, partial.ptr, P, C]);
    this.rt.arena.give(partial); // reusable at once: later work on the stream runs after these kernels
    this.columnSums(dbias, dout, N, C);
  }

  geluForward(out: CudaBuffer, inp: CudaBuffer, n: number, form: GeluForm): void {
    checkGeluForm(form);
    need('out', out, n, `(n=${n})`);
    need('inp', inp, n, `(n=${n})`);
    this.launch(`gelu_${form}_forward`, () => geluForwardSource({ form }), blocks(n), ELEM_BLOCK, [out.ptr, inp.ptr, n]);
  }

  geluBackward(dinp: CudaBuffer, dout: CudaBuffer, inp: CudaBuffer, n: number, form: GeluForm): void {
    checkGeluForm(form);
    for (const [name, b] of [['dinp', dinp], ['dout', dout], ['inp', inp]] as const) need(name, b, n, `(n=${n})`);
    this.launch(`gelu_${form}_backward`, () => geluBackwardSource({ form }), blocks(n), ELEM_BLOCK, [dinp.ptr, dout.ptr, inp.ptr, n]);
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
      blocks(B * NH * T * (HS - half)), ELEM_BLOCK, [out.ptr, inp.ptr, cosT, sinT, B * NH, T, HS, R]);
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

/** Rows of a (rows, C) table held in b. */
function rows(b: CudaBuffer, C: number): number {
  return C > 0 ? Math.floor(b.length / C) : 0;
}

function blocks(n: number): number {
  return Math.ceil(n / ELEM_BLOCK);
}
