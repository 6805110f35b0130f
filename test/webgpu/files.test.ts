// src/webgpu/files.ts, the browser's reader of run folders held in memory, against the node
// readers (src/io/safetensors.ts and src/io/checkpoint.ts, the verified path): the same tensors
// for F32, F16 and BF16, the same parameters and tokenizer for a saved run, and CheckpointError
// naming the file for bad input. No GPU needed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseSafetensors, runFromFiles } from '../../src/webgpu/files.js';
import { fromFloat32, readSafetensors, toFloat32, writeSafetensors } from '../../src/io/safetensors.js';
import { loadRun, saveRun } from '../../src/io/checkpoint.js';
import { CheckpointError } from '../../src/core/errors.js';
import { DEFAULT_TRAIN } from '../../src/train/train.js';
import { ByteTokenizer } from '../../src/tokenizer/index.js';
import { Gpt } from '../../src/model/gpt.js';
import { fillParams, tinyConfig } from '../model/fixtures.js';
import { randArray } from '../helpers.js';

function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'sparsek-files-'));
}

function bytesOf(file: string): ArrayBuffer {
  const b = fs.readFileSync(file);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer;
}

test('parseSafetensors reads F32, F16 and BF16 tensors as the node reader does (subnormals, infinities included)', async () => {
  const dir = tmpdir();
  try {
    const x = randArray(37, 1, 100);
    x[0] = 1e-6; x[1] = -6e-8; x[2] = 70000; x[3] = -0; x[4] = 0.1;
    const file = path.join(dir, 'a.safetensors');
    await writeSafetensors(file, { f32: fromFloat32(x, [37], 'F32'), f16: fromFloat32(x, [37], 'F16'), bf16: fromFloat32(x, [1, 37], 'BF16') }, { note: 'x' });
    const want = await readSafetensors(file);
    const got = parseSafetensors(bytesOf(file));
    for (const name of ['f32', 'f16', 'bf16']) {
      assert.deepEqual(got.get(name)!.shape, want.tensors.get(name)!.shape, name);
      assert.deepEqual(Array.from(got.get(name)!.data), Array.from(toFloat32(want.tensors.get(name)!)), name);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('runFromFiles gives the parameters and tokenizer that loadRun gives; bad files are CheckpointErrors', async () => {
  const dir = tmpdir();
  try {
    const c = tinyConfig({ vocabSize: 256 });
    const model = Gpt.cpu(c);
    fillParams(model.params, 4);
    await saveRun(dir, { model: c, train: DEFAULT_TRAIN, params: model.params, m: null, v: null, step: 0, rng: [1, 2, 3, 4], elapsedSeconds: 0, tokenizer: new ByteTokenizer() }, []);
    const files = {
      config: fs.readFileSync(path.join(dir, 'config.json'), 'utf8'),
      weights: bytesOf(path.join(dir, 'model.safetensors')),
      tokenizer: fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'),
    };
    const got = runFromFiles(files);
    const want = await loadRun(dir);
    assert.deepEqual(got.config, want.model);
    assert.deepEqual(Array.from(got.params.flat), Array.from(want.params.flat));
    assert.deepEqual(got.tokenizer.encode('héllo'), want.tokenizer.encode('héllo'));

    const bad = (over: Partial<typeof files>, pattern: RegExp, file: string) =>
      assert.throws(() => runFromFiles({ ...files, ...over }), (e: Error) => e instanceof CheckpointError && pattern.test(e.message) && e.message.startsWith(file));
    bad({ config: '{' }, /not valid JSON/, 'config.json');
    bad({ config: JSON.stringify({ format: 'other' }) }, /not a sparsek run/, 'config.json');
    bad({ config: JSON.stringify({ ...JSON.parse(files.config), model: { ...c, dim: 15 } }) }, /invalid model config/, 'config.json');
    bad({ weights: new ArrayBuffer(4) }, /too short/, 'model.safetensors');
    bad({ weights: files.weights.slice(0, files.weights.byteLength - 8) }, /do not fit/, 'model.safetensors');
    bad({ config: JSON.stringify({ ...JSON.parse(files.config), model: { ...c, layers: 3 } }) }, /missing tensor 'model.layers.2/, 'model.safetensors');
    bad({ config: JSON.stringify({ ...JSON.parse(files.config), model: { ...c, vocabSize: 100 } }) }, /shape/, 'model.safetensors');
    bad({ tokenizer: '[]' }, /./, 'tokenizer.json');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
