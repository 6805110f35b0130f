// The CUDA attention layer of the fixed, hash and qktopk baselines (SPEC.md section 6): the passes
// of kernels/baselines.ts, forward and backward, queued on the runtime's stream, with the key sets
// of the CPU's layer (src/cpu/attention-layer.ts over src/cpu/kernels/baselines.ts), which the tests
// compare against. Not here: sparsek, dense and window (backend.ts's device layer over
// kernels/attention.ts), bf16 (the buffers must be float32), generation caches (none of these has one).
// The forward keeps what the backward needs in device memory the layer owns: lse, and the key sets
// (qktopk: sel and count; hash: the buckets and the key lists); q, k, v and out must stay unchanged
// until the backward, as for the other device layers.

import type { AttentionConfig } from '../backend.js';
import { checkShape } from '../core/check.js';
import type { AttentionShape } from '../core/check.js';
import { ArgumentError, ShapeError } from '../core/errors.js';
import { baselineOptions } from '../cpu/attention-layer.js';
import { checkBaselineOptions, hashPlanes } from '../cpu/kernels/baselines.js';
import type { CudaAttentionLayer, CudaBuffer } from './backend.js';
import type { Arena, CudaRuntime, DeviceBlock, Kernel, KernelSource } from './runtime.js';
import {
  baselineBackwardKeySource, baselineBackwardQuerySource, baselineForwardSource, baselineKernelName, baselineWarps,
  bucketListsSource, hashBucketsSource, qktopkSelectSource, BUCKET_BLOCK, SELECT_BLOCK,
} from './kernels/baselines.js';
import type { BaselineKernelKind } from './kernels/baselines.js';

const INT32_MAX = 2147483647;

// Persistent blocks of the qktopk selection per multiprocessor: each holds a scratch row of T
// 8-byte keys, so 4 per SM keep the scratch of an H100 (132 SMs) at T = 8192 near 35 MB (L2-sized).
const SELECT_BLOCKS_PER_SM = 4;

/** Compiled kernels per runtime, by entry-point name (names encode every compile-time constant). */
const compiled = new WeakMap<CudaRuntime, Map<string, Kernel>>();

/** Device blocks of layers dropped without dispose(), returned to their arena when collected. */
const layerMemory = new FinalizationRegistry<{ arena: Arena; blocks: DeviceBlock[] }>(({ arena, blocks }) => {
  for (const b of blocks) arena.give(b);
});

/**
 * The GPU attention layer of a fixed, hash or qktopk config: a drop-in for backend.ts's attention()
 * on those kinds. Throws ArgumentError naming a bad shape field or option.
 *
 *     const layer = baselineAttention(be.rt, { attention: 'qktopk', k: 64, window: 64, hashBuckets: 8 }, shape);
 *     layer.forward(out, q, k, v, null); layer.backward(dq, dk, dv, null, dout);
 */
