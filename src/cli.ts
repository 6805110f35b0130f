#!/usr/bin/env node
// The `sparsek` command line (SPEC.md section 7). Each command is a table of flat options and a
// function; errors from bad input are typed SparsekErrors, printed as one line with exit code 2.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OptionTable, ParsedValue, formatHelp, parseOptions } from './cli/args.js';
import { SparsekError, OptionError, DeviceError, ArgumentError } from './core/errors.js';
import type { Device, Precision } from './backend.js';
import { bestDevice, cudaUnavailable, parseDevice, withBackend } from './device.js';
import { ATTENTION_KINDS, ModelConfig, PRESETS } from './model/config.js';
import { DEFAULT_TRAIN, TrainConfig, Metric, train, evaluate, prepareData } from './train/train.js';
import { evalBatches } from './train/data.js';
import { checkNewFolder, loadRun, saveRun } from './io/checkpoint.js';
import { loadWeights } from './model/load.js';
import { convertToSparsek, DEFAULT_CONVERT_SLOPE } from './model/convert.js';
import { exportHf } from './io/export.js';
import { Gpt } from './model/gpt.js';
import { generate, generateAsync, RecomputeDecoder, StepDecoder } from './model/generate.js';
import type { GenerationStats } from './model/generate.js';
import { lossChart, selectionMap, writePlot } from './plot/index.js';
import { formatCount, formatTime } from './train/progress.js';

type Opts = Record<string, ParsedValue>;

const MODEL_FLAGS: OptionTable = {
  attention: { kind: 'string', help: 'attention kind', choices: ATTENTION_KINDS },
  k: { kind: 'int', help: 'K: KV pairs selected per query (sparsek, qktopk)' },
  window: { kind: 'int', help: 'W: local window' },
  layers: { kind: 'int', help: 'L: layers' },
  dim: { kind: 'int', help: 'C: model width' },
  heads: { kind: 'int', help: 'NH: query heads' },
  'kv-heads': { kind: 'int', help: 'NKV: key/value heads' },
  context: { kind: 'int', help: 'T: training context length' },
  vocab: { kind: 'int', help: 'BPE vocabulary size' },
  'score-slope': { kind: 'number', help: 'eps: position slope of the SparseK scores' },
  'hash-buckets': { kind: 'int', help: 'buckets of the hash baseline (even)' },
};

const TRAIN_FLAGS: OptionTable = {
  data: { kind: 'string', help: 'sotu | brown | a text file or folder' },
  tokenizer: { kind: 'string', help: 'tokenizer', choices: ['bpe', 'byte'] },
  batch: { kind: 'int', help: 'B: sequences per step' },
  steps: { kind: 'int', help: 'optimizer steps' },
  minutes: { kind: 'number', help: 'train for about this long instead of --steps' },
  lr: { kind: 'number', help: 'peak learning rate' },
  seed: { kind: 'int', help: 'random seed' },
  device: { kind: 'string', help: 'device', choices: ['cpu', 'cuda', 'webgpu'] },
  precision: { kind: 'string', help: 'bf16 (mixed precision; the default on cuda) or fp32', choices: ['fp32', 'bf16'] },
  out: { kind: 'string', help: 'run folder to write: a new one, or the run to continue with --resume' },
  resume: { kind: 'boolean', help: 'continue the run in --out' },
  'eval-every': { kind: 'int', help: 'validate every N steps' },
  quiet: { kind: 'boolean', help: 'no progress bar' },
};

// Flags of `train` alone (finetune shares TRAIN_FLAGS).
const TRAIN_ONLY_FLAGS: OptionTable = {
  gpus: { kind: 'int', help: 'N: data-parallel training on N GPUs, one process each, gradients averaged with NCCL (implies --device cuda)' },
};

function modelConfigFrom(o: Opts, base: ModelConfig): ModelConfig {
  const pick = <T>(key: string, fallback: T) => (o[key] === undefined ? fallback : (o[key] as T));
  return {
    ...base,
    attention: pick('attention', base.attention),
    k: pick('k', base.k),
    window: pick('window', base.window),
    layers: pick('layers', base.layers),
    dim: pick('dim', base.dim),
    heads: pick('heads', base.heads),
    kvHeads: pick('kv-heads', base.kvHeads),
    context: pick('context', base.context),
    vocabSize: pick('vocab', base.vocabSize),
    scoreSlope: pick('score-slope', base.scoreSlope),
    hashBuckets: pick('hash-buckets', base.hashBuckets),
    ffnDim: o.dim !== undefined ? Math.ceil(((8 / 3) * (o.dim as number)) / 32) * 32 : base.ffnDim,
  };
}

