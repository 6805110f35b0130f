// Runs one layout probe (probe.ts) in its own process, so that a descriptor that faults the GPU
// context loses only this one probe: prints one JSON line per result, appends it to --out.
//
//   node --import tsx dev/cuda-attention-wgmma/probe-main.ts --HS 64 --swap 0 [--out FILE]

import { appendFileSync } from 'node:fs';
import { cudaAvailability } from '../../src/cuda/runtime.js';
import { runProbes } from './probe.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : dflt);
const HS = Number(opt('HS', '64')) as 64 | 128, swap = opt('swap', '0') === '1', out = opt('out', '');
const avail = cudaAvailability();
if (!avail.available) {
  console.log(`no CUDA device: ${avail.reason}`);
  process.exit();
}
try {
  for (const r of runProbes(avail.runtime, [HS], [swap])) {
    const line = JSON.stringify({ kind: 'probe', ...r });
    console.log(line);
    if (out) appendFileSync(out, line + '\n');
  }
} catch (e) {
  const line = JSON.stringify({ kind: 'probe-fault', HS, swap, error: String((e as Error).message).split('\n')[0] });
  console.log(line);
  if (out) appendFileSync(out, line + '\n');
  process.exitCode = 1;
}
