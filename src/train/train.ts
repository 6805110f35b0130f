// The training loop (SPEC.md sections 7-8): data → tokenizer → model → AdamW steps with warm-up,
// cosine decay and clipping → metrics, validation and checkpoints in a run folder.
// Deterministic on the CPU: the seed fixes init and batch order, and a checkpoint holds the
// sampler's state, so `--resume` continues with exactly the losses of an uninterrupted run.

import { Rng } from '../core/random.js';
import { ModelConfig, checkConfig } from '../model/config.js';
import { Gpt } from '../model/gpt.js';
import { Params, allocParams, allocParamsOn, initParams } from '../model/params.js';
import type { Backend, Device, Precision } from '../backend.js';
import { withBackend } from '../device.js';
import { loadCorpus, splitDocuments } from '../data/corpus.js';
import { Tokenizer, ByteTokenizer, trainBpe } from '../tokenizer/index.js';
import { clipScale, learningRate } from './optim.js';
import { Batch, encodeDocuments, evalBatches, sampleBatch } from './data.js';
import { Progress, formatCount } from './progress.js';
import { RunState, checkNewFolder, loadRun, saveRun } from '../io/checkpoint.js';
import { checkInt } from '../core/check.js';
import { ArgumentError, DivergenceError } from '../core/errors.js';

export interface TrainConfig {
  data: string; // sotu | brown | a file or folder
  tokenizer: 'bpe' | 'byte';
  batch: number; // B
  steps: number; // total optimizer steps (fixed up front, so the schedule and --resume agree)
  minutes: number | null; // when set, steps is derived from the measured speed of the first steps
  lr: number;
  minLr: number;
  warmup: number;
  weightDecay: number;
  gradClip: number;
  seed: number;
  evalEvery: number;
  evalRows: number;
  checkpointEvery: number;
  valFraction: number;
  device: Device;
  /** 'bf16': mixed precision on CUDA (bf16 activations and product operands, fp32 accumulation, fp32 master weights and moments). */
  precision: Precision;
}

export const DEFAULT_TRAIN: TrainConfig = {
  data: 'sotu', tokenizer: 'bpe', batch: 8, steps: 300, minutes: null, lr: 3e-3, minLr: 3e-4, warmup: 20,
  weightDecay: 0.1, gradClip: 1, seed: 1, evalEvery: 50, evalRows: 32, checkpointEvery: 100, valFraction: 0.1,
  device: 'cpu', precision: 'fp32',
};

export interface Metric {
  step: number;
  loss?: number;
  valLoss?: number;
  lr?: number;
  gradNorm?: number;
  tokensPerSecond?: number;
  elapsedSeconds?: number;
}

export interface TrainResult {
  out: string;
  steps: number;
  finalLoss: number;
  valLoss: number;
  tokensPerSecond: number;
  seconds: number;
}

export function checkTrainConfig(t: TrainConfig): TrainConfig {
  checkInt('batch', t.batch, 1);
  checkInt('steps', t.steps, 1);
  checkInt('seed', t.seed, 0);
  checkInt('warmup', t.warmup, 0);
  checkInt('evalEvery', t.evalEvery, 1);
  checkInt('evalRows', t.evalRows, 1);
  checkInt('checkpointEvery', t.checkpointEvery, 1);
  if (t.minutes !== null && !(t.minutes > 0)) throw new ArgumentError('minutes', 'a positive number', t.minutes);
  if (!(t.lr > 0)) throw new ArgumentError('lr', 'a positive learning rate', t.lr);
  if (t.tokenizer !== 'bpe' && t.tokenizer !== 'byte') throw new ArgumentError('tokenizer', "'bpe' or 'byte'", t.tokenizer);
  return t;
}

/** Data ready to train on: the tokenizer and both splits as token streams. */
export interface Prepared {
  tokenizer: Tokenizer;
  train: Int32Array;
  val: Int32Array;
}

export async function prepareData(t: TrainConfig, vocabSize: number, tokenizer?: Tokenizer): Promise<Prepared> {
  const docs = await loadCorpus(t.data);
  const split = splitDocuments(docs, { valFraction: t.valFraction, seed: 0 });
  const tok = tokenizer ?? (t.tokenizer === 'byte' ? new ByteTokenizer() : trainBpe(split.train.map((d) => d.text), vocabSize, { maxBytes: 3_000_000 }));
  return {
    tokenizer: tok,
    train: encodeDocuments(split.train.map((d) => d.text), (s) => tok.encode(s)),
    val: encodeDocuments(split.val.map((d) => d.text), (s) => tok.encode(s)),
  };
}

