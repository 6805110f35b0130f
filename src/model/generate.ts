// Sampling text from a model (SPEC.md section 7, `sparsek generate`): temperature and nucleus
// (top-p) sampling with a seeded generator. sparsek, window and dense models decode with the
// cache of decode.ts; other attention kinds have no cached form and recompute the forward pass
// over the last `context` tokens for every new token (RecomputeDecoder: correct, and slow by
// design), on whichever backend the model is.

import { Rng } from '../core/random.js';
import { ArgumentError } from '../core/errors.js';
import { ModelConfig } from './config.js';
import { Params } from './params.js';
import { CacheStats, Decoder } from './decode.js';

/** What generate() needs of a decoder: the CPU's Decoder, the GPU's CudaDecoder, or a RecomputeDecoder. */
export interface StepDecoder {
  step(id: number): Float32Array;
  stats(): CacheStats;
  /** Steps through the whole prompt and returns the last logits, where that is cheaper than step by step. */
  prefill?(ids: number[]): Float32Array;
}

/**
 * A decoder without a cache, for the attention kinds that have none (fixed, hash, qktopk): every
 * step runs the model's full forward over the last `context` ids and returns the last row of
 * logits. Works on any backend (the model's).
 * @example
 *   const dec = new RecomputeDecoder(Gpt.cpu(config));   // then upload the parameters
 */
export class RecomputeDecoder<F, I> implements StepDecoder {
  private readonly ids: number[] = [];
  constructor(private readonly model: Gpt<F, I>) {}

  step(id: number): Float32Array {
    return this.prefill([id]);
  }

  prefill(ids: number[]): Float32Array {
    this.ids.push(...ids);
    const ctx = this.ids.slice(-this.model.config.context);
    this.model.forward(ctx, 1, ctx.length);
    const V = this.model.config.vocabSize;
    const be = this.model.be;
    return Float32Array.from(be.download(be.view(this.model.logits, (ctx.length - 1) * V, V)));
  }

  stats(): CacheStats {
    return { bytes: 0, capHits: 0, keysLastStep: 0 };
  }
}

/** A cached decoder whose steps finish later (WebGPU reads results back asynchronously). */
export interface AsyncStepDecoder {
  step(id: number): Promise<Float32Array>;
  stats(): CacheStats;
}
import { Gpt } from './gpt.js';

export interface SampleOptions {
  tokens: number;
  temperature: number; // 0 = greedy
  topP: number; // 1 = no truncation
  seed: number;
  supportCap?: number;
  onToken?: (id: number) => void;
  /** Builds the decoder (default: the CPU Decoder, or a CPU RecomputeDecoder for kinds without a cache). */
  decoder?: () => StepDecoder;
}

export interface GenerationStats {
  tokens: number;
  tokensPerSecond: number; // new tokens only, prompt excluded
  cacheBytesMax: number;
  cacheBytesFinal: number;
  capHits: number;
}

/** Draws an index from logits with temperature and top-p. */
export function sampleLogits(logits: ArrayLike<number>, temperature: number, topP: number, rng: Rng): number {
  const V = logits.length;
  if (temperature === 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i] > max) max = logits[i];
  const probs = new Float64Array(V);
  let sum = 0;
  for (let i = 0; i < V; i++) {
    probs[i] = Math.exp((logits[i] - max) / temperature);
    sum += probs[i];
  }
  let order: number[] | null = null;
  let total = sum;
  if (topP < 1) {
    // Keep the smallest set of most likely tokens whose mass reaches topP.
    order = Array.from({ length: V }, (_, i) => i).sort((a, b) => probs[b] - probs[a]);
    let acc = 0;
    let keep = 0;
    while (keep < V && acc < topP * sum) acc += probs[order[keep++]];
    order = order.slice(0, keep);
    total = acc;
  }
  let r = rng.uniform() * total;
  const ids = order ?? Array.from({ length: V }, (_, i) => i);
  for (const i of ids) {
    r -= probs[i];
    if (r <= 0) return i;
  }
  return ids[ids.length - 1];
}

/** Continues `prompt` (token ids) by opts.tokens tokens; returns the new ids and statistics. */
export function generate(config: ModelConfig, params: Params, prompt: number[], opts: SampleOptions): { ids: number[]; stats: GenerationStats } {
  checkSampling(prompt, opts);
  const rng = new Rng(opts.seed);
  const out: number[] = [];
  const dec: StepDecoder = opts.decoder ? opts.decoder()
    : Decoder.supports(config) ? new Decoder(config, params, { supportCap: opts.supportCap }) : cpuRecompute(config, params);
  let logits: Float32Array = new Float32Array(0);
  if (dec.prefill) logits = dec.prefill(prompt);
  else for (const id of prompt) logits = dec.step(id);
  let maxBytes = dec.stats().bytes;
  const t0 = performance.now();
  for (let n = 0; n < opts.tokens; n++) {
    const id = sampleLogits(logits, opts.temperature, opts.topP, rng);
    out.push(id);
    opts.onToken?.(id);
    if (n + 1 < opts.tokens) logits = dec.step(id);
    maxBytes = Math.max(maxBytes, dec.stats().bytes);
  }
  return { ids: out, stats: statsOf(out.length, t0, maxBytes, dec.stats()) };
}

/**
 * generate() with a decoder whose steps are asynchronous (WebGpuDecoder): the same sampling, the
 * same seed stream, so it draws the same tokens from the same logits.
 */
export async function generateAsync(prompt: number[], dec: AsyncStepDecoder, opts: Omit<SampleOptions, 'decoder' | 'supportCap'>): Promise<{ ids: number[]; stats: GenerationStats }> {
  checkSampling(prompt, opts);
  const rng = new Rng(opts.seed);
  const out: number[] = [];
  let logits: Float32Array = new Float32Array(0);
  for (const id of prompt) logits = await dec.step(id);
  let maxBytes = dec.stats().bytes;
  const t0 = performance.now();
  for (let n = 0; n < opts.tokens; n++) {
    const id = sampleLogits(logits, opts.temperature, opts.topP, rng);
    out.push(id);
    opts.onToken?.(id);
    if (n + 1 < opts.tokens) logits = await dec.step(id);
    maxBytes = Math.max(maxBytes, dec.stats().bytes);
  }
  return { ids: out, stats: statsOf(out.length, t0, maxBytes, dec.stats()) };
}

function cpuRecompute(config: ModelConfig, params: Params): RecomputeDecoder<Float32Array, Int32Array> {
  const model = Gpt.cpu(config);
  model.params.flat.set(params.flat);
  return new RecomputeDecoder(model);
}

function checkSampling(prompt: number[], opts: { tokens: number; temperature: number; topP: number }): void {
  if (!Number.isInteger(opts.tokens) || opts.tokens < 0) throw new ArgumentError('tokens', 'an integer >= 0', opts.tokens);
  if (!(opts.temperature >= 0)) throw new ArgumentError('temperature', 'a number >= 0', opts.temperature);
  if (!(opts.topP > 0 && opts.topP <= 1)) throw new ArgumentError('topP', 'a number in (0, 1]', opts.topP);
  if (prompt.length === 0) throw new ArgumentError('prompt', 'at least one token', '[]');
}

function statsOf(tokens: number, t0: number, maxBytes: number, last: { bytes: number; capHits: number }): GenerationStats {
  const secs = (performance.now() - t0) / 1000;
  return { tokens, tokensPerSecond: tokens / Math.max(secs, 1e-9), cacheBytesMax: maxBytes, cacheBytesFinal: last.bytes, capHits: last.capHits };
}
