// The decoder language model on WebGPU, inference only: the layer list of src/model/gpt.ts
// (read that file for the math) recorded as WGSL dispatches, with one read back at the end of a
// forward. One sequence at a time (B = 1), fp32 throughout. Every architecture field of
// config.ts is honoured (RMSNorm or LayerNorm, SwiGLU or GELU, full, partial or no RoPE, learned
// positions, biases, untied head, parallel residual); the attention kinds are sparsek, window and
// dense, and the others throw DeviceError. Activations are scratch buffers shared by all layers,
// allocated for the sequence length of the call and kept until it changes.
// Decoding with the constant-memory cache is decode.ts, on the same weights and kernels.
// Browser-safe; node.ts makes the device under Node.
/// <reference types="@webgpu/types" />

import { ArgumentError, DeviceError } from '../core/errors.js';
import { ropeTables } from '../cpu/kernels/rope.js';
import { ATTENTION_KINDS, Architecture, ModelConfig, arch, headSize } from '../model/config.js';
import type { Params } from '../model/params.js';
import { allocParamsOn } from '../model/params.js';
import type { GeluForm } from '../backend.js';
import { Ops } from './ops.js';
import type { GpuRuntime, GpuTensor } from './runtime.js';

/** Attention kinds with WebGPU kernels. */
export const WEBGPU_ATTENTION = ['sparsek', 'window', 'dense'] as const;

/** Throws DeviceError when config has a part this backend does not run. */
export function checkWebGpuConfig(c: ModelConfig): void {
  if (!(WEBGPU_ATTENTION as readonly string[]).includes(c.attention)) {
    const others = ATTENTION_KINDS.filter((k) => !(WEBGPU_ATTENTION as readonly string[]).includes(k));
    throw new DeviceError('webgpu', `attention '${c.attention}' has no WebGPU kernel (supported: ${WEBGPU_ATTENTION.join(', ')}; ${others.join(', ')} run on the cpu or cuda devices)`);
  }
  const HS = headSize(c);
  if (HS > 1024) throw new DeviceError('webgpu', `head size ${HS} is above the attention kernel's limit of 1024`);
}

/** Scratch activations of one forward over T positions (B = 1), reused by every layer. */
interface Acts {
  T: number;
  ids: GpuTensor; // (T) u32
  cos: GpuTensor; // (T, R/2)
  sin: GpuTensor; // (T, R/2)
  x: GpuTensor; // (T, C) residual stream
  x2: GpuTensor; // (T, C) after the attention residual
  ln: GpuTensor; // (T, C)
  q: GpuTensor; // (T, NH*HS)
  k: GpuTensor; // (T, NKV*HS)
  v: GpuTensor; // (T, NKV*HS)
  uflat: GpuTensor; // (T, NKV) scores before the slope
  sel: GpuTensor; // (NKV, T, K) i32
  count: GpuTensor; // (NKV, T) u32
  tau: GpuTensor; // (NKV, T)
  att: GpuTensor; // (T, NH*HS)
  gate: GpuTensor; // (T, F)
  up: GpuTensor; // (T, F)
  h: GpuTensor; // (T, F)
  logits: GpuTensor; // (T, V)
}

/** A model's weights in device memory (one buffer per tensor) and its compiled kernels. */
export class WebGpuModel {
  readonly arch: Architecture;
  private acts: Acts | null = null;
  private disposed = false;

  private constructor(readonly rt: GpuRuntime, readonly ops: Ops, readonly config: ModelConfig, readonly w: Params<GpuTensor>) {
    this.arch = arch(config);
  }

  /**
   * Uploads host parameters and compiles the kernels.
   * @example
   *   const m = await WebGpuModel.create(await nodeRuntime(), config, params);
   *   const logits = await m.logits(ids);   // (T, V)
   */
  static async create(rt: GpuRuntime, config: ModelConfig, params: Params): Promise<WebGpuModel> {
    checkWebGpuConfig(config);
    const ops = await Ops.create(rt, headSize(config));
    // allocParamsOn with views that are buffers of their own: WebGPU binds whole buffers here
    // (sub-buffer bindings would need 256-byte aligned offsets).
    let n = 0;
    const w = allocParamsOn(config, {
      alloc: () => rt.tensor(1, 'params (unused: every tensor has its own buffer)'),
      view: (_flat, _off, len) => rt.tensor(len, params.specs[n++].name),
    });
    w.views.forEach((t, i) => rt.write(t, params.views[i]));
    return new WebGpuModel(rt, ops, config, w);
  }

  /** Logits (T, V) of one sequence of T >= 1 token ids, row t predicting the token after ids[t]. */
  async logits(ids: ArrayLike<number>): Promise<Float32Array> {
    if (this.disposed) throw new ArgumentError('model', 'a model that was not disposed', 'disposed');
    const c = this.config;
    const T = checkIds(ids, c);
    if (this.arch.positions === 'learned' && T > c.context) {
      throw new ArgumentError('ids', `at most context (${c.context}) tokens: learned position embeddings end there`, T);
    }
    const a = this.ensure(T);
    this.rt.write(a.ids, Uint32Array.from(ids));
    this.forward(a, T);
    return this.rt.read(a.logits, T * c.vocabSize);
  }