function trainConfigFrom(o: Opts, base: TrainConfig): TrainConfig {
  const pick = <T>(key: string, fallback: T) => (o[key] === undefined ? fallback : (o[key] as T));
  return {
    ...base,
    data: pick('data', base.data),
    tokenizer: pick('tokenizer', base.tokenizer),
    batch: pick('batch', base.batch),
    steps: pick('steps', base.steps),
    minutes: pick('minutes', base.minutes),
    lr: pick('lr', base.lr),
    // The cosine decays to a tenth of the peak (as llm.c and nanoGPT; the defaults are 3e-3 and
    // 3e-4). Without this a --lr below the base floor failed at step 0.
    minLr: o.lr === undefined ? base.minLr : (o.lr as number) / 10,
    seed: pick('seed', base.seed),
    evalEvery: pick('eval-every', base.evalEvery),
  };
}

/** The device a command asked for; CUDA is checked up front so the error comes before any work. */
async function deviceFrom(o: Opts, allowed: readonly Device[] = ['cpu', 'cuda']): Promise<Device> {
  const name = (o.device as string | undefined) ?? 'cpu';
  if (name === 'webgpu') throw new DeviceError('webgpu', 'WebGPU runs inference only: `sparsek generate --device webgpu`, or loadModel(dir, { device: \'webgpu\' }) (use --device cpu or cuda here)');
  const device = parseDevice(name);
  if (!allowed.includes(device)) throw new DeviceError(device, `this command runs on ${allowed.join(' or ')} in this build`);
  if (device === 'cuda') {
    const why = await cudaUnavailable();
    if (why !== null) throw new DeviceError('cuda', `${why}; \`sparsek doctor\` shows what was found`);
  }
  return device;
}

/** --precision, by default bf16 on CUDA (mixed precision, what GPU training is run with) and fp32 on the CPU. */
function precisionFrom(o: Opts, device: Device): Precision {
  const p = (o.precision as Precision | undefined) ?? (device === 'cuda' ? 'bf16' : 'fp32');
  if (p === 'bf16' && device !== 'cuda') throw new OptionError(`--precision bf16 needs --device cuda (the CPU computes and stores fp32)`);
  return p;
}

function need(o: Opts, key: string, command: string): string {
  if (o[key] === undefined) throw new OptionError(`sparsek ${command}: --${key} is required`);
  return o[key] as string;
}

async function cmdTrain(argv: string[]): Promise<void> {
  const o = parseOptions('train', argv, { ...MODEL_FLAGS, ...TRAIN_FLAGS, ...TRAIN_ONLY_FLAGS });
  const gpus = o.gpus as number | undefined;
  if (gpus !== undefined) {
    // Flag errors first, before CUDA is probed; --gpus implies --device cuda.
    const { checkDataParallel } = await import('./train/distributed.js');
    const t = trainConfigFrom(o, DEFAULT_TRAIN);
    checkDataParallel({ gpus, device: (o.device as string | undefined) ?? 'cuda', batch: t.batch, minutes: t.minutes });
    o.device ??= 'cuda';
  }
  const device = await deviceFrom(o);
  const out = need(o, 'out', 'train');
  const mc = modelConfigFrom(o, PRESETS.demo);
  const tc = { ...trainConfigFrom(o, DEFAULT_TRAIN), device, precision: precisionFrom(o, device) };
  const opts = { resume: o.resume === true, quiet: o.quiet === true };
  const r = gpus === undefined ? await train(mc, tc, out, opts) : await (await import('./train/distributed.js')).trainDataParallel(mc, tc, out, { gpus, ...opts });
  await plotRuns([out], path.join(out, 'loss.svg'));
  console.log(JSON.stringify({ out: r.out, steps: r.steps, loss: r.finalLoss, valLoss: r.valLoss, tokensPerSecond: Math.round(r.tokensPerSecond) }));
}