/** Mean loss over the fixed validation rows. */
export function evaluate<F, I>(model: Gpt<F, I>, batches: Batch[], T: number): number {
  let sum = 0;
  let n = 0;
  for (const b of batches) {
    const rows = b.inputs.length / T;
    sum += model.forward(b.inputs, rows, T, b.targets) * rows;
    n += rows;
  }
  return sum / n;
}

export interface TrainHooks {
  quiet?: boolean;
  log?: (line: string) => void;
  /** Called after every step, once its metric is recorded (tests interrupt runs here). */
  onStep?: (step: number, metric: Metric) => void;
  /** Data-parallel training (src/train/distributed.ts): this process is one rank of several. */
  parallel?: DataParallel;
}

/**
 * One rank of data-parallel training. Every rank runs this loop with the same configs and seed,
 * draws the same global batch of B rows and trains on rows [rank B/N, (rank + 1) B/N); reduce makes
 * the gradients and loss those of the whole batch, so clipping and AdamW see what one process with
 * batch B would see. Rank 0 alone writes the run folder.
 */
export interface DataParallel {
  readonly rank: number;
  readonly world: number; // N; divides B
  /** After backward: replaces grads (the flat gradient buffer) by its mean over ranks; returns the mean of the ranks' losses. */
  reduce<F, I>(be: Backend<F, I>, grads: F, loss: number): Promise<number>;
  /** After the last step, with the final parameters (the launcher checks that all ranks agree). */
  finish<F, I>(be: Backend<F, I>, params: F): void;
}

/**
 * Trains a model into the run folder `out`. With resume, continues the run found there (its
 * configs win over the ones passed in, except steps/minutes which may extend it). Without resume,
 * a folder that already holds a model is refused (CheckpointError) before anything is written.
 */
export async function train(
  modelConfig: ModelConfig, trainConfig: TrainConfig, out: string, opts: { resume?: boolean; init?: TrainInit } & TrainHooks = {},
): Promise<TrainResult> {
  const log = opts.log ?? ((s: string) => process.stderr.write(s + '\n'));
  let mc = checkConfig(modelConfig);
  let tc = checkTrainConfig(trainConfig);
  let state: RunState | null = null;
  if (opts.resume) {
    state = await loadRun(out, { optimizer: true });
    mc = state.model;
    tc = { ...state.train, steps: Math.max(state.train.steps, trainConfig.steps), device: trainConfig.device };
    log(`resuming ${out} at step ${state.step} of ${tc.steps}`);
  } else {
    checkNewFolder(out, 'continue it with resume (--resume), or train into a new folder');
  }
  const init = state ? undefined : opts.init;
  if (init && init.params.flat.length !== allocParams(mc).flat.length) {
    throw new ArgumentError('init.params', `parameters of the model config (${allocParams(mc).flat.length} numbers)`, init.params.flat.length);
  }
  const data = await prepareData(tc, mc.vocabSize, state?.tokenizer ?? init?.tokenizer);
  if (!state && !init) mc = { ...mc, vocabSize: data.tokenizer.vocabSize };
  const setup = { mc, tc, state, init, data, out, opts, log };
  return withBackend(tc.device, { run: (be) => trainOn(be, setup) }, { precision: tc.precision ?? 'fp32' }); // runs saved before precision existed were fp32
}

/** Fine-tuning: start from these weights and tokenizer (fresh optimizer, step 0) instead of an init. */
export interface TrainInit {
  params: Params;
  tokenizer: Tokenizer;
}

interface Setup {
  mc: ModelConfig;
  tc: TrainConfig;
  state: RunState | null;
  init?: TrainInit;
  data: Prepared;
  out: string;
  opts: TrainHooks;
  log: (line: string) => void;
}