  /** Records the forward pass over a.ids (T) into a.logits. */
  private forward(a: Acts, T: number): void {
    const c = this.config;
    const ar = this.arch;
    const o = this.ops;
    const w = this.w;
    const C = c.dim;
    const HS = headSize(c);
    const NH = c.heads;
    const NKV = c.kvHeads;
    const Fw = c.ffnDim;
    const gelu: GeluForm = ar.mlp === 'gelu' ? 'erf' : 'tanh';
    // dense attends every earlier position: a window as long as the sequence
    const W = c.attention === 'dense' ? T : c.window;
    o.embedding(a.x, a.ids, w.wte, w.wpe, T, C, 0);
    for (let l = 0; l < c.layers; l++) {
      const L = w.layers[l];
      o.norm(a.ln, a.x, L.ln1, L.ln1b, T, C, c.normEps);
      o.matmul(a.q, a.ln, L.wq, L.bq, T, C, NH * HS);
      o.matmul(a.k, a.ln, L.wk, L.bk, T, C, NKV * HS);
      o.matmul(a.v, a.ln, L.wv, L.bv, T, C, NKV * HS);
      if (ar.positions === 'rope') {
        o.rope(a.q, a.cos, a.sin, T, NH, HS, ar.rotaryDims);
        o.rope(a.k, a.cos, a.sin, T, NKV, HS, ar.rotaryDims);
      }
      if (L.wscore) {
        o.matmul(a.uflat, a.ln, L.wscore, null, T, C, NKV);
        o.selection(a.sel, a.count, a.tau, a.uflat, T, NKV, c.k, c.window, c.scoreSlope);
        o.attention(a.att, a.q, a.k, a.v, { uflat: a.uflat, sel: a.sel, count: a.count, tau: a.tau, K: c.k, eps: c.scoreSlope }, T, NH, NKV, HS, W);
      } else {
        o.attention(a.att, a.q, a.k, a.v, null, T, NH, NKV, HS, W);
      }
      o.matmul(a.x2, a.att, L.wo, L.bo, T, NH * HS, C);
      o.add(a.x2, a.x, T * C);
      // The MLP reads the stream after attention, or (parallel residual) the same x as attention.
      o.norm(a.ln, ar.parallelResidual ? a.x : a.x2, L.ln2, L.ln2b, T, C, c.normEps);
      if (L.wgate) {
        o.matmul(a.gate, a.ln, L.wgate, L.bgate, T, C, Fw);
        o.matmul(a.up, a.ln, L.wup, L.bup, T, C, Fw);
        o.swiglu(a.h, a.gate, a.up, T * Fw);
      } else {
        o.matmul(a.up, a.ln, L.wup, L.bup, T, C, Fw);
        o.gelu(a.h, a.up, T * Fw, gelu);
      }
      o.matmul(a.x, a.h, L.wdown, L.bdown, T, Fw, C); // x is free again: x2 holds the stream
      o.add(a.x, a.x2, T * C);
    }
    o.norm(a.ln, a.x, w.lnf, w.lnfb, T, C, c.normEps);
    o.matmul(a.logits, a.ln, w.lmHead ?? w.wte, null, T, C, c.vocabSize);
  }

  /** The scratch activations for T positions (reallocated when T changes). */
  private ensure(T: number): Acts {
    if (this.acts?.T === T) return this.acts;
    if (this.acts) this.releaseActs(this.acts);
    const c = this.config;
    const rt = this.rt;
    const HS = headSize(c);
    const C = c.dim;
    const R = this.arch.rotaryDims;
    const f = (n: number, label: string) => rt.tensor(n, label);
    const a: Acts = {
      T,
      ids: f(T, 'ids'), cos: f((T * R) / 2, 'rope cos'), sin: f((T * R) / 2, 'rope sin'),
      x: f(T * C, 'x'), x2: f(T * C, 'x2'), ln: f(T * C, 'ln'),
      q: f(T * c.heads * HS, 'q'), k: f(T * c.kvHeads * HS, 'k'), v: f(T * c.kvHeads * HS, 'v'),
      uflat: f(T * c.kvHeads, 'uflat'), sel: f(c.kvHeads * T * c.k, 'sel'), count: f(c.kvHeads * T, 'count'), tau: f(c.kvHeads * T, 'tau'),
      att: f(T * c.heads * HS, 'att'), gate: f(T * c.ffnDim, 'gate'), up: f(T * c.ffnDim, 'up'), h: f(T * c.ffnDim, 'h'),
      logits: f(T * c.vocabSize, 'logits'),
    };
    if (R > 0) {
      const tab = ropeTables(T, R, c.ropeTheta, 0);
      rt.write(a.cos, tab.cos);
      rt.write(a.sin, tab.sin);
    }
    this.acts = a;
    return a;
  }

  private releaseActs(a: Acts): void {
    for (const [key, t] of Object.entries(a)) if (key !== 'T') this.rt.free(t as GpuTensor);
  }

  /** Frees the model's device memory (the runtime stays; it may hold other models). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (this.acts) this.releaseActs(this.acts);
    this.acts = null;
    for (const t of this.w.views) this.rt.free(t);
    this.rt.free(this.w.flat);
  }
}

/** Checks token ids against the vocabulary; returns their count T >= 1. */
export function checkIds(ids: ArrayLike<number>, c: ModelConfig): number {
  const T = ids?.length;
  if (typeof T !== 'number' || T < 1) throw new ArgumentError('ids', 'at least one token id', T);
  for (let t = 0; t < T; t++) {
    const id = ids[t];
    if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new ArgumentError(`ids[${t}]`, `a token id in [0, ${c.vocabSize})`, id);
  }
  return T;
}
