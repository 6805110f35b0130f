// Charts one attention benchmark run: time against sequence length for our layer and the PyTorch
// peers, forward + backward (solid) and forward (dashed), both axes log.
//
//   node --import tsx bench/plot-attention.ts bench/data/h100-2026-11-24.jsonl docs/img/attention-h100.png
//
// Input: JSON lines of one shape, as bench/attention.ts prints them (peer "sparsek-cuda": fwd_ms,
// fwd_bwd_ms) and .device/peers.py prints them (peers "sdpa", "flex_spk", "flex_win": fwd_ms,
// fwdbwd_ms); other lines (device, notes, profiles) are skipped.

import { readFileSync } from 'node:fs';
import { lossChart, writePlot } from '../src/plot/index.js';
import type { LossSeries } from '../src/plot/index.js';

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: node --import tsx bench/plot-attention.ts RUN.jsonl OUT.png|OUT.svg');
  process.exit(2);
}

const names: Record<string, string> = {
  'sparsek-cuda': 'SparseK (ours, selection included)',
  sdpa: 'SDPA FlashAttention (dense)',
  flex_spk: 'FlexAttention, SparseK mask',
  flex_win: 'FlexAttention, window only',
};
const rows = new Map<string, { T: number; fwd: number; both: number }[]>();
for (const [n, line] of readFileSync(input, 'utf8').split('\n').entries()) {
  if (!line.trim().startsWith('{')) continue;
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`${input}:${n + 1}: not JSON: ${line.slice(0, 80)}`);
  }
  const peer = r.peer;
  if (typeof peer !== 'string' || !(peer in names) || typeof r.T !== 'number') continue;
  const both = (r.fwd_bwd_ms ?? r.fwdbwd_ms) as number, fwd = r.fwd_ms as number;
  if (!(Number.isFinite(both) && Number.isFinite(fwd))) throw new Error(`${input}:${n + 1}: ${peer} without fwd_ms and forward + backward ms`);
  rows.set(peer, [...(rows.get(peer) ?? []), { T: r.T, fwd, both }]);
}
if (rows.size === 0) throw new Error(`${input}: no benchmark lines (peer sparsek-cuda, sdpa, flex_spk or flex_win)`);

const series: LossSeries[] = [];
for (const [peer, pts] of rows) {
  series.push({ name: `${names[peer]}, fwd+bwd`, group: peer, points: pts.map((p) => ({ step: p.T, loss: p.both })) });
  series.push({ name: `${names[peer]}, fwd`, group: peer, dashed: true, points: pts.map((p) => ({ step: p.T, loss: p.fwd })) });
}
writePlot(output, lossChart(series, {
  title: 'One attention layer on an H100 (16 heads, HS 64, K = W = 512, bf16)',
  xLabel: 'sequence length T', yLabel: 'ms', logX: true, logY: true, width: 1000, height: 560,
}), { scale: 1.5 });
console.log(`wrote ${output}: ${[...rows.keys()].join(', ')}`);
