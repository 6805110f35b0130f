import { writeFileSync, mkdirSync } from 'node:fs';
import { bwdWinWgSource } from '../src/cuda/kernels/attention-wg-backward.js';
mkdirSync('/tmp/w2', { recursive: true });
for (const HS of [64, 128] as const) {
  const s = bwdWinWgSource({ HS, KB: 128, ASYNCL: true, BULKQ: true, QSTAGE: true, SW: true });
  writeFileSync(`/tmp/w2/${s.name}.cu`, s.source);
  const t = bwdWinWgSource({ HS, ASYNCL: true, BULKQ: true, QSTAGE: true, SW: true });
  writeFileSync(`/tmp/w2/${t.name}.cu`, t.source);
}
