// Model configuration: plain data with named presets. Validation here is the single gate for
// every shape the kernels later assume (NH % NKV == 0, dim = heads * headSize, ...).
// The architecture fields (norm, mlp, positions, ...) describe imported Hugging Face families
// (Llama, Qwen2, Mistral, GPT-2, GPT-NeoX; src/io/hf.ts). They are optional: a missing field means
// the native Llama-style choice, so run folders written before the fields existed still load, and
// arch() gives every field with its default filled in.

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
  // ---- architecture (optional; default in brackets) ----
  /** ['rms'] RMSNorm with a weight; 'layer': LayerNorm with weight and bias (GPT-2, NeoX). */
  norm?: NormKind;
  /** ['swiglu'] down(silu(gate x) * up x); 'gelu' (exact, erf) / 'gelu_tanh' (GPT-2's gelu_new): down(act(up x)). */
  mlp?: MlpKind;
  /** ['rope'] rotary embeddings on q and k; 'learned': a (context, C) table added to the token embeddings. */
  positions?: PositionKind;
  /** [HS] RoPE rotates the first rotaryDims features of each head and passes the rest (NeoX rotary_pct). */
  rotaryDims?: number;
  /** [false] x + attn(ln1 x) + mlp(ln2 x) in one step (NeoX), instead of two residual steps. */
  parallelResidual?: boolean;
  /** [false] biases on the q, k, v projections (Qwen2, GPT-2, NeoX). */
  qkvBias?: boolean;
  /** [false] a bias on the attention output projection (GPT-2, NeoX). */
  outBias?: boolean;
  /** [false] biases on the MLP projections (GPT-2, NeoX). */
  mlpBias?: boolean;
  /** [true] the output head is the token embedding; false: a separate lm_head (V, C). */
  tieEmbeddings?: boolean;
}

export const NORM_KINDS = ['rms', 'layer'] as const;
export type NormKind = (typeof NORM_KINDS)[number];
export const MLP_KINDS = ['swiglu', 'gelu', 'gelu_tanh'] as const;
export type MlpKind = (typeof MLP_KINDS)[number];
export const POSITION_KINDS = ['rope', 'learned'] as const;
export type PositionKind = (typeof POSITION_KINDS)[number];

/** The architecture fields of a config with every default filled in. */
export interface Architecture {
  norm: NormKind;
  mlp: MlpKind;
  positions: PositionKind;
  rotaryDims: number; // 0 when positions is 'learned'
  parallelResidual: boolean;
  qkvBias: boolean;
  outBias: boolean;
  mlpBias: boolean;
  tieEmbeddings: boolean;
}

/** The architecture of c, missing fields read as the native model's choice. */
export function arch(c: ModelConfig): Architecture {
  const positions = c.positions ?? 'rope';
  return {
    norm: c.norm ?? 'rms',
    mlp: c.mlp ?? 'swiglu',
    positions,
    rotaryDims: positions === 'rope' ? c.rotaryDims ?? headSize(c) : 0,
    parallelResidual: c.parallelResidual ?? false,
    qkvBias: c.qkvBias ?? false,
    outBias: c.outBias ?? false,
    mlpBias: c.mlpBias ?? false,
    tieEmbeddings: c.tieEmbeddings ?? true,
  };
}

/** True for the native block (RMSNorm, SwiGLU, full RoPE, sequential residual), biases and head aside. */
export function isLlamaBlock(c: ModelConfig): boolean {
  const a = arch(c);
  return a.norm === 'rms' && a.mlp === 'swiglu' && a.positions === 'rope' && a.rotaryDims === headSize(c) && !a.parallelResidual;
}

const KNOWN_KEYS = new Set([
  'vocabSize', 'layers', 'dim', 'heads', 'kvHeads', 'ffnDim', 'context', 'attention', 'k', 'window', 'scoreSlope',
  'hashBuckets', 'ropeTheta', 'normEps', 'norm', 'mlp', 'positions', 'rotaryDims', 'parallelResidual', 'qkvBias',
  'outBias', 'mlpBias', 'tieEmbeddings',
]);

