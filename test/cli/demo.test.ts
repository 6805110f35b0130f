// The main job, `sparsek demo` (what `npm start` runs), end to end through the real entry point as
// a user runs it: the bundled corpus, training, evaluation, plots and constant-memory generation,
// on the best device here (the CPU in CI). A short time budget keeps it to the floor of 4 training steps.
// Also: a re-run replaces the demo's own folder, and a folder holding another model is refused.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { PRESETS, headSize } from '../../src/model/config.js';
import { tempDir, tmpLeftovers } from '../train/fixtures.js';

const root = tempDir('demo');
after(() => fs.rmSync(root, { recursive: true, force: true }));
const cliPath = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
const demo = (out: string) =>
  spawnSync(process.execPath, ['--import', 'tsx', cliPath, 'demo', '--minutes', '0.01', '--out', out, '--quiet'], {
    encoding: 'utf8', timeout: 300_000,
  });
const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

test('sparsek demo trains, evaluates, plots and generates, replacing its own earlier folder', () => {
  const out = path.join(root, 'demo');
  // What an earlier, interrupted demo leaves: its marker and part of a run.
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, '.sparsek-demo'), 'earlier demo\n');
  fs.writeFileSync(path.join(out, 'config.json'), '{}\n');
  fs.writeFileSync(path.join(out, 'stale.txt'), 'from the earlier run\n');

  const p = demo(out);
  assert.equal(p.status, 0, `exit ${p.status}\n${p.stderr}`);
  assert.equal(fs.existsSync(path.join(out, 'stale.txt')), false, 'the earlier demo folder was replaced');
  for (const f of ['model.safetensors', 'metrics.jsonl', 'loss.png', 'selection.png', 'sample.txt', 'summary.json', '.sparsek-demo']) {
    assert.ok(fs.existsSync(path.join(out, f)), `${f} missing`);
  }
  assert.deepEqual(tmpLeftovers(out), []);
  for (const f of ['loss.png', 'selection.png']) assert.deepEqual([...fs.readFileSync(path.join(out, f)).subarray(0, 8)], PNG, `${f}: PNG signature`);

  const s = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  const mc = PRESETS.demo;
  assert.ok(s.steps >= 4, `steps ${s.steps}`);
  // Better than the uniform guess over the vocabulary: it learned from the corpus.
  assert.ok(Number.isFinite(s.valLoss) && s.valLoss < Math.log(mc.vocabSize), `validation loss ${s.valLoss} vs ln V ${Math.log(mc.vocabSize)}`);
  // Constant memory: the cache holds W + K keys and values per layer and KV head (fp32), plus
  // small per-slot bookkeeping, whatever the length generated.
  const kv = mc.layers * mc.kvHeads * (mc.window + mc.k) * headSize(mc) * 2 * 4;
  assert.ok(s.cacheBytes >= kv && s.cacheBytes < 1.25 * kv, `cache ${s.cacheBytes} bytes vs ${kv} for W + K entries`);
  assert.ok(fs.readFileSync(path.join(out, 'sample.txt'), 'utf8').startsWith('Fellow citizens, the state of the Union'));
  assert.match(p.stdout, /validation {2}loss \d+\.\d+, perplexity/);
});

test('sparsek demo refuses a folder that holds another model, and leaves it as it was', () => {
  const out = path.join(root, 'mine');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'config.json'), '{"mine": true}\n');
  const p = demo(out);
  assert.equal(p.status, 2, `exit ${p.status}\n${p.stderr}`);
  assert.match(p.stderr, /sparsek: error: .*mine: already holds a model .*new folder/);
  assert.deepEqual(fs.readdirSync(out), ['config.json']);
  assert.equal(fs.readFileSync(path.join(out, 'config.json'), 'utf8'), '{"mine": true}\n');
});
