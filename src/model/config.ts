// Model configuration: plain data with named presets. Validation here is the single gate for
// every shape the kernels later assume (NH % NKV == 0, dim = heads * headSize, ...).

import { ArgumentError } from '../core/errors.js';
import { checkInt } from '../core/check.js';

export const ATTENTION_KINDS = ['dense', 'window', 'sparsek', 'fixed', 'hash', 'qktopk'] as const;
export type AttentionKind = (typeof ATTENTION_KINDS)[number];

export interface ModelConfig {
  vocabSize: number; // V
  layers: number; // L
  dim: number; // C
  heads: number; // NH
  kvHeads: number; // NKV
  ffnDim: number; // hidden width of the SwiGLU MLP
  context: number; // longest sequence the model is trained for (T)
  attention: AttentionKind;
  k: number; // K: selected KV pairs per query (sparsek, qktopk)
  window: number; // W: local window (sparsek, window, fixed, qktopk)
  scoreSlope: number; // eps of SPEC section 2
  hashBuckets: number; // buckets of the hash baseline
  ropeTheta: number;
  normEps: number;
}

export const PRESETS: Record<string, ModelConfig> = {
  /** The `sparsek demo` model: trains in a few minutes on two CPU cores. */
  demo: {
    vocabSize: 1024, layers: 4, dim: 128, heads: 4, kvHeads: 2, ffnDim: 352, context: 256,
    attention: 'sparsek', k: 32, window: 32, scoreSlope: 0.05, hashBuckets: 8, ropeTheta: 10000, normEps: 1e-5,
  },
  /** GPT-2 small's shape (12 layers, width 768, 12 heads) for GPU runs. */
  gpt2small: {
    vocabSize: 4096, layers: 12, dim: 768, heads: 12, kvHeads: 12, ffnDim: 2048, context: 4096,
    attention: 'sparsek', k: 256, window: 256, scoreSlope: 0, hashBuckets: 16, ropeTheta: 10000, normEps: 1e-5,
  },
};

export function headSize(c: ModelConfig): number {
  return c.dim / c.heads;
}

/** Checks every field; returns the config unchanged so calls can be chained. */
export function checkConfig(c: ModelConfig): ModelConfig {
  checkInt('vocabSize', c.vocabSize, 2);
  checkInt('layers', c.layers, 1);
  checkInt('dim', c.dim, 1);
  checkInt('heads', c.heads, 1);
  checkInt('kvHeads', c.kvHeads, 1);
  checkInt('ffnDim', c.ffnDim, 1);
  checkInt('context', c.context, 1);
  checkInt('k', c.k, 0);
  checkInt('window', c.window, 0);
  checkInt('hashBuckets', c.hashBuckets, 2);
  if (c.dim % c.heads !== 0) throw new ArgumentError('dim', `a multiple of heads (${c.heads})`, c.dim);
  if (c.heads % c.kvHeads !== 0) throw new ArgumentError('heads', `a multiple of kvHeads (${c.kvHeads})`, c.heads);
  if (headSize(c) % 2 !== 0) throw new ArgumentError('dim / heads', 'an even head size (rotary embeddings pair dimensions)', headSize(c));
  if (!ATTENTION_KINDS.includes(c.attention)) throw new ArgumentError('attention', `one of ${ATTENTION_KINDS.join(', ')}`, c.attention);
  if (!(c.scoreSlope >= 0 && Number.isFinite(c.scoreSlope))) throw new ArgumentError('scoreSlope', 'a finite number >= 0', c.scoreSlope);
  if (!(c.ropeTheta > 0)) throw new ArgumentError('ropeTheta', 'a positive number', c.ropeTheta);
  if (!(c.normEps > 0)) throw new ArgumentError('normEps', 'a positive number', c.normEps);
  if ((c.attention === 'window' || c.attention === 'fixed') && c.window < 1) {
    throw new ArgumentError('window', `an integer >= 1 for ${c.attention} attention`, c.window);
  }
  return c;
}
