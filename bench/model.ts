// CPU model benchmark (issue: the language model end to end): training tokens/s for the demo
// model with SparseK and dense attention, and generation tokens/s after a context of 1K and 8K
// tokens, with the K/V cache size. Same model, same process, same run.
//
//   npm run bench:model [-- --contexts 1024,8192 --tokens 64]

import os from 'node:os';
import { execSync } from 'node:child_process';
import { Gpt } from '../src/model/gpt.js';
import { Decoder } from '../src/model/decode.js';
import { initParams } from '../src/model/params.js';
import { ModelConfig, PRESETS } from '../src/model/config.js';
import { Rng } from '../src/core/random.js';
import { threadCount, whenReady } from '../src/cpu/threads.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const contexts = flag('contexts', '1024,8192').split(',').map(Number);
const newTokens = Number(flag('tokens', '64'));
const kinds = ['sparsek', 'dense'] as const;

function model(attention: ModelConfig['attention']): { c: ModelConfig; m: Gpt } {
  const c: ModelConfig = { ...PRESETS.demo, attention };
  const m = Gpt.cpu(c);
  initParams(m.params, c, 1);
  // Non-zero scores, so SparseK selects by content as a trained model would.
  if (attention === 'sparsek') for (const l of m.params.layers) for (let i = 0; i < l.wscore!.length; i++) l.wscore![i] = 0.5 * Math.sin(i);
  return { c, m };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const commit = (() => {
  try {
    return execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
})();
await whenReady();
console.log(`# model benchmark: ${os.cpus()[0]?.model}, ${threadCount()} threads for matmul (SPARSEK_THREADS), Node ${process.version}, commit ${commit}, ${new Date().toISOString().slice(0, 10)}`);
const d = PRESETS.demo;
console.log(`# demo model: ${d.layers} layers, width ${d.dim}, ${d.heads} heads (${d.kvHeads} KV), vocab ${d.vocabSize}; sparsek K=${d.k} W=${d.window}\n`);

console.log('| training (B=8, T=256) | ms/step | tokens/s |');
console.log('|---|---|---|');
for (const kind of kinds) {
  const { c, m } = model(kind);
  const B = 8;
  const T = c.context;
  const rng = new Rng(0);
  const ids = Array.from({ length: B * T }, () => rng.int(c.vocabSize));
  const times: number[] = [];
  for (let it = 0; it < 4; it++) {
    const t0 = performance.now();
    m.forward(ids, B, T, ids);
    m.zeroGrad();
    m.backward();
    if (it > 0) times.push(performance.now() - t0);
  }
  const ms = median(times);
  console.log(`| ${kind} | ${ms.toFixed(0)} | ${((B * T) / (ms / 1000)).toFixed(0)} |`);
}

console.log('\n| generation | context | tokens/s | ms/token | K/V cache (KiB) |');
console.log('|---|---|---|---|---|');
for (const ctx of contexts) {
  for (const kind of kinds) {
    const { c, m } = model(kind);
    const dec = new Decoder(c, m.params);
    const rng = new Rng(1);
    for (let i = 0; i < ctx; i++) dec.step(rng.int(c.vocabSize));
    const t0 = performance.now();
    for (let i = 0; i < newTokens; i++) dec.step(rng.int(c.vocabSize));
    const ms = (performance.now() - t0) / newTokens;
    console.log(`| ${kind} | ${ctx} | ${(1000 / ms).toFixed(1)} | ${ms.toFixed(2)} | ${(dec.stats().bytes / 1024).toFixed(0)} |`);
  }
}
