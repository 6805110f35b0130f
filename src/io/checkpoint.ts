// Run folders (what `sparsek train --out DIR` writes and --checkpoint/--resume read):
//
//   config.json            { format, version, model: ModelConfig, train: TrainConfig }
//   model.safetensors      parameters by Hugging Face Llama names, F32
//   optimizer.safetensors  AdamW moments m.<name>, v.<name>
//   trainer.json           step, sampler state, elapsed seconds: written last, the commit point
//   tokenizer.json         Hugging Face format
//   tokenizer_config.json  only for a Hugging Face model's own tokenizer (a converted model): its
//                          presence makes the reader run tokenizer.json with @huggingface/tokenizers
//   metrics.jsonl          one JSON object per step
//
// Each file is written atomically; a reader validates names, shapes and the step agreement of
// every file and raises CheckpointError naming the file and the problem.

import fs from 'node:fs';
import path from 'node:path';
import { CheckpointError } from '../core/errors.js';
import { ModelConfig, checkConfig } from '../model/config.js';
import { Params, allocParams } from '../model/params.js';
import { Tokenizer, loadTokenizer, saveTokenizer } from '../tokenizer/index.js';
import type { TrainConfig, Metric } from '../train/train.js';
import { SafeTensor, readSafetensors, toFloat32, writeSafetensors } from './safetensors.js';
import { writeFileAtomic } from './atomic.js';
import { HfTokenizer, loadHfTokenizer } from './hf.js';

const FORMAT = 'sparsek-run';
const VERSION = 1;

export interface RunState {
  model: ModelConfig;
  train: TrainConfig;
  params: Params;
  m: Float32Array | null; // AdamW moments (flat, like params.flat)
  v: Float32Array | null;
  step: number;
  rng: [number, number, number, number];
  elapsedSeconds: number;
  tokenizer: Tokenizer;
}

/**
 * Refuses a folder that already holds a model (a config.json): writing a new run or an export
 * there would replace its weights file by file and leave a mix of two models behind.
 * `instead` says what the caller can do, e.g. "pass --resume to continue it".
 */
export function checkNewFolder(dir: string, instead: string): void {
  if (fs.existsSync(path.join(dir, 'config.json'))) {
    throw new CheckpointError(dir, `already holds a model (config.json); ${instead}`);
  }
}

export async function saveRun(dir: string, s: RunState, newMetrics: Metric[]): Promise<void> {
  try {
    await writeRunFiles(dir, s, newMetrics);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    const err = e as NodeJS.ErrnoException;
    throw new CheckpointError(err.path ?? dir, `cannot write the run folder: ${err.code ?? ''} ${err.message}`.trim());
  }
}

async function writeRunFiles(dir: string, s: RunState, newMetrics: Metric[]): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  await writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify({ format: FORMAT, version: VERSION, model: s.model, train: s.train }, null, 2) + '\n');
  const meta = { format: FORMAT, step: String(s.step) };
  await writeSafetensors(path.join(dir, 'model.safetensors'), namedTensors(s.params, s.params.flat, ''), meta);
  if (s.m && s.v) {
    await writeSafetensors(path.join(dir, 'optimizer.safetensors'), { ...namedTensors(s.params, s.m, 'm.'), ...namedTensors(s.params, s.v, 'v.') }, meta);
  }
  await saveTokenizer(path.join(dir, 'tokenizer.json'), s.tokenizer);
  if (s.tokenizer instanceof HfTokenizer) {
    await writeFileAtomic(path.join(dir, 'tokenizer_config.json'), JSON.stringify(s.tokenizer.config, null, 2) + '\n');
  }
  if (newMetrics.length > 0) {
    const file = path.join(dir, 'metrics.jsonl');
    const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    // Drop lines past the checkpoint we resumed from, so a resumed run's log has no duplicates.
    const kept = old.split('\n').filter((l) => l && JSON.parse(l).step < newMetrics[0].step);
    await writeFileAtomic(file, [...kept, ...newMetrics.map((m) => JSON.stringify(m))].join('\n') + '\n');
  }
  await writeFileAtomic(path.join(dir, 'trainer.json'), JSON.stringify({ step: s.step, rng: s.rng, elapsedSeconds: s.elapsedSeconds }) + '\n');
}

function namedTensors(p: Params, flat: Float32Array, prefix: string): Record<string, SafeTensor> {
  const out: Record<string, SafeTensor> = {};
  let off = 0;
  for (const spec of p.specs) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    out[prefix + spec.name] = { dtype: 'F32', shape: spec.shape, data: flat.subarray(off, off + n) };
    off += n;
  }
  return out;
}

