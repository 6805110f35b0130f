// Decoding on the GPU (SPEC section 5, issue 4): CudaDecoder's logits equal the CPU Decoder's at
// every position (fp32 on both, different summation order: 1e-4 of the row's largest logit), its
// memory stops growing after W + K positions, and a decode step makes no device allocation.
// Skipped visibly without a CUDA device.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cudaAvailability } from '../../src/cuda/runtime.js';
import { CudaBackend } from '../../src/cuda/backend.js';
import { CudaDecoder } from '../../src/cuda/decode.js';
import { Decoder } from '../../src/model/decode.js';
import { Gpt } from '../../src/model/gpt.js';
import { fillParams, randomIds, tinyConfig } from '../model/fixtures.js';

const avail = cudaAvailability();
const skip = avail.available ? false : `no CUDA device: ${avail.reason}`;

// Slope 0.2: candidates leave SparseK's support within a few steps, so decoding stays exact (no
// support-cap hits) and the host's scalar support list settles early (0.05 hits the cap here).
function model(over: Parameters<typeof tinyConfig>[0]) {
  const c = tinyConfig({ dim: 32, heads: 4, kvHeads: 2, ffnDim: 48, scoreSlope: 0.2, ...over });
  const p = Gpt.cpu(c).params;
  fillParams(p, 11, 0.5);
  return { c, p };
}

describe('CudaDecoder', { skip }, () => {
  const cases = [
    { name: 'sparsek K 5 W 4', over: { attention: 'sparsek' as const, k: 5, window: 4 }, T: 60 },
    { name: 'sparsek K 6 W 0', over: { attention: 'sparsek' as const, k: 6, window: 0 }, T: 40 },
    { name: 'window W 8', over: { attention: 'window' as const, k: 0, window: 8 }, T: 40 },
    { name: 'dense, past the first growth (256)', over: { attention: 'dense' as const, k: 0, window: 0, context: 300 }, T: 300 },
  ];
  for (const { name, over, T } of cases) {
    test(`${name}: logits equal the CPU decoder's at every position`, () => {
      const { c, p } = model(over);
      const be = new CudaBackend();
      const gpu = new CudaDecoder(c, p, be);
      const cpu = new Decoder(c, p);
      const ids = randomIds(T, c.vocabSize, 5);
      for (let t = 0; t < T; t++) {
        const want = cpu.step(ids[t]);
        const got = gpu.step(ids[t]);
        const scale = want.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
        for (let v = 0; v < want.length; v++) {
          assert.ok(Math.abs(got[v] - want[v]) <= 1e-4 * scale, `position ${t}, logit ${v}: ${got[v]} vs ${want[v]}`);
        }
        assert.equal(gpu.stats().keysLastStep, cpu.stats().keysLastStep, `keys scored at position ${t}`);
      }
      gpu.dispose();
    });
  }

  test('sparsek: device memory constant after the first step, cache bytes constant over the last 2,000 of 2,700 steps', () => {
    const { c, p } = model({ attention: 'sparsek', k: 5, window: 4 });
    const be = new CudaBackend();
    const dec = new CudaDecoder(c, p, be);
    const ids = randomIds(2700, c.vocabSize, 9);
    dec.step(ids[0]);
    const device = be.counters();
    let bytes = 0;
    for (let t = 1; t < 2700; t++) {
      dec.step(ids[t]);
      // K/V slots are allocated once: no step allocates device memory.
      const now = be.counters();
      assert.equal(now.inUseBytes, device.inUseBytes, `device bytes in use at step ${t}`);
      assert.equal(now.driverAllocs, device.driverAllocs, `cuMemAlloc calls at step ${t}`);
      // The host's scalar support list settles below supportCap (its heaps grow by doubling).
      if (t === 700) bytes = dec.stats().bytes;
      if (t > 700) assert.equal(dec.stats().bytes, bytes, `cache bytes at step ${t}`);
    }
    assert.equal(dec.stats().capHits, 0);
    dec.dispose();
  });
});

describe('generate on CUDA for kinds without a cache (RecomputeDecoder on the GPU)', { skip }, () => {
  for (const attention of ['fixed', 'hash', 'qktopk'] as const) {
    test(`${attention}: greedy tokens equal the CPU's`, async () => {
      const { generate, RecomputeDecoder } = await import('../../src/model/generate.js');
      const c = tinyConfig({ attention, window: 3, k: 4, context: 12 });
      const host = Gpt.cpu(c);
      fillParams(host.params, 7);
      const prompt = randomIds(5, c.vocabSize, 2);
      const opts = { tokens: 15, temperature: 0, topP: 1, seed: 1 };
      const cpu = generate(c, host.params, prompt, opts);
      const be = new CudaBackend();
      const gpu = generate(c, host.params, prompt, {
        ...opts,
        decoder: () => {
          const m = new Gpt(c, be);
          be.upload(m.params.flat, host.params.flat);
          return new RecomputeDecoder(m);
        },
      });
      // fp32 logits of the same forward: the argmax agrees unless two logits tie within rounding,
      // which random weights make vanishingly unlikely over 15 tokens.
      assert.deepEqual(gpu.ids, cpu.ids);
    });
  }
});
