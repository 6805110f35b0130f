// Converting a trained model to SparseK attention (SPEC.md sections 2 and 7, `sparsek convert`):
// every weight is kept and each layer gains the scoring network w_score (NKV, C), zero, so that
// with the position slope eps the scores u[h, j] = eps * j rank candidates by recency alone and
// selection starts with the most recent ones. With W >= T every position is in the window and the
// converted model computes the original logits. Not here: reading or writing folders (load.ts,
// io/checkpoint.ts), training (train/train.ts).

import { ArgumentError } from '../core/errors.js';
import { checkInt } from '../core/check.js';
import { ModelConfig, checkConfig } from './config.js';
import { Params, allocParams } from './params.js';

export interface ConvertOptions {
  k: number; // K
  window: number; // W
  scoreSlope: number; // eps
}

/** SPEC's suggested slope for converted models: recency first, learnable away by w_score. */
export const DEFAULT_CONVERT_SLOPE = 0.05;

/**
 * The SparseK version of (config, params): same weights, zero score_proj (kept when the source
 * is already SparseK). The source must use dense or window attention (or SparseK).
 * @example
 *   const sk = convertToSparsek(hf.config, hf.params, { k: 16, window: 64, scoreSlope: 0.05 });
 */
export function convertToSparsek(config: ModelConfig, params: Params, opts: ConvertOptions): { config: ModelConfig; params: Params } {
  checkInt('k', opts.k, 1);
  checkInt('window', opts.window, 0);
  if (!(opts.scoreSlope >= 0 && Number.isFinite(opts.scoreSlope))) throw new ArgumentError('scoreSlope', 'a finite number >= 0', opts.scoreSlope);
  if (!['dense', 'window', 'sparsek'].includes(config.attention)) {
    throw new ArgumentError('source attention', 'dense, window or sparsek (the other kinds have no equivalent to keep)', config.attention);
  }
  const out = checkConfig({ ...config, attention: 'sparsek', k: opts.k, window: opts.window, scoreSlope: opts.scoreSlope });
  const p = allocParams(out);
  const src = new Map(params.specs.map((s, i) => [s.name, params.views[i]]));
  p.specs.forEach((s, i) => {
    const w = src.get(s.name);
    if (w) p.views[i].set(w);
    else if (!s.name.endsWith('self_attn.score_proj.weight')) throw new ArgumentError('params', `a tensor '${s.name}'`, 'missing');
    // score_proj stays zero (allocParams zero-fills): SPEC section 2's initialisation.
  });
  return { config: out, params: p };
}
