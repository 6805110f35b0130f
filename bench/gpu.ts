// GPU benchmark (issue 4): the GPT-2-small-shaped model (12 layers, width 768, 12 heads) on the
// CUDA backend, SparseK (K = 256, W = 256) and dense attention, in fp32 and in mixed precision (bf16).
//   training: forward + backward + AdamW tokens/s at T = 4096, median of timed steps after warm-up;
//   generation: tokens/s of cached decoding (CudaDecoder) after a prompt of 4K or 32K tokens (prefill, timed apart).
// Run it on the GPU machine next to scripts/train_gpt2_torch.py (the PyTorch SDPA peer, same
// shapes, same run).
//
//   node --import tsx bench/gpu.ts [--T 4096] [--B 1] [--steps 5] [--kinds sparsek,dense] [--precisions fp32,bf16]
//        [--gen sparsek:4096,sparsek:32768,dense:4096] [--gen-tokens 64]
//        [--gen-preset gpt2small|demo] [--gen-k K] [--gen-w W]
// Generation also reports the GPU time per token of the decode kernels (CUDA events around each
// launch): the attention over the cache, which SparseK keeps at W + K entries whatever the context,
// and all of this project's decode kernels together (cuBLAS products not counted). The demo preset (4 layers, width 128) is small enough to prefill
// a 512K-token prompt in one forward, for the per-token time from 4K to 512K context.

import { execSync } from 'node:child_process';
import { CudaBackend } from '../src/cuda/backend.js';
import type { Precision } from '../src/backend.js';
import { Gpt } from '../src/model/gpt.js';
import { ModelConfig, PRESETS } from '../src/model/config.js';
import { allocParams, allocParamsOn, initParams } from '../src/model/params.js';
import { Rng } from '../src/core/random.js';
import { CudaDecoder } from '../src/cuda/decode.js';
import { optimizerStep } from './step.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const T = Number(flag('T', '4096'));
const B = Number(flag('B', '1'));
const steps = Number(flag('steps', '5'));
const kinds = flag('kinds', 'sparsek,dense').split(',').filter(Boolean) as ModelConfig['attention'][];
const precisions = flag('precisions', 'fp32,bf16').split(',').filter(Boolean) as Precision[];

const be = new CudaBackend();
const rt = be.rt;
const commit = process.env.SPARSEK_COMMIT ?? (() => {
  try {
    return execSync('git rev-parse --short HEAD', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
})();
console.log(`# GPU training benchmark: ${rt.name}, driver ${rt.driverVersion}, commit ${commit}, ${new Date().toISOString().slice(0, 10)}`);
for (const [attention, precision] of kinds.flatMap((k) => precisions.map((p) => [k, p] as const))) {
  const be = new CudaBackend(rt, { precision });
  const c: ModelConfig = { ...PRESETS.gpt2small, attention, context: T, scoreSlope: 0.01 };
  const host = allocParams(c);
  initParams(host, c, 1);
  const model = new Gpt(c, be);
  be.upload(model.params.flat, host.flat);
  const m = allocParamsOn(c, be);
  const v = allocParamsOn(c, be);
  const rng = new Rng(0);
  const ids = Array.from({ length: B * T }, () => rng.int(c.vocabSize));
  const times: number[] = [];
  for (let s = 0; s < steps + 2; s++) {
    be.synchronize();
    const t0 = performance.now();
    model.forward(ids, B, T, ids);
    model.zeroGrad();
    model.backward();
    optimizerStep(be, model, m, v, s + 1);
    be.synchronize();
    if (s >= 2) times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)];
  console.log(JSON.stringify({ peer: 'sparsek-cuda', attention, dtype: precision, T, B, params: host.flat.length, ms_per_step: Number(ms.toFixed(2)), tokens_per_s: Math.round((B * T) / (ms / 1000)) }));
  model.dispose();
  be.free(m.flat);
  be.free(v.flat);
}

const gen = flag('gen', 'sparsek:4096,sparsek:32768,dense:4096').split(',').filter(Boolean).map((x) => x.split(':'));
const genTokens = Number(flag('gen-tokens', '64'));
const genPreset = flag('gen-preset', 'gpt2small');
if (!(genPreset in PRESETS)) throw new Error(`--gen-preset: one of ${Object.keys(PRESETS).join(', ')}, got ${genPreset}`);
for (const [attention, ctx] of gen) {
  const context = Number(ctx);
  const base = PRESETS[genPreset];
  const c: ModelConfig = { ...base, attention: attention as ModelConfig['attention'], context, scoreSlope: 0.01,
    k: Number(flag('gen-k', String(base.k))), window: Number(flag('gen-w', String(base.window))) };
  const host = allocParams(c);
  initParams(host, c, 1);
  // Non-zero score weights, so selection depends on content as in a trained model.
  for (const l of host.layers) if (l.wscore) for (let i = 0; i < l.wscore.length; i++) l.wscore[i] = 0.05 * Math.sin(i);
  const dec = new CudaDecoder(c, host, be);
  const rng = new Rng(1);
  const prompt = Array.from({ length: context }, () => rng.int(c.vocabSize));
  const t0 = performance.now();
  dec.prefill(prompt); // one batched forward, then the cache gathered from it
  const prefill = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  for (let i = 0; i < genTokens; i++) dec.step(rng.int(c.vocabSize));
  const ms = (performance.now() - t1) / genTokens;
  // the same number of tokens again, with the GPU time of every kernel launch recorded
  const kernels = be.rt.profile(() => { for (let i = 0; i < genTokens; i++) dec.step(rng.int(c.vocabSize)); });
  const perToken = (names: (n: string) => boolean) => Number((kernels.filter((k) => names(k.name)).reduce((a, k) => a + k.ms, 0) / genTokens).toFixed(4));
  const st = dec.stats();
  console.log(JSON.stringify({ peer: 'sparsek-cuda', task: 'generate', preset: genPreset, attention, K: c.k, W: c.window, context,
    tokens_per_s: Number((1000 / ms).toFixed(1)), ms_per_token: Number(ms.toFixed(3)),
    attention_kernel_ms_per_token: perToken((n) => n.startsWith('decode_attention')), own_kernels_ms_per_token: perToken(() => true),
    cache_bytes: st.bytes, cap_hits: st.capHits, prefill_s: Number(prefill.toFixed(1)) }));
  dec.dispose();
}