export function baselineAttention(rt: CudaRuntime, c: AttentionConfig, shape: AttentionShape): CudaAttentionLayer {
  const opts = baselineOptions(c);
  const o = opts === null ? null : checkBaselineOptions(opts.kind, opts);
  if (o === null || o.kind === 'dense' || o.kind === 'window') {
    throw new ArgumentError('attention', "'fixed', 'hash' or 'qktopk' (the other kinds have their own CUDA layer)", c.attention);
  }
  const { B, T, NH, NKV, HS } = checkShape(shape);
  if (HS > 1024) throw new ArgumentError('shape.HS', 'at most 1024 on CUDA', HS);
  if (NH > 65535) throw new ArgumentError('shape.NH', 'at most 65535 on CUDA (a grid dimension)', NH);
  if (B > 65535) throw new ArgumentError('shape.B', 'at most 65535 on CUDA (a grid dimension)', B);
  if (B * NH * T * HS > INT32_MAX) throw new ArgumentError('shape', `B * NH * T * HS <= ${INT32_MAX} on CUDA`, B * NH * T * HS);

  const kind: BaselineKernelKind = o.kind;
  const nq = B * NH * T * HS, nkv = B * NKV * T * HS, nu = B * NKV * T, nrow = B * NH * T;
  const dims = `(B=${B}, NH=${NH}, NKV=${NKV}, T=${T}, HS=${HS})`;
  const scale = 1 / Math.sqrt(HS);
  const WPB = baselineWarps(HS);
  const rowGrid: [number, number, number] = [Math.ceil(T / WPB), NH, B];
  const keyGrid: [number, number, number] = [Math.ceil(T / WPB), NKV, B];
  // W as the kernels read it: fixed's block size, qktopk's window, unused by hash
  const W = o.kind === 'hash' ? 0 : o.window;
  const K = o.kind === 'qktopk' ? o.k : 0;
  const Kc = Math.min(K, T); // entries per sel row
  const nb = o.kind === 'hash' ? o.buckets : 0;
  const planesHost = o.kind === 'hash' ? hashPlanes(o.seed, NKV, HS, nb) : null;

  let kernels = compiled.get(rt);
  if (kernels === undefined) compiled.set(rt, (kernels = new Map()));
  const cache = kernels;
  const launch = (make: () => KernelSource, name: string, grid: number | [number, number, number], block: number,
    args: (CudaBuffer | DeviceBlock | number)[]): void => {
    let k = cache.get(name);
    if (k === undefined) {
      k = rt.kernel(make());
      cache.set(name, k);
    }
    rt.launch(k, grid, block, 0, args.map((a) => (typeof a === 'number' ? a : a.ptr)));
  };
  const fwdName = baselineKernelName('forward', kind, HS);
  const bwdQName = baselineKernelName('backward_query', kind, HS);
  const bwdKName = baselineKernelName('backward_key', kind, HS);

  // Device memory the forward leaves for the backward, taken on the first forward.
  const held: DeviceBlock[] = [];
  let registered = false;
  const own = (bytes: number): DeviceBlock => {
    if (!registered) {
      layerMemory.register(layer, { arena: rt.arena, blocks: held }, layer);
      registered = true;
    }
    const b = rt.arena.take(Math.max(4, bytes));
    held.push(b);
    return b;
  };
  interface State {
    lse: DeviceBlock; // (B, NH, T) float
    count: DeviceBlock | null; // qktopk: (B, NH, T) int
    sel: DeviceBlock | null; // qktopk: (B, NH, T, Kc) int, ascending
    planes: DeviceBlock | null; // hash: (NKV, HS, nb/2) double
    qb: DeviceBlock | null; // hash: (B, NH, T) int, bucket of each query
    kb: DeviceBlock | null; // hash: (B, NKV, T) int, bucket of each key
    kstart: DeviceBlock | null; // hash: (B, NKV, nb + 1) int
    kpos: DeviceBlock | null; // hash: (B, NKV, T) int
  }
  let st: State | null = null;
  let last: { out: CudaBuffer; q: CudaBuffer; k: CudaBuffer; v: CudaBuffer } | null = null;

  const layer: CudaAttentionLayer = {
    forward: (out, q, k, v, _u) => {
      need('out', out, nq, dims);
      need('q', q, nq, dims);
      need('k', k, nkv, dims);
      need('v', v, nkv, dims);
      float32Only({ out, q, k, v });
      if (st === null) {
        st = { lse: own(nrow * 4), count: null, sel: null, planes: null, qb: null, kb: null, kstart: null, kpos: null };
        if (kind === 'qktopk') {
          st.count = own(nrow * 4);
          st.sel = own(nrow * Kc * 4);
        } else if (kind === 'hash' && planesHost !== null) {
          st.planes = own(planesHost.byteLength);
          // pageable host memory: the call returns once the bytes are staged, so planesHost may go
          rt.cu('cuMemcpyHtoDAsync_v2', st.planes.ptr, planesHost, planesHost.byteLength, rt.stream);
          st.qb = own(nrow * 4);
          st.kb = own(nu * 4);
          st.kstart = own(B * NKV * (nb + 1) * 4);
          st.kpos = own(nu * 4);
        }
      }
      const s = st;
      if (kind === 'fixed') {
        launch(() => baselineForwardSource(kind, HS), fwdName, rowGrid, 32 * WPB, [out, s.lse, q, k, v, T, NH, NKV, W, scale]);
      } else if (kind === 'hash' && s.planes !== null && s.qb !== null && s.kb !== null && s.kstart !== null && s.kpos !== null) {
        const G = NH / NKV;
        launch(hashBucketsSource, 'baseline_hash_buckets', Math.ceil(nrow / BUCKET_BLOCK), BUCKET_BLOCK,
          [s.qb, q, s.planes, nrow, T, NH, G, HS, nb / 2]);
        launch(hashBucketsSource, 'baseline_hash_buckets', Math.ceil(nu / BUCKET_BLOCK), BUCKET_BLOCK,
          [s.kb, k, s.planes, nu, T, NKV, 1, HS, nb / 2]);
        launch(bucketListsSource, 'baseline_bucket_lists', B * NKV, SELECT_BLOCK, [s.kstart, s.kpos, s.kb, T, nb]);
        launch(() => baselineForwardSource(kind, HS), fwdName, rowGrid, 32 * WPB,
          [out, s.lse, q, k, v, s.qb, s.kstart, s.kpos, nb, T, NH, NKV, W, scale]);
      } else if (kind === 'qktopk' && s.count !== null && s.sel !== null) {
        const G = Math.max(1, Math.min(nrow, SELECT_BLOCKS_PER_SM * rt.multiprocessors));
        const scratch = rt.arena.take(G * T * 8);
        launch(() => qktopkSelectSource(HS), `baseline_qktopk_select_hs${HS}`, G, SELECT_BLOCK,
          [s.count, s.sel, scratch, q, k, B, T, NH, NKV, K, Kc, W]);
        rt.arena.give(scratch); // reusable at once: later work on the stream runs after the selection
        launch(() => baselineForwardSource(kind, HS), fwdName, rowGrid, 32 * WPB,
          [out, s.lse, q, k, v, s.count, s.sel, Kc, T, NH, NKV, W, scale]);
      }
      last = { out, q, k, v };
    },
    backward: (dq, dk, dv, du, dout) => {
      if (last === null || st === null) throw new Error('attention backward called before forward');
      need('dq', dq, nq, dims);
      need('dk', dk, nkv, dims);
      need('dv', dv, nkv, dims);
      need('dout', dout, nq, dims);
      if (du !== null) need('du', du, nu, dims);
      float32Only({ dq, dk, dv, dout });
      const { out, q, k, v } = last;
      const s = st;
      const scratch: DeviceBlock[] = [];
      const take = (bytes: number): DeviceBlock => {
        const b = rt.arena.take(Math.max(4, bytes));
        scratch.push(b);
        return b;
      };
      const D = take(nrow * 4);
      // pass 1: dq and D; pass 2: dk and dv
      if (kind === 'fixed') {
        launch(() => baselineBackwardQuerySource(kind, HS), bwdQName, rowGrid, 32 * WPB, [dq, D, dout, out, s.lse, q, k, v, T, NH, NKV, W, scale]);
        launch(() => baselineBackwardKeySource(kind, HS), bwdKName, keyGrid, 32 * WPB, [dk, dv, dout, s.lse, D, q, k, v, T, NH, NKV, W, scale]);
      } else if (kind === 'hash' && s.qb !== null && s.kb !== null && s.kstart !== null && s.kpos !== null) {
        // the queries of each bucket, for the key pass
        const qstart = take(B * NH * (nb + 1) * 4), qpos = take(nrow * 4);
        launch(bucketListsSource, 'baseline_bucket_lists', B * NH, SELECT_BLOCK, [qstart, qpos, s.qb, T, nb]);
        launch(() => baselineBackwardQuerySource(kind, HS), bwdQName, rowGrid, 32 * WPB,
          [dq, D, dout, out, s.lse, q, k, v, s.qb, s.kstart, s.kpos, nb, T, NH, NKV, W, scale]);
        launch(() => baselineBackwardKeySource(kind, HS), bwdKName, keyGrid, 32 * WPB,
          [dk, dv, dout, s.lse, D, q, k, v, s.kb, qstart, qpos, nb, T, NH, NKV, W, scale]);
      } else if (kind === 'qktopk' && s.count !== null && s.sel !== null) {
        launch(() => baselineBackwardQuerySource(kind, HS), bwdQName, rowGrid, 32 * WPB,
          [dq, D, dout, out, s.lse, q, k, v, s.count, s.sel, Kc, T, NH, NKV, W, scale]);
        launch(() => baselineBackwardKeySource(kind, HS), bwdKName, keyGrid, 32 * WPB,
          [dk, dv, dout, s.lse, D, q, k, v, s.count, s.sel, Kc, T, NH, NKV, W, scale]);
      }
      // no scores: du is 0, as the CPU layer leaves it
      if (du !== null) rt.cu('cuMemsetD32Async', du.ptr, 0, nu, rt.stream);
      for (const b of scratch) rt.arena.give(b); // reusable at once: later work on the stream runs after these kernels
    },
    selections: () => null,
    plan: () => null,
    kernels: 'fp32',
    io: 'f32',
    dispose: () => {
      // Explicit release, so a training step is allocation-neutral; the registry covers layers
      // dropped without dispose().
      layerMemory.unregister(layer);
      registered = false;
      for (const b of held) rt.arena.give(b);
      held.length = 0;
      st = null; // a later forward takes its memory afresh
      last = null;
    },
  };
  return layer;
}

/** Throws ShapeError unless buffer b holds at least n elements. */
function need(name: string, b: CudaBuffer, n: number, dims: string): void {
  if (b.length < n) throw new ShapeError(name, `at least ${n} elements ${dims}`, `${b.length}`);
}

/** Throws unless every buffer given is float32 (the kernels read and write fp32 rows). */
function float32Only(bufs: Record<string, CudaBuffer>): void {
  for (const [name, b] of Object.entries(bufs)) {
    if (b.dtype !== 'f32') throw new ArgumentError(name, 'a float32 buffer (CUDA attention runs in fp32)', b.dtype);
  }
}