async function evalRun(dir: string, data: string | undefined, context: number | undefined, maxRows = 64, device: Device = 'cpu') {
  // A run folder or a Hugging Face folder (SPEC section 7); the latter has no training config.
  const w = await loadWeights(dir);
  const run = { model: w.config, params: w.params, tokenizer: w.tokenizer, train: w.train ?? DEFAULT_TRAIN };
  const T = context ?? run.model.context;
  const limit = 16 * run.model.context;
  if (T > limit) throw new ArgumentError('--context', `at most ${limit} (16 x the training context ${run.model.context}; docs/decisions.md)`, T);
  const d = await prepareData({ ...run.train, data: data ?? run.train.data }, run.model.vocabSize, run.tokenizer);
  const batches = evalBatches(d.val, 1, T, maxRows);
  const loss = await withBackend(device, {
    run: async (be) => {
      const model = new Gpt(run.model, be);
      be.upload(model.params.flat, run.params.flat);
      const l = evaluate(model, batches, T);
      model.dispose();
      return l;
    },
  });
  return { loss, perplexity: Math.exp(loss), tokens: batches.length * T, context: T };
}

async function cmdEval(argv: string[]): Promise<void> {
  const o = parseOptions('eval', argv, {
    checkpoint: { kind: 'string', help: 'run folder or Hugging Face model folder' },
    data: TRAIN_FLAGS.data,
    context: { kind: 'int', help: 'T: evaluation context' },
    rows: { kind: 'int', help: 'validation sequences to score (default 64)' },
    device: TRAIN_FLAGS.device,
  });
  const device = await deviceFrom(o);
  const r = await evalRun(need(o, 'checkpoint', 'eval'), o.data as string | undefined, o.context as number | undefined, (o.rows as number) ?? 64, device);
  console.log(JSON.stringify(r));
}

async function cmdGenerate(argv: string[]): Promise<void> {
  const o = parseOptions('generate', argv, {
    checkpoint: { kind: 'string', help: 'run folder or Hugging Face model folder' },
    prompt: { kind: 'string', help: 'text to continue' },
    tokens: { kind: 'int', help: 'tokens to generate (default 200)' },
    temperature: { kind: 'number', help: 'sampling temperature, 0 = greedy (default 0.8)' },
    'top-p': { kind: 'number', help: 'nucleus sampling mass (default 0.95)' },
    seed: { kind: 'int', help: 'random seed' },
    stats: { kind: 'boolean', help: 'print a JSON line of speed and cache memory' },
    device: TRAIN_FLAGS.device,
  });
  if (o.device === 'webgpu') return generateOnWebGpu(o);
  const device = await deviceFrom(o);
  const w = await loadWeights(need(o, 'checkpoint', 'generate'));
  const run = { model: w.config, params: w.params, tokenizer: w.tokenizer };
  let decoder: (() => StepDecoder) | undefined;
  if (device === 'cuda') {
    const { CudaBackend } = await import('./cuda/backend.js');
    const { CudaDecoder } = await import('./cuda/decode.js');
    const be = new CudaBackend();
    if (CudaDecoder.supports(run.model)) decoder = () => new CudaDecoder(run.model, run.params, be, {});
    else {
      // fixed, hash and qktopk have no cache: the full forward over the context on the GPU per token
      const { Gpt } = await import('./model/gpt.js');
      decoder = () => {
        const model = new Gpt(run.model, be);
        be.upload(model.params.flat, run.params.flat);
        return new RecomputeDecoder(model);
      };
    }
  }
  const prompt = run.tokenizer.encode(need(o, 'prompt', 'generate'));
  process.stdout.write(o.prompt as string);
  const out = streamer(run.tokenizer);
  const r = generate(run.model, run.params, prompt, { ...sampling(o), decoder, onToken: out.token });
  out.end();
  if (o.stats) printStats(r.stats);
}

