// The model's attention layer: one exhaustive switch from the configured kind to the CPU kernels
// (SparseK of SPEC section 4, or a baseline of section 6), holding whatever the forward pass
// must leave for the backward pass (SparseK's selection plan).

import { AttentionShape } from '../core/check.js';
import { patternAttentionBackward, patternAttentionForward, planSparsek, sparsekAttentionBackwardInto, sparsekAttentionForwardInto, SparsekPlan } from '../cpu/kernels/attention.js';
import { BaselineOptions, baselinePattern } from '../cpu/kernels/baselines.js';
import { ModelConfig } from './config.js';

export interface AttentionLayer {
  /** out (B, NH, T, HS) from q (B, NH, T, HS), k, v (B, NKV, T, HS), u (B, NKV, T) or null. */
  forward(out: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, u: Float32Array | null): void;
  /** Overwrites dq, dk, dv (and du when scored) from dout, for the inputs of the last forward. */
  backward(dq: Float32Array, dk: Float32Array, dv: Float32Array, du: Float32Array | null, dout: Float32Array): void;
  /** SparseK's selection from the last forward (for selection maps), null for other kinds. */
  lastPlan(): SparsekPlan | null;
}

export function baselineOptions(c: ModelConfig): BaselineOptions | null {
  switch (c.attention) {
    case 'sparsek': return null;
    case 'dense': return { kind: 'dense' };
    case 'window': return { kind: 'window', window: c.window };
    case 'fixed': return { kind: 'fixed', window: c.window };
    case 'hash': return { kind: 'hash', buckets: c.hashBuckets, seed: 0 };
    case 'qktopk': return { kind: 'qktopk', k: c.k, window: c.window };
  }
}

export function makeAttention(c: ModelConfig, shape: AttentionShape): AttentionLayer {
  const opts = baselineOptions(c);
  let last: { q: Float32Array; k: Float32Array; v: Float32Array; u: Float32Array | null; plan: SparsekPlan | null } | null = null;
  const sel = { k: c.k, window: c.window };
  return {
    forward(out, q, k, v, u) {
      if (opts === null) {
        const plan = sparsekAttentionForwardInto(out, { q, k, v, u: u! }, shape, sel);
        last = { q, k, v, u, plan };
      } else {
        patternAttentionForward(out, { q, k, v }, shape, baselinePattern(opts, { q, k, v }, shape));
        last = { q, k, v, u, plan: null };
      }
    },
    lastPlan() {
      return last?.plan ?? null;
    },
    backward(dq, dk, dv, du, dout) {
      if (!last) throw new Error('attention backward called before forward');
      const { q, k, v, u, plan } = last;
      if (opts === null) {
        sparsekAttentionBackwardInto(dq, dk, dv, du!, dout, { q, k, v, u: u! }, shape, sel, plan ?? planSparsek(u!, shape, sel));
      } else {
        patternAttentionBackward(dq, dk, dv, dout, { q, k, v }, shape, baselinePattern(opts, { q, k, v }, shape));
      }
    },
  };
}
