// The backend interface: every op the model runs, over buffers a device owns. One folder per
// device implements it (src/cpu/, src/cuda/); the model calls only this interface, and a device
// is chosen by an exhaustive switch over Device (src/device.ts). Signatures follow the CPU
// kernels (llm.c order: outputs, inputs, weights, dims); backward ops ACCUMULATE into gradients
// unless their comment says they overwrite.
//
// F is the device's float buffer, I its int32 buffer. A view (sub-buffer) aliases its parent.

import type { AttentionShape } from './core/check.js';
import type { AttentionKind } from './model/config.js';

export type Device = 'cpu' | 'cuda';

/**
 * How a float buffer is stored: 'f32' always float32; 'act' in the backend's activation precision
 * (bfloat16 on CUDA with precision 'bf16', else float32). The model asks for 'act' for the tensors
 * that feed and leave matrix products; parameters, gradients, optimizer state, statistics and
 * SparseK's scores stay float32.
 */
export type Storage = 'f32' | 'act';

/** A backend's activation precision: 'bf16' stores 'act' buffers as bfloat16, arithmetic stays fp32. */
export type Precision = 'fp32' | 'bf16';

/** The two GELU forms of imported checkpoints: exact x Phi(x), or the tanh approximation. */
export type GeluForm = 'erf' | 'tanh';

/** What an attention layer needs to know of the model config. */
export interface AttentionConfig {
  attention: AttentionKind;
  k: number; // K
  window: number; // W
  hashBuckets: number;
}

/** The selected positions of every query of one (b, KV head), and their gates p. */
export interface Selection {
  T: number;
  rows: Int32Array[]; // rows[i]: Sel_i, ascending
  gates: Float64Array[]; // gates[i][c]: p of rows[i][c]
}

/** One layer's attention: forward, then backward for the inputs of the last forward. */
export interface AttentionLayer<F> {
  /**
   * The storage this layer's kernels read q, k, v and dout in and write out in: 'act' where they take
   * the backend's activation precision (CUDA's tensor-core kernels take bf16), else 'f32'. Either
   * storage is accepted where 'act' is named (float32 through a copy); u, dq, dk, dv and du are
   * float32 always.
   */
  readonly io: Storage;
  /** Overwrites out (B, NH, T, HS) from q (B, NH, T, HS), k, v (B, NKV, T, HS) and u (B, NKV, T) or null. */
  forward(out: F, q: F, k: F, v: F, u: F | null): void;
  /** Overwrites dq, dk, dv (and du when scored) from dout. */
  backward(dq: F, dk: F, dv: F, du: F | null, dout: F): void;
  /** SparseK's selection from the last forward, per (b, KV head): each query's selected positions and their gates; null for other kinds. */
  selections(): Selection[] | null;
  /** Returns the layer's own memory (selection lists, saved statistics) to the device. */
  dispose(): void;
}

export interface Backend<F, I> {
  readonly device: Device;
  readonly precision: Precision;
  /** A zero-filled float buffer of n elements, stored as `storage` says (default 'f32'). */
  alloc(n: number, storage?: Storage): F;
  allocInt(n: number): I;
  /** The n elements of b starting at offset, sharing b's memory. */
  view(b: F, offset: number, n: number): F;
  free(b: F | I): void;
  length(b: F): number;
  upload(dst: F, src: Float32Array): void;
  uploadInt(dst: I, src: Int32Array): void;
  download(src: F): Float32Array;
  zero(b: F): void;
  /** Waits for queued work (no-op on the CPU). */
  synchronize(): void;

  embeddingForward(out: F, ids: I, wte: F, N: number, C: number): void;
  embeddingBackward(dwte: F, dout: F, ids: I, N: number, C: number): void;
  rmsnormForward(out: F, rstd: F, inp: F, weight: F, N: number, C: number, eps: number): void;
  rmsnormBackward(dinp: F, dweight: F, dout: F, inp: F, weight: F, rstd: F, N: number, C: number): void;
  matmulForward(out: F, inp: F, weight: F, bias: F | null, N: number, C: number, OC: number): void;
  matmulBackward(dinp: F, dweight: F, dbias: F | null, dout: F, inp: F, weight: F, N: number, C: number, OC: number): void;
  /** Overwrites out (B, NH, T, HS) from inp (B, T, NH*HS); fromHeads is the inverse. */
  toHeads(out: F, inp: F, B: number, T: number, NH: number, HS: number): void;
  fromHeads(out: F, inp: F, B: number, T: number, NH: number, HS: number): void;
  ropeForward(out: F, inp: F, B: number, NH: number, T: number, HS: number, theta: number, posOffset: number): void;
  ropeBackward(dinp: F, dout: F, B: number, NH: number, T: number, HS: number, theta: number, posOffset: number): void;
  /** Overwrites u (B, NKV, T) = transpose of uFlat (B*T, NKV) + eps * t; scoresFromHeads overwrites the transpose back. */
  scoresToHeads(u: F, uFlat: F, B: number, T: number, NKV: number, eps: number): void;
  scoresFromHeads(duFlat: F, du: F, B: number, T: number, NKV: number): void;
  swigluForward(out: F, gate: F, up: F, n: number): void;
  swigluBackward(dgate: F, dup: F, dout: F, gate: F, up: F, n: number): void;
  /** out += a (n elements). */
  addInPlace(out: F, a: F, n: number): void;
  /** LayerNorm with weight and bias (GPT-2, NeoX imports); overwrites out, mean (N) and rstd (N). */
  layernormForward(out: F, mean: F, rstd: F, inp: F, weight: F, bias: F, N: number, C: number, eps: number): void;
  layernormBackward(dinp: F, dweight: F, dbias: F, dout: F, inp: F, weight: F, mean: F, rstd: F, N: number, C: number): void;
  /** GELU of n elements: 'erf' exact (NeoX), 'tanh' the tanh approximation (GPT-2's gelu_new). */
  geluForward(out: F, inp: F, n: number, form: GeluForm): void;
  geluBackward(dinp: F, dout: F, inp: F, n: number, form: GeluForm): void;
  /** RoPE on the first R of each head's HS features, the rest passed through (NeoX rotary_pct); R = HS is ropeForward. */
  ropePartialForward(out: F, inp: F, B: number, NH: number, T: number, HS: number, R: number, theta: number, posOffset: number): void;
  ropePartialBackward(dinp: F, dout: F, B: number, NH: number, T: number, HS: number, R: number, theta: number, posOffset: number): void;
  crossEntropyForward(losses: F, probs: F, logits: F, targets: I, N: number, V: number): void;
  crossEntropyBackward(dlogits: F, scale: number, probs: F, targets: I, N: number, V: number): void;
  attention(c: AttentionConfig, shape: AttentionShape): AttentionLayer<F>;

  /** sum of x^2 over the whole buffer, on the host (a synchronisation point). */
  sumSquares(x: F): number;
  /** One AdamW step on one tensor (src/train/optim.ts), its gradient first scaled by gradScale. */
  adamw(p: F, g: F, m: F, v: F, o: AdamwStep): void;
}

/** The scalars of one AdamW step. */
export interface AdamwStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number; // 0 for tensors without decay
  step: number; // from 1
  gradScale: number; // clipping factor (1 when not clipped)
}
