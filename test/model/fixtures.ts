// Shared fixtures of the model tests: a tiny configuration and a deterministic, independent way to
// fill parameters with values large enough that every path of the model (SparseK gates, scores,
// attention) carries a gradient well above float32 noise. Not an oracle: only inputs.

import type { ModelConfig } from '../../src/model/config.js';
import type { Params } from '../../src/model/params.js';

/** A tiny model: V 23, L 2, C 16, NH 4, NKV 2 (GQA, HS 4), context 9. */
export function tinyConfig(over: Partial<ModelConfig> = {}): ModelConfig {
  return {
    vocabSize: 23, layers: 2, dim: 16, heads: 4, kvHeads: 2, ffnDim: 20, context: 9,
    attention: 'sparsek', k: 3, window: 2, scoreSlope: 0, hashBuckets: 4, ropeTheta: 10000, normEps: 1e-5,
    ...over,
  };
}

/** Uniform numbers in [-0.5, 0.5) from a 32-bit LCG: deterministic and independent of src/core/random. */
export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 4294967296 - 0.5;
  };
}

/**
 * Every parameter gets a deterministic value: norm weights 1 +- 0.2, everything else (score_proj
 * included, which initParams leaves at zero) uniform in +-scale/2. With scale 0.8 the scores u spread
 * over about +-1, so SparseK gates sit inside (0, 1) and the selection is not trivial.
 */
export function fillParams(p: Params, seed: number, scale = 0.8): void {
  const r = lcg(seed);
  p.specs.forEach((s, i) => {
    const v = p.views[i];
    for (let j = 0; j < v.length; j++) v[j] = s.init === 'ones' ? 1 + 0.4 * r() : scale * r();
  });
}

/** Token ids in [0, V) from the LCG. */
export function randomIds(n: number, V: number, seed: number): number[] {
  const r = lcg(seed);
  return Array.from({ length: n }, () => Math.min(V - 1, Math.floor((r() + 0.5) * V)));
}

/** The parameter name of every index of params.flat. */
export function flatNames(p: Params): string[] {
  const names: string[] = [];
  p.specs.forEach((s, i) => {
    for (let j = 0; j < p.views[i].length; j++) names.push(s.name);
  });
  return names;
}
