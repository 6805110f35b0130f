// Where a training step's time goes on the GPU: wraps every Backend method (and the attention
// layers' forward/backward) with a synchronize and a timer, runs a few steps of the
// GPT-2-small-shaped model, and prints milliseconds per step by op, largest first. The
// synchronisation adds launch gaps, so the total exceeds an unwrapped step: read shares, not sums.
//   node --import tsx dev/profile-step.ts [--attention sparsek] [--precision bf16] [--T 4096]
import { CudaBackend } from '../src/cuda/backend.js';
import type { Backend, Precision } from '../src/backend.js';
import { Gpt } from '../src/model/gpt.js';
import { ModelConfig, PRESETS } from '../src/model/config.js';
import { allocParams, allocParamsOn, initParams } from '../src/model/params.js';
import { Rng } from '../src/core/random.js';
import { optimizerStep } from '../bench/step.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : fallback);
const attention = flag('attention', 'sparsek') as ModelConfig['attention'];
const precision = flag('precision', 'bf16') as Precision;
const T = Number(flag('T', '4096'));
const raw = new CudaBackend(undefined, { precision });
const totals = new Map<string, number>();
const timed = <A extends unknown[], R>(name: string, f: (...a: A) => R) => (...a: A): R => {
  raw.synchronize();
  const t0 = performance.now();
  const r = f(...a);
  raw.synchronize();
  totals.set(name, (totals.get(name) ?? 0) + performance.now() - t0);
  return r;
};
const be = new Proxy(raw, {
  get(target, prop, recv) {
    const v = Reflect.get(target, prop, recv);
    if (typeof v !== 'function' || typeof prop !== 'string') return v;
    const bound = v.bind(target);
    if (prop === 'attention') {
      return (...a: Parameters<typeof target.attention>) => {
        const layer = bound(...a);
        return { ...layer, forward: timed('attention.forward', layer.forward), backward: timed('attention.backward', layer.backward) };
      };
    }
    return ['alloc', 'view', 'free', 'length', 'synchronize'].includes(prop) ? bound : timed(prop, bound);
  },
}) as Backend<unknown, unknown>;

const c: ModelConfig = { ...PRESETS.gpt2small, attention, context: T, scoreSlope: 0.01 };
const host = allocParams(c);
initParams(host, c, 1);
const model = new Gpt(c, be);
be.upload(model.params.flat, host.flat);
const m = allocParamsOn(c, be);
const v = allocParamsOn(c, be);
const ids = Array.from({ length: T }, (_, i) => new Rng(i).int(c.vocabSize));
const steps = 3;
let wall = 0;
for (let s = 0; s < steps + 1; s++) {
  if (s === 1) totals.clear();
  const t0 = performance.now();
  model.forward(ids, 1, T, ids);
  model.zeroGrad();
  model.backward();
  optimizerStep(be, model, m, v, s + 1);
  raw.synchronize();
  if (s > 0) wall += performance.now() - t0;
}
console.log(`# ${attention}, ${precision}, T = ${T}: ${(wall / steps).toFixed(1)} ms per profiled step`);
for (const [name, ms] of [...totals].sort((a, b) => b[1] - a[1])) console.log(`${name.padEnd(24)} ${(ms / steps).toFixed(2).padStart(9)} ms`);