export const PRESETS: Record<string, ModelConfig> = {
  /** The `sparsek demo` model: trains in a few minutes on two CPU cores. */
  demo: {
    vocabSize: 1024, layers: 4, dim: 128, heads: 4, kvHeads: 2, ffnDim: 352, context: 256,
    attention: 'sparsek', k: 32, window: 32, scoreSlope: 0.05, hashBuckets: 8, ropeTheta: 10000, normEps: 1e-5,
  },
  /** GPT-2 small's shape (12 layers, width 768, 12 heads) for GPU runs; eps 0.01 for reach (docs/decisions.md). */
  gpt2small: {
    vocabSize: 4096, layers: 12, dim: 768, heads: 12, kvHeads: 12, ffnDim: 2048, context: 4096,
    attention: 'sparsek', k: 256, window: 256, scoreSlope: 0.01, hashBuckets: 16, ropeTheta: 10000, normEps: 1e-5,
  },
};

export function headSize(c: ModelConfig): number {
  return c.dim / c.heads;
}

/** Checks every field; returns the config unchanged so calls can be chained. */
export function checkConfig(c: ModelConfig): ModelConfig {
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new ArgumentError('model config', 'an object', c);
  for (const key of Object.keys(c)) {
    if (!KNOWN_KEYS.has(key)) throw new ArgumentError(`model config key '${key}'`, `one of ${[...KNOWN_KEYS].join(', ')}`, key);
  }
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
  checkOneOf('norm', c.norm, NORM_KINDS);
  checkOneOf('mlp', c.mlp, MLP_KINDS);
  checkOneOf('positions', c.positions, POSITION_KINDS);
  for (const key of ['parallelResidual', 'qkvBias', 'outBias', 'mlpBias', 'tieEmbeddings'] as const) {
    if (c[key] !== undefined && typeof c[key] !== 'boolean') throw new ArgumentError(key, 'true or false', c[key]);
  }
  if ((c.positions ?? 'rope') === 'rope') {
    if (c.rotaryDims === undefined) {
      if (headSize(c) % 2 !== 0) throw new ArgumentError('dim / heads', 'an even head size (rotary embeddings pair dimensions)', headSize(c));
    } else {
      checkInt('rotaryDims', c.rotaryDims, 2, headSize(c));
      if (c.rotaryDims % 2 !== 0) throw new ArgumentError('rotaryDims', 'an even number (rotary embeddings pair dimensions)', c.rotaryDims);
    }
  } else if (c.rotaryDims !== undefined && c.rotaryDims !== 0) {
    throw new ArgumentError('rotaryDims', `0 or absent with ${c.positions} positions`, c.rotaryDims);
  }
  if (!ATTENTION_KINDS.includes(c.attention)) throw new ArgumentError('attention', `one of ${ATTENTION_KINDS.join(', ')}`, c.attention);
  if (!(c.scoreSlope >= 0 && Number.isFinite(c.scoreSlope))) throw new ArgumentError('scoreSlope', 'a finite number >= 0', c.scoreSlope);
  if (!(c.ropeTheta > 0)) throw new ArgumentError('ropeTheta', 'a positive number', c.ropeTheta);
  if (!(c.normEps > 0)) throw new ArgumentError('normEps', 'a positive number', c.normEps);
  if ((c.attention === 'window' || c.attention === 'fixed') && c.window < 1) {
    throw new ArgumentError('window', `an integer >= 1 for ${c.attention} attention`, c.window);
  }
  return c;
}

function checkOneOf(name: string, v: unknown, allowed: readonly string[]): void {
  if (v !== undefined && !allowed.includes(v as string)) throw new ArgumentError(name, `one of ${allowed.join(', ')}`, v);
}
