// The CPU backend's attention layer: one exhaustive switch from the configured kind to the CPU
// kernels (SparseK of SPEC section 4, or a baseline of section 6), holding whatever the forward
// pass must leave for the backward pass (SparseK's selection plan).

import { AttentionShape } from '../core/check.js';
import { patternAttentionBackward, patternAttentionForward, planSparsek, sparsekAttentionBackwardInto, sparsekAttentionForwardInto, SparsekPlan } from './kernels/attention.js';
import { BaselineOptions, baselinePattern } from './kernels/baselines.js';
import type { AttentionConfig, AttentionLayer } from '../backend.js';

export function baselineOptions(c: AttentionConfig): BaselineOptions | null {
  switch (c.attention) {
    case 'sparsek': return null;
    case 'dense': return { kind: 'dense' };
    case 'window': return { kind: 'window', window: c.window };
    case 'fixed': return { kind: 'fixed', window: c.window };
    case 'hash': return { kind: 'hash', buckets: c.hashBuckets, seed: 0 };
    case 'qktopk': return { kind: 'qktopk', k: c.k, window: c.window };
  }
}

export function makeAttention(c: AttentionConfig, shape: AttentionShape): AttentionLayer<Float32Array> {
  const opts = baselineOptions(c);
  let last: { q: Float32Array; k: Float32Array; v: Float32Array; u: Float32Array | null; plan: SparsekPlan | null } | null = null;
  const sel = { k: c.k, window: c.window };
  return {
    io: 'f32',
    forward(out, q, k, v, u) {
      if (opts === null) {
        const plan = sparsekAttentionForwardInto(out, { q, k, v, u: u! }, shape, sel);
        last = { q, k, v, u, plan };
      } else {
        patternAttentionForward(out, { q, k, v }, shape, baselinePattern(opts, { q, k, v }, shape));
        last = { q, k, v, u, plan: null };
      }
    },
    dispose() {
      last = null;
    },
    selections() {
      const plan = last?.plan;
      if (!plan) return null;
      return plan.sel.map((f, bh) => {
        const rows = Array.from({ length: plan.T }, (_, i) => f.sel.subarray(i * plan.K, i * plan.K + f.count[i]));
        const gates = rows.map((row, i) => Float64Array.from(row, (j) => Math.min(1, Math.max(0, plan.u[bh * plan.T + j] - f.tau[i]))));
        return { T: plan.T, rows, gates };
      });
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