/** generate --device webgpu: the WebGPU decoder (src/webgpu) on a Dawn device, same sampling. */
async function generateOnWebGpu(o: Opts): Promise<void> {
  const { nodeRuntime } = await import('./webgpu/node.js');
  const { WebGpuModel, WebGpuDecoder } = await import('./webgpu/index.js');
  const w = await loadWeights(need(o, 'checkpoint', 'generate'));
  if (!WebGpuDecoder.supports(w.config)) throw new DeviceError('webgpu', `cached decoding of ${w.config.attention} attention runs on the CPU only (use --device cpu)`);
  const rt = await nodeRuntime();
  try {
    const model = await WebGpuModel.create(rt, w.config, w.params);
    const prompt = w.tokenizer.encode(need(o, 'prompt', 'generate'));
    process.stdout.write(o.prompt as string);
    const out = streamer(w.tokenizer);
    const r = await generateAsync(prompt, new WebGpuDecoder(model), { ...sampling(o), onToken: out.token });
    out.end();
    if (o.stats) printStats(r.stats);
  } finally {
    rt.destroy();
  }
}

function sampling(o: Opts): { tokens: number; temperature: number; topP: number; seed: number } {
  return { tokens: (o.tokens as number) ?? 200, temperature: (o.temperature as number) ?? 0.8, topP: (o['top-p'] as number) ?? 0.95, seed: (o.seed as number) ?? 0 };
}

/** Writes tokens to stdout as they come, whole characters only (a BPE token can end inside a multi-byte character). */
function streamer(tok: { decode(ids: ArrayLike<number>): string }): { token: (id: number) => void; end: () => void } {
  const pending: number[] = [];
  return {
    token: (id) => {
      pending.push(id);
      const text = tok.decode(pending);
      if (!text.endsWith('\uFFFD')) {
        process.stdout.write(text);
        pending.length = 0;
      }
    },
    end: () => {
      if (pending.length) process.stdout.write(tok.decode(pending));
      process.stdout.write('\n');
    },
  };
}

function printStats(s: GenerationStats): void {
  console.log(JSON.stringify({ tokens: s.tokens, tokensPerSecond: Number(s.tokensPerSecond.toFixed(2)), cacheBytesMax: s.cacheBytesMax, cacheBytesFinal: s.cacheBytesFinal, capHits: s.capHits }));
}

async function cmdConvert(argv: string[]): Promise<void> {
  const o = parseOptions('convert', argv, {
    from: { kind: 'string', help: 'run folder or Hugging Face model folder' },
    attention: { kind: 'string', help: 'attention kind of the result', choices: ['sparsek'] },
    k: MODEL_FLAGS.k,
    window: MODEL_FLAGS.window,
    'score-slope': { kind: 'number', help: `eps: position slope of the SparseK scores (default ${DEFAULT_CONVERT_SLOPE})` },
    out: { kind: 'string', help: 'run folder to write (a new one)' },
  });
  const from = need(o, 'from', 'convert');
  const out = need(o, 'out', 'convert');
  need(o, 'attention', 'convert');
  const k = need(o, 'k', 'convert') as unknown as number;
  const window = need(o, 'window', 'convert') as unknown as number;
  checkNewFolder(out, 'convert into a new folder');
  const w = await loadWeights(from);
  const c = convertToSparsek(w.config, w.params, { k, window, scoreSlope: (o['score-slope'] as number) ?? DEFAULT_CONVERT_SLOPE });
  await saveRun(out, { model: c.config, train: w.train ?? DEFAULT_TRAIN, params: c.params, m: null, v: null, step: 0, rng: [1, 2, 3, 4], elapsedSeconds: 0, tokenizer: w.tokenizer }, []);
  console.log(JSON.stringify({ out, from: w.source, attention: c.config.attention, k, window, scoreSlope: c.config.scoreSlope }));
}

