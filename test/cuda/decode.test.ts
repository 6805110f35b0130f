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

// CudaDecoder.prefill: one batched CUDA forward over the prompt must leave the decoder where
// stepping leaves it. Oracles: the same decoder stepped through the prompt (same device, same
// tolerance as above: the batched forward's cuBLAS products and attention kernel sum in other
// orders than a step), and the CPU Decoder stepped (the verified reference). Compared: logits after
// the prompt and for 20 further steps, stats() (bytes, capHits, keys scored).
describe('CudaDecoder.prefill equals stepping through the prompt', { skip }, () => {
  const close = (got: Float32Array, want: Float32Array, what: string) => {
    const scale = want.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
    assert.ok(scale > 0.1, `${what}: logits not trivially small`);
    for (let v = 0; v < want.length; v++) assert.ok(Math.abs(got[v] - want[v]) <= 1e-4 * scale, `${what}, logit ${v}: ${got[v]} vs ${want[v]}`);
  };
  const cases: { name: string; over: Parameters<typeof tinyConfig>[0]; T: number; zeroScores?: boolean; precision?: 'bf16' }[] = [
    { name: 'sparsek K 5 W 4, T 60', over: { attention: 'sparsek', k: 5, window: 4 }, T: 60 },
    { name: 'sparsek K 6 W 0, T 40', over: { attention: 'sparsek', k: 6, window: 0 }, T: 40 },
    { name: 'sparsek K 0 W 4, T 30', over: { attention: 'sparsek', k: 0, window: 4 }, T: 30 },
    { name: 'sparsek K 50 >= T 37, W 3', over: { attention: 'sparsek', k: 50, window: 3, context: 64 }, T: 37 },
    { name: 'sparsek T 1', over: { attention: 'sparsek', k: 3, window: 2 }, T: 1 },
    { name: 'sparsek ties (score_proj 0, slope 0): batch stops at the first cap hit', over: { attention: 'sparsek', k: 3, window: 2, scoreSlope: 0, context: 64 }, T: 60, zeroScores: true },
    { name: 'sparsek prompt 100 > context 32: stepped after the context', over: { attention: 'sparsek', k: 4, window: 3, context: 32 }, T: 100 },
    { name: 'sparsek on a bf16-precision backend (prefill forward in fp32)', over: { attention: 'sparsek', k: 5, window: 4 }, T: 40, precision: 'bf16' },
    { name: 'window W 8, T 40', over: { attention: 'window', k: 0, window: 8 }, T: 40 },
    { name: 'dense, T 300 (past the first growth at 256)', over: { attention: 'dense', k: 0, window: 0, context: 300 }, T: 300 },
  ];
  for (const { name, over, T, zeroScores, precision } of cases) {
    test(name, async () => {
      const { cudaRuntime } = await import('../../src/cuda/runtime.js');
      const { c, p } = model(over);
      if (zeroScores) for (const l of p.layers) l.wscore?.fill(0);
      const be = precision ? new CudaBackend(cudaRuntime(), { precision }) : new CudaBackend();
      const pre = new CudaDecoder(c, p, be);
      const ref = new CudaDecoder(c, p, be, { batchPrefill: false });
      const cpu = new Decoder(c, p);
      const ids = randomIds(T + 20, c.vocabSize, 5);
      const got = Float32Array.from(pre.prefill(ids.slice(0, T)));
      let want = new Float32Array(0);
      let wantCpu = new Float32Array(0);
      for (let t = 0; t < T; t++) {
        want = Float32Array.from(ref.step(ids[t]));
        wantCpu = Float32Array.from(cpu.step(ids[t]));
      }
      close(got, want, 'after the prompt (GPU stepped)');
      close(got, wantCpu, 'after the prompt (CPU stepped)');
      assert.deepEqual(pre.stats(), ref.stats());
      assert.equal(pre.length, T);
      if (zeroScores) assert.ok(ref.stats().capHits > 0, 'expected the support cap to be reached');
      for (let t = T; t < T + 20; t++) {
        const g = Float32Array.from(pre.step(ids[t]));
        close(g, ref.step(ids[t]), `step ${t - T + 1} after the prompt (GPU stepped)`);
        close(g, cpu.step(ids[t]), `step ${t - T + 1} after the prompt (CPU stepped)`);
      }
      assert.deepEqual(pre.stats(), ref.stats());
      pre.dispose();
      ref.dispose();
    });
  }

  test('prefill gives back the device memory of its forward', () => {
    const { c, p } = model({ attention: 'sparsek', k: 5, window: 4, context: 128 });
    const be = new CudaBackend();
    const ids = randomIds(100, c.vocabSize, 3);
    // A first round warms whatever the backend keeps for good (scratch, workspaces); the second
    // must end where it began.
    const warm = new CudaDecoder(c, p, be);
    warm.prefill(ids);
    warm.dispose();
    const before = be.counters().inUseBytes;
    const dec = new CudaDecoder(c, p, be);
    const held = be.counters().inUseBytes;
    dec.prefill(ids);
    assert.equal(be.counters().inUseBytes, held, 'bytes in use after prefill: the cache only');
    dec.dispose();
    assert.equal(be.counters().inUseBytes, before);
  });
});

describe('CudaDecoder.supports (no GPU needed)', () => {
  test('admits exactly the models step() computes: Llama-style blocks without biases, tied head', () => {
    const base = tinyConfig({ attention: 'sparsek', k: 4, window: 3 });
    assert.equal(CudaDecoder.supports(base), true);
    assert.equal(CudaDecoder.supports({ ...base, attention: 'window' }), true);
    assert.equal(CudaDecoder.supports({ ...base, attention: 'qktopk' }), false, 'no cache form');
    for (const over of [{ norm: 'layer' as const }, { mlp: 'gelu' as const }, { positions: 'learned' as const }, { qkvBias: true },
      { outBias: true }, { mlpBias: true }, { tieEmbeddings: false }, { parallelResidual: true }, { rotaryDims: 2 }]) {
      assert.equal(CudaDecoder.supports({ ...base, ...over }), false, JSON.stringify(over));
    }
  });
});