/** The step loop on one backend: everything lives in its memory; checkpoints copy to the host. */
async function trainOn<F, I>(be: Backend<F, I>, s: Setup): Promise<TrainResult> {
  const { mc, state, data, out, opts, log } = s;
  let tc = s.tc;
  const T = mc.context;
  const B = tc.batch;
  const model = new Gpt(mc, be);
  const host = allocParams(mc); // parameters on the host: init, checkpoints
  if (state) host.flat.set(state.params.flat);
  else if (s.init) host.flat.set(s.init.params.flat);
  else initParams(host, mc, tc.seed);
  be.upload(model.params.flat, host.flat);
  const m = allocParamsOn(mc, be); // AdamW moments, laid out like the parameters
  const v = allocParamsOn(mc, be);
  if (state?.m && state.v) {
    be.upload(m.flat, state.m);
    be.upload(v.flat, state.v);
  }
  const rng = new Rng(tc.seed);
  if (state) rng.state = state.rng;
  let step = state?.step ?? 0;
  let elapsed = state?.elapsedSeconds ?? 0;
  const metrics: Metric[] = [];
  const dp = opts.parallel ?? null;
  const rank = dp?.rank ?? 0;
  const world = dp?.world ?? 1;
  if (B % world !== 0) throw new ArgumentError('batch', `a multiple of the ${world} data-parallel ranks`, B);
  const rows = B / world; // this rank's share of the batch: rows [rank rows, (rank + 1) rows)
  const val = evalBatches(data.val, rows, T, tc.evalRows); // batches of `rows`: no more memory than a training step
  const decay = model.params.specs.map((sp) => sp.decay);
  const nParams = host.flat.length;
  log(`model: ${mc.layers} layers, width ${mc.dim}, ${mc.heads} heads (${mc.kvHeads} KV), ${mc.attention} attention` +
    (mc.attention === 'sparsek' ? ` K=${mc.k} W=${mc.window}` : mc.window ? ` W=${mc.window}` : '') +
    `, context ${T}, vocab ${mc.vocabSize}: ${(nParams / 1e6).toFixed(2)}M parameters, on ${be.device}`);
  log(`data: ${tc.data}, ${formatCount(data.train.length)} training and ${formatCount(data.val.length)} validation tokens`);
  const save = async () => {
    host.flat.set(be.download(model.params.flat));
    const hm = Float32Array.from(be.download(m.flat));
    const hv = Float32Array.from(be.download(v.flat));
    await saveRun(out, { model: mc, train: tc, params: host, m: hm, v: hv, step, rng: rng.state, elapsedSeconds: elapsed, tokenizer: data.tokenizer }, metrics);
    metrics.length = 0;
  };
  const progress = new Progress('train', tc.steps, opts.quiet);
  const timed = tc.minutes !== null && !state; // steps still to be fixed from measured speed
  const batch = { inputs: new Int32Array(B * T), targets: new Int32Array(B * T) };
  let loss = NaN;
  let valLoss = NaN;
  let tokPerSec = 0;
  const started = Date.now();
  const startStep = step;
  while (step < tc.steps) {
    const t0 = performance.now();
    sampleBatch(data.train, B, T, rng, batch); // every rank draws the whole batch: the rng stays in step
    const lo = rank * rows * T;
    loss = model.forward(batch.inputs.subarray(lo, lo + rows * T), rows, T, batch.targets.subarray(lo, lo + rows * T));
    model.zeroGrad();
    model.backward();
    if (dp) loss = await dp.reduce(be, model.grads.flat, loss);
    // Clip by the global norm, folded into the AdamW step as a gradient scale.
    const gradNorm = Math.sqrt(be.sumSquares(model.grads.flat));
    const gradScale = clipScale(gradNorm, tc.gradClip);
    const lr = learningRate(step, { maxLr: tc.lr, minLr: tc.minLr, warmup: Math.min(tc.warmup, tc.steps), total: tc.steps });
    model.params.views.forEach((p, i) => {
      be.adamw(p, model.grads.views[i], m.views[i], v.views[i],
        { lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: decay[i] ? tc.weightDecay : 0, step: step + 1, gradScale });
    });
    be.synchronize();
    step++;
    const dt = (performance.now() - t0) / 1000;
    elapsed += dt;
    tokPerSec = (B * T) / dt;
    const metric: Metric = { step, loss, lr, gradNorm, tokensPerSecond: Math.round(tokPerSec), elapsedSeconds: Number(elapsed.toFixed(3)) };
    if (timed && step === startStep + 3) {
      // Fix the schedule's length from measured speed, once; it is saved, so --resume agrees.
      const perStep = (Date.now() - started) / 1000 / 3;
      tc = { ...tc, steps: Math.max(step + 1, Math.floor((tc.minutes! * 60) / perStep)) };
      progress.setTotal(tc.steps);
    }
    if (step % tc.evalEvery === 0 || step === tc.steps) {
      valLoss = evaluate(model, val, T);
      metric.valLoss = valLoss;
    }
    metrics.push(metric);
    if (!timed || step >= startStep + 3) progress.update(step, {
      loss: loss.toFixed(3),
      ...(Number.isFinite(valLoss) ? { val: valLoss.toFixed(3) } : {}),
      'tok/s': formatCount(tokPerSec),
    });
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) throw new DivergenceError(step, `loss ${loss}, gradient norm ${gradNorm}`);
    if (step % tc.checkpointEvery === 0 || step === tc.steps) {
      if (rank === 0) await save();
      else metrics.length = 0;
    }
    opts.onStep?.(step, metric);
  }
  dp?.finish(be, model.params.flat);
  model.dispose();
  for (const b of [m.flat, v.flat]) be.free(b);
  return { out, steps: step, finalLoss: loss, valLoss, tokensPerSecond: tokPerSec, seconds: elapsed };
}
