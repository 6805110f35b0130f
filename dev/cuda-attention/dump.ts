// Writes every kernel variant of src/cuda/kernels/{attention,selection}.ts to a folder as .cu files,
// so that they can be compiled without a GPU before a device run:
//
//   node --import tsx dev/cuda-attention/dump.ts /tmp/attn-cu
//   for f in /tmp/attn-cu/*.cu; do nvcc -arch=sm_90 -std=c++17 --ptx -o /dev/null "$f" || echo "FAILED $f"; done
//
// nvcc sees the same source NVRTC compiles at run time (neither includes host headers).

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KernelSource } from '../../src/cuda/runtime.js';
import {
  attentionBackwardKeySource, attentionBackwardQuerySource, attentionForwardSource, keyOffsetsSource, meanPrefixSource, scoreGradSource,
} from '../../src/cuda/kernels/attention.js';
import { keyIntervalsSource } from '../../src/cuda/kernels/selection.js';
import { selectGlobalSource, selectSharedSource } from './selection-tiles.js';

const dir = process.argv[2] ?? '/tmp/attn-cu';
mkdirSync(dir, { recursive: true });
const sources: KernelSource[] = [selectSharedSource({ CAP: 4096 }), selectSharedSource({ CAP: 2048 }), selectGlobalSource(), keyIntervalsSource(),
  keyOffsetsSource(), meanPrefixSource(), scoreGradSource()];
for (const HS of [48, 64, 7]) {
  for (const VEC of [1, 4] as const) {
    if (VEC === 4 && HS % 4 !== 0) continue;
    for (const SEL of [false, true]) {
      const o = { HS, VEC, SEL };
      sources.push(attentionForwardSource(o), attentionBackwardQuerySource(o), attentionBackwardKeySource(o));
    }
  }
}
for (const s of sources) writeFileSync(join(dir, `${s.name}.cu`), s.source);
console.log(`${sources.length} kernels written to ${dir}`);