async function cmdFinetune(argv: string[]): Promise<void> {
  const o = parseOptions('finetune', argv, {
    checkpoint: { kind: 'string', help: 'run folder or Hugging Face model folder to start from' },
    context: { kind: 'int', help: 'T: training context (longer than the model\'s extends it: RoPE models only)' },
    ...TRAIN_FLAGS,
  });
  if (o.resume !== undefined) throw new OptionError('sparsek finetune: --resume is not supported (use `sparsek train --resume --out DIR` on the finetune run folder)');
  const device = await deviceFrom(o);
  const out = need(o, 'out', 'finetune');
  const w = await loadWeights(need(o, 'checkpoint', 'finetune'));
  let mc = w.config;
  if (o.context !== undefined) {
    const T = o.context as number;
    // A RoPE model has no position table: finetuning at a longer context extends it (the run's
    // config records the new context). Learned positions have exactly context rows.
    if ((mc.positions ?? 'rope') === 'learned' && T !== mc.context) throw new ArgumentError('--context', `the model's context ${mc.context} (its position table has that many rows)`, T);
    mc = { ...mc, context: T };
  }
  const tc = { ...trainConfigFrom(o, { ...(w.train ?? DEFAULT_TRAIN), data: DEFAULT_TRAIN.data, minutes: null }), device, precision: precisionFrom(o, device) };
  const r = await train(mc, tc, out, { quiet: o.quiet === true, init: { params: w.params, tokenizer: w.tokenizer } });
  console.log(JSON.stringify({ out: r.out, steps: r.steps, loss: r.finalLoss, valLoss: r.valLoss, tokensPerSecond: Math.round(r.tokensPerSecond) }));
}

async function cmdExport(argv: string[]): Promise<void> {
  const o = parseOptions('export', argv, {
    checkpoint: { kind: 'string', help: 'run folder (or Hugging Face folder) to export' },
    out: { kind: 'string', help: 'Hugging Face-style folder to write (a new one)' },
  });
  const out = need(o, 'out', 'export');
  checkNewFolder(out, 'export into a new folder');
  const w = await loadWeights(need(o, 'checkpoint', 'export'));
  await exportHf(out, w.config, w.params, w.tokenizer);
  console.log(out);
}

function readMetrics(dir: string): Metric[] {
  const file = path.join(dir, 'metrics.jsonl');
  if (!fs.existsSync(file)) throw new OptionError(`sparsek plot: ${dir} has no metrics.jsonl (expected a run folder written by \`sparsek train --out\`)`);
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Metric);
}

/** Loss curves of run folders: curves 'both' (default), 'train' or 'validation'; points from step fromStep on. */
async function plotRuns(dirs: string[], out: string, opts: { curves?: string; fromStep?: number } = {}): Promise<void> {
  const curves = opts.curves ?? 'both', from = opts.fromStep ?? 0;
  const series = dirs.flatMap((dir) => {
    const ms = readMetrics(dir).filter((m) => m.step >= from);
    const name = path.basename(path.resolve(dir));
    const train = { name: `${name} train`, group: name, points: ms.filter((m) => m.loss !== undefined).map((m) => ({ step: m.step, loss: m.loss! })) };
    const val = { name: `${name} validation`, group: name, dashed: curves === 'both', points: ms.filter((m) => m.valLoss !== undefined).map((m) => ({ step: m.step, loss: m.valLoss! })) };
    return (curves === 'train' ? [train] : curves === 'validation' ? [{ ...val, name }] : [train, val]).filter((s) => s.points.length > 0);
  });
  if (series.length === 0) throw new OptionError(`sparsek plot: no ${curves === 'both' ? '' : `${curves} `}losses at step ${from} or later in ${dirs.join(', ')}`);
  const what = curves === 'validation' ? 'Validation loss' : curves === 'train' ? 'Training loss' : 'Loss';
  await writePlot(out, lossChart(series, { title: `${what} (nats per token)` }));
}

/** Selection maps of a SparseK run for a text: which positions each query selected, per layer and KV head. */
async function plotSelection(dir: string, text: string, out: string): Promise<void> {
  const run = await loadRun(dir);
  if (run.model.attention !== 'sparsek') throw new OptionError(`sparsek plot: --selection needs a sparsek run, ${dir} uses ${run.model.attention} attention`);
  const ids = run.tokenizer.encode(text).slice(0, run.model.context);
  if (ids.length < 2) throw new OptionError('sparsek plot: --text must encode to at least 2 tokens');
  const model = Gpt.cpu(run.model);
  model.params.flat.set(run.params.flat);
  model.forward(ids, 1, ids.length);
  const T = ids.length;
  const maps = model.selections().flatMap((sel, l) =>
    (sel ?? []).map((s, h) => ({ title: `layer ${l} · KV head ${h}`, T, window: run.model.window, rows: s.rows })),
  );
  await writePlot(out, selectionMap(maps, { title: `SparseK selection, K=${run.model.k}, W=${run.model.window}`, columns: run.model.kvHeads }));
}

