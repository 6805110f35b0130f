// loadModel (SPEC.md section 7): a model folder -> { config, tokenizer, logits(ids) } on a device.
// The folder is either a run written by `sparsek train --out` (src/io/checkpoint.ts) or a Hugging
// Face model folder (src/io/hf.ts); config.json tells which. The model runs its full forward pass
// for each call (no cache; generation is model/generate.ts). Not here: training, conversion.

import fs from 'node:fs';
import path from 'node:path';
import type { Backend, Device } from '../backend.js';
import { ArgumentError, CheckpointError } from '../core/errors.js';
import { parseDevice, withBackend } from '../device.js';
import { loadRun } from '../io/checkpoint.js';
import { isHfFolder, loadHfFolder } from '../io/hf.js';
import type { HfModelType } from '../io/hf.js';
import { ModelConfig } from './config.js';
import { Gpt } from './gpt.js';
import { Params } from './params.js';
import type { Tokenizer } from '../tokenizer/index.js';
import type { TrainConfig } from '../train/train.js';

export interface LoadModelOptions {
  device?: 'cpu' | 'cuda' | 'webgpu';
}

/** A loaded model: its config, its tokenizer and a forward pass to logits. */
export interface Model {
  config: ModelConfig;
  /** 'sparsek-run' for a run folder, else the Hugging Face model_type (llama, qwen2, mistral, gpt2, gpt_neox). */
  source: 'sparsek-run' | HfModelType;
  device: Device | 'webgpu';
  tokenizer: { encode(text: string): number[]; decode(ids: ArrayLike<number>): string };
  /** Logits (T, V) of one sequence of T >= 1 token ids, row t predicting the token after ids[t]. */
  logits(ids: ArrayLike<number>): Promise<Float32Array>;
  /** Frees the device memory the model holds (a no-op on the CPU). */
  dispose(): void;
}

/**
 * Loads a run folder or a Hugging Face model folder onto a device (default 'cpu').
 *   logits[t, v] = the model's score of token v following ids[0..t]
 * @example
 *   const m = await loadModel('runs/demo');            // or a folder with config.json, model.safetensors, tokenizer.json
 *   const logits = await m.logits(m.tokenizer.encode('The state of the union'));  // (T, V)
 */
export async function loadModel(dir: string, opts: LoadModelOptions = {}): Promise<Model> {
  const device = opts.device === 'webgpu' ? 'webgpu' : pickDevice(opts.device);
  const cfgFile = path.join(dir, 'config.json');
  if (fs.existsSync(dir) && fs.statSync(dir).isDirectory() && !fs.existsSync(cfgFile)) {
    throw new CheckpointError(cfgFile, 'file not found (a model folder has a config.json)');
  }
  const { config, params, tokenizer, source } = await loadWeights(dir);
  if (device === 'webgpu') {
    // WebGPU readback is asynchronous: its own runtime, not a Backend (docs/webgpu.md).
    const { webgpuRunner } = await import('../webgpu/node.js');
    const runner = await webgpuRunner(config, params);
    return { config, source, device, tokenizer, logits: (ids) => runner.logits(ids), dispose: () => runner.dispose() };
  }
  const runner = await withBackend(device, {
    run: async <F, I>(be: Backend<F, I>) => forwardRunner(be, config, params),
  });
  return { config, source, device, tokenizer, logits: async (ids) => runner.logits(ids), dispose: () => runner.dispose() };
}

/** A model folder's contents on the host: what eval, generate, convert, finetune and export read. */
export interface LoadedWeights {
  config: ModelConfig;
  params: Params;
  tokenizer: Tokenizer;
  source: Model['source'];
  /** The run's training config; null for a Hugging Face folder. */
  train: TrainConfig | null;
}

/**
 * Reads a run folder or a Hugging Face model folder into host memory (no device).
 * @example
 *   const w = await loadWeights('test/fixtures/hf/llama'); w.config.attention  // 'dense'
 */
export async function loadWeights(dir: string): Promise<LoadedWeights> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new CheckpointError(dir, 'not a folder (expected a sparsek run folder or a Hugging Face model folder)');
  if (isHfFolder(dir)) {
    const hf = await loadHfFolder(dir);
    if (!hf.tokenizer) throw new CheckpointError(path.join(dir, 'tokenizer.json'), 'file not found (the model folder needs its tokenizer)');
    return { config: hf.config, params: hf.params, tokenizer: hf.tokenizer, source: hf.modelType, train: null };
  }
  const run = await loadRun(dir);
  return { config: run.model, params: run.params, tokenizer: run.tokenizer, source: 'sparsek-run', train: run.train };
}

function pickDevice(d: unknown): Device {
  if (d === undefined) return 'cpu';
  return parseDevice(d);
}

interface Runner {
  logits(ids: ArrayLike<number>): Float32Array;
  dispose(): void;
}

/** A Gpt on backend be holding params; each logits() call is one forward over (1, T). */
function forwardRunner<F, I>(be: Backend<F, I>, config: ModelConfig, params: Params): Runner {
  const model = new Gpt(config, be);
  be.upload(model.params.flat, params.flat);
  const V = config.vocabSize;
  let disposed = false;
  return {
    logits(ids) {
      if (disposed) throw new ArgumentError('model', 'a model that was not disposed', 'disposed');
      const T = ids?.length;
      if (typeof T !== 'number' || T < 1) throw new ArgumentError('ids', 'at least one token id', T);
      for (let t = 0; t < T; t++) {
        const id = ids[t];
        if (!Number.isInteger(id) || id < 0 || id >= V) throw new ArgumentError(`ids[${t}]`, `a token id in [0, ${V})`, id);
      }
      model.forward(ids, 1, T);
      // The CPU's download is the live buffer: copy, so the next call cannot overwrite the result.
      return be.download(model.logits).slice(0, T * V);
    },
    dispose() {
      if (!disposed) model.dispose();
      disposed = true;
    },
  };
}
