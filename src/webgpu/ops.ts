// The model's layers on WebGPU: one method per kernel of src/webgpu/kernels, in llm.c order
// (outputs, inputs, weights, dims), recording a dispatch on the runtime (nothing waits). The
// kernels a model needs are compiled once, before its first forward (Ops.create), so that each
// layer call is synchronous. Inference only: there are no backward ops (docs/webgpu.md).
/// <reference types="@webgpu/types" />

import type { GeluForm } from '../backend.js';
import { GpuRuntime, GpuTensor, Kernel, f32, groups1d, u32 } from './runtime.js';
import { matmulSource, gemvSource, MM_TILE } from './kernels/matmul.js';
import { normSource } from './kernels/norm.js';
import { ropeSource } from './kernels/rope.js';
import { activationSource } from './kernels/activation.js';
import { embeddingSource } from './kernels/embedding.js';
import { addSource, kvMoveSource } from './kernels/layout.js';
import { selectionSource } from './kernels/selection.js';
import { attentionSource } from './kernels/attention.js';
import { WG } from './kernels/common.js';

interface Kernels {
  matmul: Kernel;
  matmulBias: Kernel;
  gemv: Kernel;
  gemvBias: Kernel;
  rmsnorm: Kernel;
  layernorm: Kernel;
  rope: Kernel;
  swiglu: Kernel;
  geluTanh: Kernel;
  geluErf: Kernel;
  embedding: Kernel;
  embeddingLearned: Kernel;
  add: Kernel;
  kvMove: Kernel;
  selection: Kernel;
  attnWindow: Kernel;
  attnSparsek: Kernel;
  attnDecode: Kernel;
}

export class Ops {
  private constructor(readonly rt: GpuRuntime, private readonly k: Kernels) {}

  /** Compiles (or finds in the runtime's cache) every kernel of a model with head size HS. */
  static async create(rt: GpuRuntime, HS: number): Promise<Ops> {
    const entries = await Promise.all([
      rt.kernel('matmul', matmulSource({ bias: false })),
      rt.kernel('matmul+bias', matmulSource({ bias: true })),
      rt.kernel('gemv', gemvSource({ bias: false })),
      rt.kernel('gemv+bias', gemvSource({ bias: true })),
      rt.kernel('rmsnorm', normSource('rms')),
      rt.kernel('layernorm', normSource('layer')),
      rt.kernel('rope', ropeSource()),
      rt.kernel('swiglu', activationSource('swiglu')),
      rt.kernel('gelu_tanh', activationSource('gelu_tanh')),
      rt.kernel('gelu_erf', activationSource('gelu_erf')),
      rt.kernel('embedding', embeddingSource({ learned: false })),
      rt.kernel('embedding+wpe', embeddingSource({ learned: true })),
      rt.kernel('add', addSource()),
      rt.kernel('kv_move', kvMoveSource()),
      rt.kernel('selection', selectionSource()),
      rt.kernel(`attention_window_hs${HS}`, attentionSource({ HS, variant: 'window' })),
      rt.kernel(`attention_sparsek_hs${HS}`, attentionSource({ HS, variant: 'sparsek' })),
      rt.kernel(`attention_decode_hs${HS}`, attentionSource({ HS, variant: 'decode' })),
    ]);
    const [matmul, matmulBias, gemv, gemvBias, rmsnorm, layernorm, rope, swiglu, geluTanh, geluErf, embedding, embeddingLearned, add, kvMove, selection, attnWindow, attnSparsek, attnDecode] = entries;
    return new Ops(rt, { matmul, matmulBias, gemv, gemvBias, rmsnorm, layernorm, rope, swiglu, geluTanh, geluErf, embedding, embeddingLearned, add, kvMove, selection, attnWindow, attnSparsek, attnDecode });
  }

  /** out (N, OC) = inp (N, C) weight^T + bias; weight (OC, C), bias (OC) or null. */
  matmul(out: GpuTensor, inp: GpuTensor, weight: GpuTensor, bias: GpuTensor | null, N: number, C: number, OC: number): void {
    const s = [u32(N), u32(C), u32(OC)];
    const t = bias ? [out, inp, weight, bias] : [out, inp, weight];
    if (N === 1) this.rt.dispatch(bias ? this.k.gemvBias : this.k.gemv, s, t, groups1d(OC, 1));
    else this.rt.dispatch(bias ? this.k.matmulBias : this.k.matmul, s, t, [Math.ceil(OC / MM_TILE), Math.ceil(N / MM_TILE)]);
  }

  /** out (N, C) = RMSNorm(inp) weight, or LayerNorm(inp) weight + bias when bias is given. */
  norm(out: GpuTensor, inp: GpuTensor, weight: GpuTensor, bias: GpuTensor | null, N: number, C: number, eps: number): void {
    const s = [u32(N), u32(C), f32(eps)];
    if (bias) this.rt.dispatch(this.k.layernorm, s, [out, inp, weight, bias], groups1d(N, 1));
    else this.rt.dispatch(this.k.rmsnorm, s, [out, inp, weight], groups1d(N, 1));
  }

