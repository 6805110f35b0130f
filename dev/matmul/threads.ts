// Threaded matmul (src/cpu/threads.ts) on the demo model: training step time (B = 8, T = 256,
// forward + backward, as bench/model.ts) and each of the step's matmul shapes, with the thread
// count this process was given. Compare by running it twice:
//
//   SPARSEK_THREADS=1 node --import tsx dev/matmul/threads.ts
//   SPARSEK_THREADS=2 node --import tsx dev/matmul/threads.ts [--steps 8]
//
// Medians after one warm-up step; the load average is printed because a busy machine takes the
// second core away first. GFLOP/s counts 2 N C OC per forward and 4 N C OC per backward.

import os from 'node:os';
import { Gpt } from '../../src/model/gpt.js';
import { initParams } from '../../src/model/params.js';
import { PRESETS, headSize } from '../../src/model/config.js';
import { Rng } from '../../src/core/random.js';
import { matmulBackward, matmulForward } from '../../src/cpu/kernels/matmul.js';
import { allocF32, threadCount, whenReady } from '../../src/cpu/threads.js';

const args = process.argv.slice(2);
const steps = Number(args[args.indexOf('--steps') + 1] ?? 0) || 6;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

const c = PRESETS.demo;
const B = 8, T = c.context, N = B * T;
const m = Gpt.cpu(c);
initParams(m.params, c, 1);
for (const l of m.params.layers) for (let i = 0; i < l.wscore!.length; i++) l.wscore![i] = 0.5 * Math.sin(i);
await whenReady();
console.log(`# ${os.cpus()[0]?.model}, ${threadCount()} thread(s), Node ${process.version}, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);

const rng = new Rng(0);
const ids = Array.from({ length: N }, () => rng.int(c.vocabSize));
const times: number[] = [];
for (let it = 0; it <= steps; it++) {
  const t0 = performance.now();
  m.forward(ids, B, T, ids);
  m.zeroGrad();
  m.backward();
  if (it > 0) times.push(performance.now() - t0);
}
const ms = median(times);
console.log(`training step (demo, B=${B}, T=${T}): ${ms.toFixed(0)} ms median of ${steps} (min ${Math.min(...times).toFixed(0)}, max ${Math.max(...times).toFixed(0)}), ${((N / ms) * 1000).toFixed(0)} tokens/s`);

// The step's matmul shapes (C, OC), each called with N = B*T rows.
const HS = headSize(c);
const shapes: [string, number, number][] = [
  ['q', c.dim, c.heads * HS], ['k/v', c.dim, c.kvHeads * HS], ['o', c.heads * HS, c.dim],
  ['gate/up', c.dim, c.ffnDim], ['down', c.ffnDim, c.dim], ['lm head', c.dim, c.vocabSize],
];
console.log('\n| matmul (N, C, OC) | forward ms | GFLOP/s | backward ms | GFLOP/s |');
console.log('|---|---|---|---|---|');
const fill = (n: number) => {
  const a = allocF32(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal();
  return a;
};
for (const [name, C, OC] of shapes) {
  const x = fill(N * C), w = fill(OC * C), out = allocF32(N * OC), dout = fill(N * OC), dx = allocF32(N * C), dw = allocF32(OC * C);
  const tf: number[] = [], tb: number[] = [];
  for (let r = 0; r < 8; r++) {
    let t0 = performance.now();
    matmulForward(out, x, w, null, N, C, OC);
    tf.push(performance.now() - t0);
    t0 = performance.now();
    matmulBackward(dx, dw, null, dout, x, w, N, C, OC);
    tb.push(performance.now() - t0);
  }
  const f = median(tf.slice(1)), b = median(tb.slice(1)), flop = 2 * N * C * OC;
  console.log(`| ${name} (${N}, ${C}, ${OC}) | ${f.toFixed(2)} | ${(flop / f / 1e6).toFixed(1)} | ${b.toFixed(2)} | ${((2 * flop) / b / 1e6).toFixed(1)} |`);
}
