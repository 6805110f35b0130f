// fp16 checkpoints (issue 6: "Accept bf16, fp16 and fp32"): the llama fixture's shards rewritten
// as F16 load, and give the logits of the fp32 model within fp16's rounding. fp16 keeps 11
// significant bits: each weight moves by up to 2^-12 of itself, a few 1e-4 of the logits here;
// the bound 1e-2 of the row's largest logit leaves a wide margin, while a misread dtype
// (bytes taken as F32, or halves swapped) gives errors of order 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel } from '../../src/model/load.js';
import { fromFloat32, readSafetensors, readSafetensorsHeader, toFloat32, writeSafetensors } from '../../src/io/safetensors.js';

const SRC = path.join(import.meta.dirname, '..', 'fixtures', 'hf', 'llama');

test('an fp16 copy of the llama fixture loads and matches the fp32 logits within fp16 rounding', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparsek-fp16-'));
  try {
    for (const f of fs.readdirSync(SRC)) {
      const from = path.join(SRC, f);
      if (!f.endsWith('.safetensors')) {
        fs.copyFileSync(from, path.join(dir, f));
        continue;
      }
      const { tensors, metadata } = await readSafetensors(from);
      const half = new Map([...tensors].map(([name, t]) => [name, fromFloat32(toFloat32(t), t.shape, 'F16')]));
      await writeSafetensors(path.join(dir, f), half, metadata);
    }
    const shard = fs.readdirSync(dir).find((f) => f.endsWith('.safetensors'))!;
    assert.ok([...(await readSafetensorsHeader(path.join(dir, shard))).tensors.values()].every((t) => t.dtype === 'F16'), 'stored as F16');
    const full = await loadModel(SRC);
    const half = await loadModel(dir);
    const ids = full.tokenizer.encode('The state of the Union is strong.');
    const want = await full.logits(ids);
    const got = await half.logits(ids);
    const V = full.config.vocabSize;
    let worst = 0;
    for (let r = 0; r < ids.length; r++) {
      let scale = 0;
      let err = 0;
      for (let v = 0; v < V; v++) {
        scale = Math.max(scale, Math.abs(want[r * V + v]));
        err = Math.max(err, Math.abs(got[r * V + v] - want[r * V + v]));
      }
      worst = Math.max(worst, err / scale);
    }
    assert.ok(worst > 0, 'fp16 rounding changed something (the copy really is fp16)');
    assert.ok(worst <= 1e-2, `fp16 vs fp32 logits: ${worst.toExponential(2)} of the row maximum`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
