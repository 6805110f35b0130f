// Compiles every kernel that may take bf16 buffers, specialised with each float pointer in bf16
// alone and with all of them, through nvcc (no GPU needed): a type error in the bf16 storage path
// shows here before device time is spent. Run: node --import tsx dev/bf16/compile-check.ts
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KernelSource } from '../../src/cuda/runtime.js';
import { specialise, toBf16Source } from '../../src/cuda/kernels/storage.js';
import { geluBackwardSource, geluForwardSource, swigluBackwardSource, swigluForwardSource } from '../../src/cuda/kernels/activation.js';
import {
  layernormBackwardSource, layernormForwardSource, layernormWeightPartialsSource, rmsnormBackwardSource, rmsnormForwardSource,
  rmsnormWeightPartialsSource,
} from '../../src/cuda/kernels/norm.js';
import { addInPlaceSource, fromHeadsSource, toHeadsSource } from '../../src/cuda/kernels/layout.js';
import { crossEntropyBackwardSource, crossEntropyForwardSource } from '../../src/cuda/kernels/loss.js';
import { columnPartialsSource } from '../../src/cuda/kernels/reduce.js';
import { addBiasSource } from '../../src/cuda/kernels/matmul.js';

const kernels: KernelSource[] = [
  swigluForwardSource(), swigluBackwardSource(), geluForwardSource({ form: 'erf' }), geluBackwardSource({ form: 'tanh' }),
  rmsnormForwardSource({ BLOCK: 128 }), rmsnormBackwardSource({ BLOCK: 128 }), rmsnormWeightPartialsSource(),
  layernormForwardSource({ BLOCK: 128 }), layernormBackwardSource({ BLOCK: 128 }), layernormWeightPartialsSource(),
  toHeadsSource(), fromHeadsSource(), addInPlaceSource(), crossEntropyForwardSource({ BLOCK: 512 }), crossEntropyBackwardSource(),
  columnPartialsSource(), addBiasSource(), toBf16Source(),
];
const dir = mkdtempSync(join(tmpdir(), 'bf16-'));
let n = 0;
for (const k of kernels) {
  const floats = [...k.source.matchAll(/float\*/g)].length; // a lower bound; specialise checks the real list
  const variants: boolean[][] = [];
  const isFloatPtr = k.params.map((p) => p === 'ptr');
  for (let i = 0; i < k.params.length; i++) if (isFloatPtr[i]) variants.push(k.params.map((_, j) => j === i));
  for (const flags of variants) {
    let src: KernelSource;
    try {
      src = specialise(k, flags);
    } catch (e) {
      continue; // an int or double pointer: specialise refuses it, as it should
    }
    const file = join(dir, `${k.name}-${n++}.cu`);
    writeFileSync(file, src.source);
    execFileSync('nvcc', ['-arch=sm_90', '-std=c++17', '-c', '-o', '/dev/null', file], { stdio: 'inherit' });
  }
  console.log(`${k.name}: ${variants.length} variants (${floats} float pointers) compiled`);
}
