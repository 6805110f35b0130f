// The WebGPU model (src/webgpu/model.ts):
// - full-forward logits equal the CPU Gpt's for the native SparseK model and the baselines it
//   runs, and every architecture variant (LayerNorm, GELU, learned positions, partial RoPE,
//   biases, untied head, parallel residual);
// - loadModel(dir, { device: 'webgpu' }) on the Hugging Face fixtures matches the logits that
//   transformers computed (test/fixtures/hf/*/reference.json), an oracle independent of this code.
// Cached decoding is decode.test.ts.
// Tolerance: fp32 on both sides with different summation orders; errors are measured relative to
// each row's largest logit, 1e-5 (the CPU accumulates in float64, the GPU in fp32: ~10 ulp over
// the model's few hundred terms per sum). Against transformers the bound is 1e-4, as in
// test/io/hf.test.ts. Skipped visibly without a WebGPU device.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { WebGpuModel } from '../../src/webgpu/model.js';
import { loadModel } from '../../src/model/load.js';
import type { ModelConfig } from '../../src/model/config.js';
import { DeviceError, ArgumentError } from '../../src/core/errors.js';
import { saveRun } from '../../src/io/checkpoint.js';
import { DEFAULT_TRAIN } from '../../src/train/train.js';
import { ByteTokenizer } from '../../src/tokenizer/index.js';
import { randomIds } from '../model/fixtures.js';
import { cpuLogits, smallModel as model, testRuntime, worstRowError } from './gpu.js';

const { rt, skip } = await testRuntime();
const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'hf');

describe('WebGpuModel: full forward', { skip }, () => {
  const r = rt!;
  const cases: [string, Partial<ModelConfig>][] = [
    ['sparsek K 5 W 4 (the native model)', { attention: 'sparsek', k: 5, window: 4 }],
    ['sparsek K 3 W 0', { attention: 'sparsek', k: 3, window: 0 }],
    ['sparsek K >= T', { attention: 'sparsek', k: 60, window: 2 }],
    ['window W 6', { attention: 'window', k: 0, window: 6 }],
    ['dense', { attention: 'dense', k: 0, window: 0 }],
    ['GPT-2 block: LayerNorm, GELU tanh, learned positions, biases', { attention: 'dense', norm: 'layer', mlp: 'gelu_tanh', positions: 'learned', qkvBias: true, outBias: true, mlpBias: true }],
    ['NeoX block: parallel residual, partial RoPE, exact GELU, untied head', { attention: 'sparsek', k: 4, window: 3, norm: 'layer', mlp: 'gelu', rotaryDims: 4, parallelResidual: true, tieEmbeddings: false, qkvBias: true }],
    ['Qwen2-like: q/k/v biases, SwiGLU with mlp biases, untied head', { attention: 'window', window: 5, qkvBias: true, mlpBias: true, tieEmbeddings: false }],
  ];
  for (const [name, over] of cases) {
    test(`${name}: logits equal the CPU's (T 1, 7, 50)`, async () => {
      const { c, cpu } = model(over);
      const m = await WebGpuModel.create(r, c, cpu.params);
      try {
        for (const T of [1, 7, 50]) {
          const ids = randomIds(T, c.vocabSize, T);
          const err = worstRowError(await m.logits(ids), cpuLogits(cpu, ids), c.vocabSize);
          assert.ok(err <= 1e-5, `T ${T}: worst row error ${err.toExponential(2)} of the row max`);
        }
      } finally {
        m.dispose();
      }
    });
  }

  test('the attention settings matter at this scale (the checks above have teeth)', async () => {
    // Same weights, K 5 vs K 2: if selection or gates were ignored, these would agree.
    const a = model({ attention: 'sparsek', k: 5, window: 4 });
    const b = model({ attention: 'sparsek', k: 2, window: 4 });
    const ids = randomIds(50, a.c.vocabSize, 3);
    const err = worstRowError(cpuLogits(b.cpu, ids), cpuLogits(a.cpu, ids), a.c.vocabSize);
    assert.ok(err > 1e-2, `K 2 vs K 5 differ by only ${err.toExponential(2)}`);
  });

  test('unsupported attention kinds and bad ids are typed errors', async () => {
    for (const attention of ['fixed', 'hash', 'qktopk'] as const) {
      const { c, cpu } = model({ attention, k: 3, window: 2 });
      await assert.rejects(WebGpuModel.create(r, c, cpu.params), (e: Error) => e instanceof DeviceError && e.message.includes(`'${attention}'`));
    }
    const { c, cpu } = model({ attention: 'sparsek', k: 3, window: 2 });
    const m = await WebGpuModel.create(r, c, cpu.params);
    await assert.rejects(m.logits([]), ArgumentError);
    await assert.rejects(m.logits([1, c.vocabSize]), (e: Error) => e instanceof ArgumentError && /ids\[1\]/.test(e.message));
    m.dispose();
    await assert.rejects(m.logits([1]), ArgumentError);
  });
});