async function cmdPlot(argv: string[]): Promise<void> {
  const o = parseOptions('plot', argv, {
    runs: { kind: 'strings', help: 'run folders whose loss curves to draw' },
    selection: { kind: 'string', help: 'a sparsek run folder: draw its selection map for --text' },
    text: { kind: 'string', help: 'text for the selection map' },
    out: { kind: 'string', help: 'FILE.svg or FILE.png' },
    curves: { kind: 'string', help: 'which loss curves of --runs: both (default), train or validation', choices: ['both', 'train', 'validation'] },
    'from-step': { kind: 'int', help: 'draw --runs from this step on (default 0)' },
  });
  const out = need(o, 'out', 'plot');
  if (o.selection !== undefined) await plotSelection(o.selection as string, need(o, 'text', 'plot'), out);
  else await plotRuns(need(o, 'runs', 'plot') as unknown as string[], out, { curves: o.curves as string | undefined, fromStep: o['from-step'] as number | undefined });
  console.log(out);
}

async function cmdDoctor(): Promise<void> {
  const cpu = os.cpus();
  const { threadCount } = await import('./cpu/threads.js');
  console.log(`node     ${process.version} on ${os.platform()} ${os.arch()}`);
  console.log(`cpu      ${cpu[0]?.model ?? 'unknown'}, ${cpu.length} cores, ${threadCount()} used for matmul (SPARSEK_THREADS): available`);
  const { findCudaLibraries } = await import('./cuda/find.js');
  for (const line of findCudaLibraries().lines) console.log(`         ${line}`);
  const why = await cudaUnavailable();
  if (why === null) {
    const { cudaRuntime } = await import('./cuda/runtime.js');
    const rt = cudaRuntime();
    console.log(`cuda     ${rt.name} (sm_${rt.computeCapability.join('')}, ${(rt.totalMemory / 2 ** 30).toFixed(0)} GiB): available (--device cuda)`);
  } else {
    console.log(`cuda     not available: ${why}`);
  }
  const { ncclReport } = await import('./cuda/nccl.js');
  for (const line of ncclReport()) console.log(line);
  const { webgpuUnavailable } = await import('./webgpu/node.js');
  const noWebGpu = await webgpuUnavailable();
  console.log(noWebGpu === null ? 'webgpu   available (generate --device webgpu, loadModel)' : `webgpu   not available: ${noWebGpu}`);
}

