// WebGpuDecoder (src/webgpu/decode.ts), SPEC.md section 5: decoding token by token with the
// constant-memory cache gives the full forward's logits at every position (the CPU Gpt's, the
// verified reference, and the WebGPU forward's), and its memory stops growing after W + K
// positions while dense attention's grows. Tolerance 1e-5 of each row's largest logit, as in
// model.test.ts (fp32 on both sides, different summation orders). Skipped visibly without a
// WebGPU device.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { WebGpuModel } from '../../src/webgpu/model.js';
import { WebGpuDecoder } from '../../src/webgpu/decode.js';
import type { ModelConfig } from '../../src/model/config.js';
import { randomIds } from '../model/fixtures.js';
import { cpuLogits, smallModel as model, testRuntime, worstRowError } from './gpu.js';

const { rt, skip } = await testRuntime();

describe('WebGpuDecoder: the constant-memory cache', { skip }, () => {
  const r = rt!;
  const cases: [string, Partial<ModelConfig>, number][] = [
    ['sparsek K 5 W 4', { attention: 'sparsek', k: 5, window: 4 }, 60],
    ['sparsek K 6 W 0 (scores read back per layer)', { attention: 'sparsek', k: 6, window: 0 }, 30],
    ['window W 8', { attention: 'window', k: 0, window: 8 }, 30],
    ['dense', { attention: 'dense', k: 0, window: 0 }, 30],
    ['NeoX block with sparsek', { attention: 'sparsek', k: 4, window: 3, norm: 'layer', mlp: 'gelu', rotaryDims: 4, parallelResidual: true, tieEmbeddings: false }, 30],
  ];
  for (const [name, over, T] of cases) {
    test(`${name}: logits at every position equal the CPU full forward's and the WebGPU full forward's`, async () => {
      const { c, cpu } = model({ ...over, context: T });
      const m = await WebGpuModel.create(r, c, cpu.params);
      const dec = new WebGpuDecoder(m);
      try {
        const ids = randomIds(T, c.vocabSize, 5);
        const want = cpuLogits(cpu, ids);
        const full = await m.logits(ids);
        const V = c.vocabSize;
        for (let t = 0; t < T; t++) {
          const got = await dec.step(ids[t]);
          const row = want.subarray(t * V, (t + 1) * V);
          const e1 = worstRowError(got, row, V);
          const e2 = worstRowError(got, full.subarray(t * V, (t + 1) * V), V);
          assert.ok(e1 <= 1e-5 && e2 <= 1e-5, `position ${t}: ${e1.toExponential(2)} vs the CPU, ${e2.toExponential(2)} vs the WebGPU forward`);
        }
        assert.equal(dec.stats().capHits, 0);
      } finally {
        dec.dispose();
        m.dispose();
      }
    });
  }

  test('sparsek: cache bytes constant after W + K positions over 150 steps, keys per step <= NH (W + K)', async () => {
    const K = 5, W = 4;
    const { c, cpu } = model({ attention: 'sparsek', k: K, window: W, layers: 1, context: 150 });
    const m = await WebGpuModel.create(r, c, cpu.params);
    const dec = new WebGpuDecoder(m);
    const bytes: number[] = [];
    const ids = randomIds(150, c.vocabSize, 9);
    for (const id of ids) {
      await dec.step(id);
      const s = dec.stats();
      bytes.push(s.bytes);
      assert.ok(s.keysLastStep <= c.layers * c.heads * (W + K), `keys ${s.keysLastStep}`);
    }
    const settled = 40; // W + K and the selector's heaps reaching their cap (4 K scalars)
    for (let i = settled; i < bytes.length; i++) assert.equal(bytes[i], bytes[bytes.length - 1], `bytes changed at step ${i}`);
    const HS = c.dim / c.heads;
    assert.ok(bytes[bytes.length - 1] >= c.layers * c.kvHeads * (W + K) * 2 * HS * 4, 'bytes below the K/V floor');
    assert.equal(dec.stats().capHits, 0);
    dec.dispose();
    m.dispose();
  });

  test('dense grows its cache past 256 positions (the comparison the constant cache is against), logits still exact', async () => {
    const { c, cpu } = model({ attention: 'dense', k: 0, window: 0, layers: 1, context: 300 });
    const m = await WebGpuModel.create(r, c, cpu.params);
    const dec = new WebGpuDecoder(m);
    const before = dec.stats().bytes;
    const ids = randomIds(262, c.vocabSize, 2);
    const want = cpuLogits(cpu, ids);
    const V = c.vocabSize;
    for (const [t, id] of ids.entries()) {
      const got = await dec.step(id);
      if (t >= 250) {
        const err = worstRowError(got, want.subarray(t * V, (t + 1) * V), V);
        assert.ok(err <= 1e-5, `position ${t} (after the ring doubled at 256): ${err.toExponential(2)}`);
      }
    }
    assert.ok(dec.stats().bytes > 1.9 * before, `bytes ${before} -> ${dec.stats().bytes}`);
    dec.dispose();
    m.dispose();
  });
});