describe('loadModel(dir, { device: \'webgpu\' })', { skip }, () => {
  for (const family of ['llama', 'qwen2', 'mistral', 'gpt2', 'gpt_neox']) {
    test(`${family}: logits match transformers' within 1e-4 of the row max`, async () => {
      const ref = JSON.parse(fs.readFileSync(path.join(FIXTURES, family, 'reference.json'), 'utf8')) as { sequences: { ids: number[]; logits_f32le_base64: string }[] };
      const m = await loadModel(path.join(FIXTURES, family), { device: 'webgpu' });
      try {
        assert.equal(m.device, 'webgpu');
        for (const s of ref.sequences) {
          const buf = Buffer.from(s.logits_f32le_base64, 'base64');
          const want = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
          const err = worstRowError(await m.logits(s.ids), want, m.config.vocabSize);
          assert.ok(err <= 1e-4, `T ${s.ids.length}: worst row error ${err.toExponential(2)}`);
        }
      } finally {
        m.dispose();
      }
    });
  }

  test('sparsek generate --device webgpu prints what --device cpu prints (greedy), with the same cache size', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparsek-webgpu-cli-'));
    try {
      const { c, cpu } = model({ vocabSize: 256, attention: 'sparsek', k: 4, window: 3 });
      await saveRun(dir, { model: c, train: DEFAULT_TRAIN, params: cpu.params, m: null, v: null, step: 0, rng: [1, 2, 3, 4], elapsedSeconds: 0, tokenizer: new ByteTokenizer() }, []);
      const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli.ts');
      const run = (device: string) => {
        const p = spawnSync(process.execPath, ['--import', 'tsx', cli, 'generate', '--checkpoint', dir, '--prompt', 'abc', '--tokens', '24',
          '--temperature', '0', '--stats', '--device', device], { encoding: 'utf8', env: process.env });
        assert.equal(p.status, 0, p.stderr);
        const lines = p.stdout.trim().split('\n');
        return { text: lines.slice(0, -1).join('\n'), stats: JSON.parse(lines[lines.length - 1]) };
      };
      const [gpu, host] = [run('webgpu'), run('cpu')];
      assert.equal(gpu.text, host.text);
      assert.equal(gpu.stats.tokens, 24);
      // The same W + K slots per head; the two decoders count their small per-slot bookkeeping differently.
      assert.ok(Math.abs(gpu.stats.cacheBytesFinal - host.stats.cacheBytesFinal) <= 0.05 * host.stats.cacheBytesFinal,
        `cache bytes ${gpu.stats.cacheBytesFinal} (webgpu) vs ${host.stats.cacheBytesFinal} (cpu)`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a sparsek run folder: logits equal the CPU model\'s', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparsek-webgpu-'));
    try {
      const { c, cpu } = model({ vocabSize: 256, attention: 'sparsek', k: 4, window: 3 });
      await saveRun(dir, { model: c, train: DEFAULT_TRAIN, params: cpu.params, m: null, v: null, step: 0, rng: [1, 2, 3, 4], elapsedSeconds: 0, tokenizer: new ByteTokenizer() }, []);
      const m = await loadModel(dir, { device: 'webgpu' });
      const ids = m.tokenizer.encode('SparseK on WebGPU');
      const err = worstRowError(await m.logits(ids), cpuLogits(cpu, ids), c.vocabSize);
      m.dispose();
      assert.ok(err <= 1e-5, `worst row error ${err.toExponential(2)}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