function readJson(file: string): unknown {
  if (!fs.existsSync(file)) throw new CheckpointError(file, 'file not found');
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new CheckpointError(file, `not valid JSON (${(e as Error).message})`);
  }
}

/** Reads a run folder; the optimizer state only when asked (resuming). */
export async function loadRun(dir: string, opts: { optimizer?: boolean } = {}): Promise<RunState> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new CheckpointError(dir, 'not a folder (expected a run folder written by `sparsek train --out`)');
  const cfgFile = path.join(dir, 'config.json');
  const cfg = readJson(cfgFile) as { format?: string; version?: number; model?: ModelConfig; train?: TrainConfig };
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new CheckpointError(cfgFile, 'expected a JSON object');
  if (cfg.format !== FORMAT) {
    throw new CheckpointError(cfgFile, `not a sparsek run (format ${JSON.stringify(cfg.format)}, expected "${FORMAT}"); Hugging Face folders are read by loadModel`);
  }
  if (cfg.version !== VERSION) throw new CheckpointError(cfgFile, `format version ${cfg.version}, this sparsek reads version ${VERSION}`);
  if (cfg.model === undefined) throw new CheckpointError(cfgFile, "missing field 'model' (the model config)");
  let model: ModelConfig;
  try {
    // Runs written before the architecture fields existed lack them: checkConfig reads a missing
    // field as the native model's choice (config.ts arch()).
    model = checkConfig(cfg.model as ModelConfig);
  } catch (e) {
    throw new CheckpointError(cfgFile, `invalid model config: ${(e as Error).message}`);
  }
  const trainerFile = path.join(dir, 'trainer.json');
  const trainer = readJson(trainerFile) as { step: number; rng: [number, number, number, number]; elapsedSeconds: number };
  const params = allocParams(model);
  const modelFile = path.join(dir, 'model.safetensors');
  if (!fs.existsSync(modelFile)) throw new CheckpointError(modelFile, 'file not found');
  const weights = await readSafetensors(modelFile);
  checkStep(modelFile, weights.metadata, trainer.step);
  fillFlat(modelFile, weights.tensors, params, params.flat, '');
  let m: Float32Array | null = null;
  let v: Float32Array | null = null;
  if (opts.optimizer) {
    const optFile = path.join(dir, 'optimizer.safetensors');
    if (!fs.existsSync(optFile)) throw new CheckpointError(optFile, 'file not found (needed to resume)');
    const o = await readSafetensors(optFile);
    checkStep(optFile, o.metadata, trainer.step);
    m = new Float32Array(params.flat.length);
    v = new Float32Array(params.flat.length);
    fillFlat(optFile, o.tensors, params, m, 'm.');
    fillFlat(optFile, o.tensors, params, v, 'v.');
  }
  // Our own BPE reads byte-level files only; a Hugging Face model's tokenizer (stored with its
  // tokenizer_config.json by convert) runs in @huggingface/tokenizers.
  const tokenizer = fs.existsSync(path.join(dir, 'tokenizer_config.json'))
    ? loadHfTokenizer(dir) ?? (await loadTokenizer(path.join(dir, 'tokenizer.json')))
    : await loadTokenizer(path.join(dir, 'tokenizer.json'));
  if (tokenizer.vocabSize > model.vocabSize) {
    throw new CheckpointError(path.join(dir, 'tokenizer.json'), `vocabulary of ${tokenizer.vocabSize} tokens exceeds the model's ${model.vocabSize}`);
  }
  return { model, train: cfg.train as TrainConfig, params, m, v, step: trainer.step, rng: trainer.rng, elapsedSeconds: trainer.elapsedSeconds, tokenizer };
}

function checkStep(file: string, meta: Record<string, string>, step: number): void {
  if (meta.step !== undefined && Number(meta.step) !== step) {
    throw new CheckpointError(file, `written at step ${meta.step} but trainer.json says step ${step} (an interrupted save?)`);
  }
}

function fillFlat(file: string, tensors: Map<string, SafeTensor>, p: Params, flat: Float32Array, prefix: string): void {
  let off = 0;
  for (const spec of p.specs) {
    const t = tensors.get(prefix + spec.name);
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (!t) throw new CheckpointError(file, `missing tensor '${prefix + spec.name}' of shape [${spec.shape}]`);
    if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
      throw new CheckpointError(file, `tensor '${prefix + spec.name}' has shape [${t.shape}], the config needs [${spec.shape}]`);
    }
    flat.set(toFloat32(t), off);
    off += n;
  }
}