  /** In place on x (N, H*HS): rotates the first R features of each head by the rows of cos, sin (N, R/2). */
  rope(x: GpuTensor, cos: GpuTensor, sin: GpuTensor, N: number, H: number, HS: number, R: number): void {
    this.rt.dispatch(this.k.rope, [u32(N), u32(H), u32(HS), u32(R)], [x, cos, sin], groups1d((N * H * R) / 2, WG));
  }

  /** out (n) = silu(gate) up. */
  swiglu(out: GpuTensor, gate: GpuTensor, up: GpuTensor, n: number): void {
    this.rt.dispatch(this.k.swiglu, [u32(n)], [out, gate, up], groups1d(n, WG));
  }

  /** out (n) = GELU(inp), exact ('erf') or the tanh approximation. */
  gelu(out: GpuTensor, inp: GpuTensor, n: number, form: GeluForm): void {
    this.rt.dispatch(form === 'erf' ? this.k.geluErf : this.k.geluTanh, [u32(n)], [out, inp], groups1d(n, WG));
  }

  /** out (N, C) = wte[ids] (+ wpe[pos0 + n] when wpe is given). */
  embedding(out: GpuTensor, ids: GpuTensor, wte: GpuTensor, wpe: GpuTensor | null, N: number, C: number, pos0: number): void {
    const s = [u32(N), u32(C), u32(pos0)];
    if (wpe) this.rt.dispatch(this.k.embeddingLearned, s, [out, ids, wte, wpe], groups1d(N * C, WG));
    else this.rt.dispatch(this.k.embedding, s, [out, ids, wte], groups1d(N * C, WG));
  }

  /** out (n) += a (n). */
  add(out: GpuTensor, a: GpuTensor, n: number): void {
    this.rt.dispatch(this.k.add, [u32(n)], [out, a], groups1d(n, WG));
  }

  /** kc[dst .. +n) = kc[src .. +n), and the same in vc. */
  kvMove(kc: GpuTensor, vc: GpuTensor, dst: number, src: number, n: number): void {
    this.rt.dispatch(this.k.kvMove, [u32(dst), u32(src), u32(n)], [kc, vc], [1]);
  }

  /** Per (KV head, query): Sel_i into sel (NKV, T, K), k_i into count (NKV, T), tau_i into tau (NKV, T), from uflat (T, NKV). */
  selection(sel: GpuTensor, count: GpuTensor, tau: GpuTensor, uflat: GpuTensor, T: number, NKV: number, K: number, W: number, eps: number): void {
    this.rt.dispatch(this.k.selection, [u32(T), u32(NKV), u32(K), u32(W), f32(eps)], [sel, count, tau, uflat], [T, NKV]);
  }

  /**
   * out (T, NH*HS) = attention of q (T, NH*HS) over k, v (T, NKV*HS): each query's window of W
   * positions (dense: pass W = T), then, when `sparse` is given, its selected keys with their gates.
   */
  attention(
    out: GpuTensor, q: GpuTensor, k: GpuTensor, v: GpuTensor,
    sparse: { uflat: GpuTensor; sel: GpuTensor; count: GpuTensor; tau: GpuTensor; K: number; eps: number } | null,
    T: number, NH: number, NKV: number, HS: number, W: number,
  ): void {
    const s = [u32(T), u32(NH), u32(NKV), u32(sparse?.K ?? 0), u32(W), f32(sparse?.eps ?? 0), f32(1 / Math.sqrt(HS)), u32(0), u32(0), u32(0), u32(0)];
    if (sparse) this.rt.dispatch(this.k.attnSparsek, s, [out, q, k, v, sparse.uflat, sparse.sel, sparse.count, sparse.tau], [T, NH]);
    else this.rt.dispatch(this.k.attnWindow, s, [out, q, k, v], [T, NH]);
  }

  /**
   * One query per head, out and q (NH*HS), over the decoder's cache kc, vc (NKV, S, HS): ring
   * slots [0, nRing) with gate 1, then selected slots ring + [0, nSel) with gates (NKV, K).
   */
  decodeAttention(
    out: GpuTensor, q: GpuTensor, kc: GpuTensor, vc: GpuTensor, gates: GpuTensor,
    NH: number, NKV: number, HS: number, K: number, S: number, ring: number, nRing: number, nSel: number,
  ): void {
    const s = [u32(1), u32(NH), u32(NKV), u32(K), u32(0), f32(0), f32(1 / Math.sqrt(HS)), u32(nRing), u32(nSel), u32(S), u32(ring)];
    this.rt.dispatch(this.k.attnDecode, s, [out, q, kc, vc, gates], [1, NH]);
  }
}