async function cmdDemo(argv: string[]): Promise<void> {
  const o = parseOptions('demo', argv, {
    minutes: { kind: 'number', help: 'training time budget (default 3)' },
    out: { kind: 'string', help: 'run folder (default runs/demo; a re-run replaces it)' },
    seed: TRAIN_FLAGS.seed,
    quiet: TRAIN_FLAGS.quiet,
  });
  const out = (o.out as string) ?? 'runs/demo';
  const minutes = (o.minutes as number) ?? 3;
  const t0 = Date.now();
  const mc = PRESETS.demo;
  const device = await bestDevice((line) => console.log(line));
  console.log(`sparsek demo: a ${mc.layers}-layer SparseK + window model (K=${mc.k}, W=${mc.window}, context ${mc.context}) on the State of the Union corpus, ${minutes} minute${minutes === 1 ? '' : 's'} on the ${device === 'cuda' ? 'GPU' : 'CPU'}\n`);
  // A re-run replaces its own earlier folder (marked when it starts, so an interrupted one too;
  // demos before the marker left summary.json), and no other model folder.
  const marker = path.join(out, '.sparsek-demo');
  if (fs.existsSync(marker) || fs.existsSync(path.join(out, 'summary.json'))) fs.rmSync(out, { recursive: true });
  else checkNewFolder(out, 'pass --out with a new folder (demo replaces only its own)');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(marker, 'written by `sparsek demo`, which replaces this folder when it runs again\n');
  const r = await train(mc, { ...DEFAULT_TRAIN, device, precision: precisionFrom({}, device), minutes, seed: (o.seed as number) ?? DEFAULT_TRAIN.seed, evalEvery: 25, checkpointEvery: 1_000_000 }, out, { quiet: o.quiet === true });
  const ev = await evalRun(out, undefined, undefined, 32, device);
  await plotRuns([out], path.join(out, 'loss.svg'));
  await plotRuns([out], path.join(out, 'loss.png'));
  const run = await loadRun(out);
  const prompt = 'Fellow citizens, the state of the Union';
  const g = generate(run.model, run.params, run.tokenizer.encode(prompt), { tokens: 120, temperature: 0.8, topP: 0.95, seed: 1 });
  const sample = prompt + run.tokenizer.decode(g.ids);
  await plotSelection(out, sample, path.join(out, 'selection.png'));
  await plotSelection(out, sample, path.join(out, 'selection.svg'));
  fs.writeFileSync(path.join(out, 'sample.txt'), sample + '\n');
  const summary = {
    steps: r.steps, trainLoss: r.finalLoss, valLoss: ev.loss, valPerplexity: ev.perplexity,
    trainTokensPerSecond: Math.round(r.tokensPerSecond), generateTokensPerSecond: Number(g.stats.tokensPerSecond.toFixed(1)),
    cacheBytes: g.stats.cacheBytesFinal,
  };
  fs.writeFileSync(path.join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  console.log(`
── sample (temperature 0.8) ─────────────────────────────
${sample}
─────────────────────────────────────────────────────────
trained     ${r.steps} steps in ${formatTime(r.seconds)} (${formatCount(r.tokensPerSecond)} tokens/s)
validation  loss ${ev.loss.toFixed(3)}, perplexity ${ev.perplexity.toFixed(1)} (${ev.tokens} tokens, context ${ev.context})
generation  ${g.stats.tokensPerSecond.toFixed(1)} tokens/s, K/V cache ${(g.stats.cacheBytesFinal / 1024).toFixed(1)} KiB (fixed: W + K entries per head)
written     ${out}/  model.safetensors, metrics.jsonl, loss.png, selection.png, sample.txt, summary.json
total       ${formatTime((Date.now() - t0) / 1000)}
`);
}

const COMMANDS: Record<string, { help: string; run: (argv: string[]) => Promise<void> }> = {
  demo: { help: 'train, evaluate, generate and plot a small SparseK model (the main job)', run: cmdDemo },
  train: { help: 'train a model: ' + Object.keys({ ...MODEL_FLAGS, ...TRAIN_FLAGS, ...TRAIN_ONLY_FLAGS }).map((k) => '--' + k).join(' '), run: cmdTrain },
  eval: { help: 'validation loss and perplexity of a run: --checkpoint DIR [--data D] [--context T]', run: cmdEval },
  generate: { help: 'sample text with the constant-memory cache: --checkpoint DIR --prompt TEXT [--tokens N] [--stats]', run: cmdGenerate },
  convert: { help: 'add SparseK scoring to a model: --from DIR --attention sparsek --k K --window W [--score-slope E] --out DIR', run: cmdConvert },
  finetune: { help: 'train from a checkpoint\'s weights: --checkpoint DIR --data D --steps N --out DIR [train options]', run: cmdFinetune },
  export: { help: 'write a Hugging Face-style folder (Llama family): --checkpoint DIR --out DIR', run: cmdExport },
  plot: { help: 'loss curves (--runs DIR... --out F [--curves both|train|validation] [--from-step N]) or a selection map (--selection DIR --text T --out F)', run: cmdPlot },
  doctor: { help: 'what devices and libraries were found', run: cmdDoctor },
};

function usage(): string {
  const w = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return `usage: sparsek <command> [--option value ...]\n\n${Object.entries(COMMANDS).map(([c, x]) => `  ${c.padEnd(w)}  ${x.help}`).join('\n')}\n\ntrain options:\n${formatHelp({ ...MODEL_FLAGS, ...TRAIN_FLAGS, ...TRAIN_ONLY_FLAGS })}\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === 'help') {
    process.stdout.write(usage());
    return command ? 0 : 2;
  }
  const c = COMMANDS[command];
  try {
    if (!c) throw new OptionError(`unknown command '${command}'; expected one of ${Object.keys(COMMANDS).join(', ')}`);
    await c.run(rest);
    return 0;
  } catch (e) {
    if (e instanceof SparsekError) {
      process.stderr.write(`sparsek: error: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}

const isMain = process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(new URL(import.meta.url).pathname);
if (isMain) main(process.argv.slice(2)).then((code) => process.exit(code));
