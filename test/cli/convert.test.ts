// Tests of model conversion, fine-tuning and export (SPEC.md sections 2 and 7): eval and generate
// on a Hugging Face folder, `sparsek convert` (W >= T reproduces the original's logits, which are
// checked against transformers' own logits in reference.json; at step one the zero scoring network
// plus the position slope selects the most recent candidates), `sparsek finetune` from converted
// weights, and the `sparsek export` round trip through src/io/hf.ts.

import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { main } from '../../src/cli.js';
import { loadModel, loadWeights } from '../../src/model/load.js';
import { loadHfFolder } from '../../src/io/hf.js';
import { exportHf } from '../../src/io/export.js';
import { convertToSparsek } from '../../src/model/convert.js';
import { Gpt } from '../../src/model/gpt.js';
import { ModelConfig, arch } from '../../src/model/config.js';
import { ArgumentError } from '../../src/core/errors.js';
import { tempDir, tinyModel, writeCorpus } from '../train/fixtures.js';
import { train, DEFAULT_TRAIN } from '../../src/train/train.js';

const FIX = path.join(import.meta.dirname, '..', 'fixtures', 'hf');
const LLAMA = path.join(FIX, 'llama');
const GPT2 = path.join(FIX, 'gpt2');
const root = tempDir('convert');
after(() => fs.rmSync(root, { recursive: true, force: true }));
const corpus = writeCorpus(path.join(root, 'corpus'), 4, 300);

async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = process.stdout.write;
  const err = process.stderr.write;
  let stdout = '';
  let stderr = '';
  const cap = (orig: typeof out, add: (s: string) => void) =>
    ((chunk: unknown, ...rest: unknown[]) => {
      if (typeof chunk === 'string') return add(chunk), true;
      return (orig as (...a: unknown[]) => boolean).call(orig === out ? process.stdout : process.stderr, chunk, ...rest);
    }) as typeof out;
  process.stdout.write = cap(out, (s) => (stdout += s));
  process.stderr.write = cap(err, (s) => (stderr += s));
  try {
    return { code: await main(argv), stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

const lastJson = (s: string) => JSON.parse(s.trim().split('\n').pop()!);

interface RefSeq { name: string; ids: number[]; logits_shape: [number, number]; logits_f32le_base64: string }
function reference(dir: string): RefSeq[] {
  return JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')).sequences;
}
function refLogits(s: RefSeq): Float32Array {
  const buf = Buffer.from(s.logits_f32le_base64, 'base64');
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}
function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

const converted = path.join(root, 'llama-sk-wide');
const CORE_KEYS = ['vocabSize', 'layers', 'dim', 'heads', 'kvHeads', 'ffnDim', 'context', 'attention', 'k', 'window', 'scoreSlope', 'ropeTheta', 'normEps'] as const;

describe('Hugging Face folders in eval and generate', () => {
  test('eval scores a Hugging Face folder', async () => {
    const r = await cli('eval', '--checkpoint', LLAMA, '--data', corpus, '--context', '7', '--rows', '3');
    assert.equal(r.code, 0, r.stderr);
    const j = lastJson(r.stdout);
    assert.ok(Number.isFinite(j.loss) && j.loss > 0, `loss ${j.loss}`);
    assert.ok(Math.abs(j.perplexity - Math.exp(j.loss)) < 1e-9 * j.perplexity);
    assert.equal(j.context, 7);
  });

  test('greedy generate on a Hugging Face folder continues the prompt with its argmax tokens', async () => {
    const r = await cli('generate', '--checkpoint', LLAMA, '--prompt', 'the state', '--tokens', '3', '--temperature', '0');
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.startsWith('the state'), r.stdout);
    // The first generated token is the argmax of the model's last logit row (loadModel, one forward).
    const m = await loadModel(LLAMA);
    const ids = m.tokenizer.encode('the state');
    const logits = await m.logits(ids);
    const V = m.config.vocabSize;
    const row = logits.subarray((ids.length - 1) * V, ids.length * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
    const text = r.stdout.slice('the state'.length);
    assert.ok(text.startsWith(m.tokenizer.decode([best]).replace(/^<s>/, '')), `${JSON.stringify(text)} vs token ${best}`);
  });
});

describe('convert', () => {
  test('W >= T: the converted Llama computes transformers\' logits (and our original\'s to 1e-5)', async () => {
    const r = await cli('convert', '--from', LLAMA, '--attention', 'sparsek', '--k', '3', '--window', '128', '--out', converted);
    assert.equal(r.code, 0, r.stderr);
    const orig = await loadModel(LLAMA);
    const sk = await loadModel(converted);
    assert.equal(sk.source, 'sparsek-run');
    assert.equal(sk.config.attention, 'sparsek');
    assert.equal(sk.config.k, 3);
    assert.equal(sk.config.window, 128);
    assert.equal(sk.config.scoreSlope, 0.05);
    // The HF tokenizer travels with the run (same ids as transformers' reference).
    const tokRef = JSON.parse(fs.readFileSync(path.join(LLAMA, 'reference.json'), 'utf8')).tokenizer[0];
    assert.deepEqual(sk.tokenizer.encode(tokRef.text), tokRef.ids);
    for (const s of reference(LLAMA)) {
      const want = refLogits(s);
      const got = await sk.logits(s.ids);
      assert.ok(maxAbsDiff(got, await orig.logits(s.ids)) <= 1e-5, `${s.name}: converted differs from the original`);
      assert.ok(maxAbsDiff(got, want) <= 1e-4 * maxAbs(want), `${s.name}: differs from transformers`);
    }
    const w = await loadWeights(converted);
    for (let i = 0; i < w.params.specs.length; i++) {
      if (w.params.specs[i].name.endsWith('score_proj.weight')) assert.ok(w.params.views[i].every((x) => x === 0));
    }
  });

  test('at step one the selection is the most recent candidates (K = 3, W = 2, T = 11)', async () => {
    const K = 3, W = 2, T = 11;
    const hf = await loadHfFolder(LLAMA);
    const c = convertToSparsek(hf.config, hf.params, { k: K, window: W, scoreSlope: 0.05 });
    const model = Gpt.cpu(c.config);
    model.params.flat.set(c.params.flat);
    const ids = Array.from({ length: T }, (_, t) => (t * 37 + 5) % c.config.vocabSize);
    model.forward(ids, 1, T);
    const sels = model.selections();
    assert.equal(sels.length, c.config.layers);
    for (const layer of sels) {
      assert.ok(layer && layer.length === c.config.kvHeads);
      for (const head of layer) {
        for (let i = 0; i < T; i++) {
          // Candidates are 0..i-W; the K most recent are max(0, i-W-K+1)..i-W.
          const want: number[] = [];
          for (let j = Math.max(0, i - W - K + 1); j <= i - W; j++) want.push(j);
          assert.deepEqual(Array.from(head.rows[i]), want, `query ${i}`);
        }
      }
    }
    model.dispose();
  });

  test('a sliding-window Mistral converts; W >= T matches transformers', async () => {
    const out = path.join(root, 'mistral-sk');
    const r = await cli('convert', '--from', path.join(FIX, 'mistral'), '--attention', 'sparsek', '--k', '5', '--window', '8', '--out', out);
    assert.equal(r.code, 0, r.stderr);
    const sk = await loadModel(out);
    // Causal: the first 8 rows of transformers' logits are those of the 8-token prefix (T = W).
    const seqs = reference(path.join(FIX, 'mistral'));
    assert.ok(seqs.length > 0);
    for (const s of seqs) {
      const V = s.logits_shape[1];
      const want = refLogits(s).subarray(0, 8 * V);
      assert.ok(maxAbsDiff(await sk.logits(s.ids.slice(0, 8)), want) <= 1e-4 * maxAbs(want), s.name);
    }
  });

  test('GPT-2, GPT-NeoX and Qwen2 convert too; W >= T matches transformers', async () => {
    for (const family of ['gpt2', 'gpt_neox', 'qwen2']) {
      const hf = await loadHfFolder(path.join(FIX, family));
      const c = convertToSparsek(hf.config, hf.params, { k: 2, window: 64, scoreSlope: 0.05 });
      const model = Gpt.cpu(c.config);
      model.params.flat.set(c.params.flat);
      for (const s of reference(path.join(FIX, family))) {
        assert.ok(s.ids.length <= 64);
        model.forward(s.ids, 1, s.ids.length);
        const want = refLogits(s);
        const got = (model.logits as Float32Array).subarray(0, want.length);
        assert.ok(maxAbsDiff(got, want) <= 1e-4 * maxAbs(want), `${family} ${s.name}`);
      }
      model.dispose();
    }
  });

  test('bad options are typed errors naming the flag', async () => {
    const r1 = await cli('convert', '--from', LLAMA, '--attention', 'sparsek', '--window', '4', '--out', path.join(root, 'x'));
    assert.equal(r1.code, 2);
    assert.match(r1.stderr, /--k is required/);
    const hf = await loadHfFolder(LLAMA);
    assert.throws(() => convertToSparsek(hf.config, hf.params, { k: 0, window: 4, scoreSlope: 0.05 }), (e) => e instanceof ArgumentError && /^k:/.test(e.message));
    assert.throws(() => convertToSparsek(hf.config, hf.params, { k: 2, window: 4, scoreSlope: -1 }), (e) => e instanceof ArgumentError && /scoreSlope/.test(e.message));
    assert.throws(() => convertToSparsek({ ...hf.config, attention: 'hash' }, hf.params, { k: 2, window: 4, scoreSlope: 0.05 }), /source attention.*hash/);
    const r2 = await cli('convert', '--from', path.join(root, 'nowhere'), '--attention', 'sparsek', '--k', '2', '--window', '4', '--out', path.join(root, 'y'));
    assert.equal(r2.code, 2);
    assert.match(r2.stderr, /nowhere/);
    assert.ok(!fs.existsSync(path.join(root, 'y')));
  });
});

describe('finetune', () => {
  test('three steps from the converted weights: finite loss, weights moved, run folder loads', async () => {
    const out = path.join(root, 'ft');
    const r = await cli('finetune', '--checkpoint', converted, '--data', corpus, '--steps', '3', '--batch', '2', '--context', '16', '--eval-every', '3', '--out', out, '--quiet');
    assert.equal(r.code, 0, r.stderr);
    const j = lastJson(r.stdout);
    assert.equal(j.steps, 3);
    assert.ok(Number.isFinite(j.loss) && Number.isFinite(j.valLoss));
    const before = await loadWeights(converted);
    const after = await loadWeights(out);
    assert.equal(after.config.attention, 'sparsek');
    assert.equal(after.config.context, 16);
    assert.equal(after.params.flat.length, before.params.flat.length);
    assert.ok(maxAbsDiff(after.params.flat, before.params.flat) > 0, 'weights changed');
    // Started from the checkpoint, not a fresh init: three small steps stay close to it.
    assert.ok(maxAbsDiff(after.params.flat, before.params.flat) < 0.1);
    assert.deepEqual(after.tokenizer.encode('the union'), before.tokenizer.encode('the union'));
  });
});

describe('finetune at a longer context', () => {
  test('a RoPE model finetunes past its context, which its run records; learned positions cannot', async () => {
    const run = path.join(root, 'short');
    await train(tinyModel({ k: 2, window: 3, scoreSlope: 0.1 }), { ...DEFAULT_TRAIN, data: corpus, steps: 1, batch: 2, evalEvery: 1 }, run, { quiet: true, log: () => {} });
    const T0 = (await loadWeights(run)).config.context;
    const out = path.join(root, 'longer');
    const r = await cli('finetune', '--checkpoint', run, '--data', corpus, '--steps', '2', '--batch', '1', '--context', String(2 * T0), '--eval-every', '2', '--out', out, '--quiet');
    assert.equal(r.code, 0, r.stderr);
    assert.ok(Number.isFinite(lastJson(r.stdout).loss));
    assert.equal((await loadWeights(out)).config.context, 2 * T0);
    // GPT-2 (learned positions) has a table of exactly its context's rows
    const r2 = await cli('finetune', '--checkpoint', GPT2, '--data', corpus, '--steps', '1', '--context', '4096', '--out', path.join(root, 'gpt2-long'), '--quiet');
    assert.equal(r2.code, 2);
    assert.match(r2.stderr, /position table/);
  });
});

describe('export', () => {
  test('a converted Llama round-trips through a Hugging Face folder with identical logits', async () => {
    const small = path.join(root, 'llama-sk-small');
    assert.equal((await cli('convert', '--from', LLAMA, '--attention', 'sparsek', '--k', '3', '--window', '4', '--score-slope', '0.2', '--out', small)).code, 0);
    const out = path.join(root, 'hf-out');
    const r = await cli('export', '--checkpoint', small, '--out', out);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    assert.equal(cfg.model_type, 'llama');
    assert.deepEqual(cfg.sparsek, { attention: 'sparsek', k: 3, window: 4, scoreSlope: 0.2 });
    const back = await loadHfFolder(out);
    const a = await loadModel(small);
    assert.equal(back.modelType, 'llama');
    assert.deepEqual({ ...back.config }, { ...a.config });
    const b = await loadModel(out);
    const ids = Array.from({ length: 13 }, (_, t) => (t * 11 + 3) % a.config.vocabSize);
    assert.deepEqual(await b.logits(ids), await a.logits(ids));
  });

  test('a trained run (our BPE tokenizer) exports and reads back with the same logits and token ids', async () => {
    const run = path.join(root, 'trained');
    await train(tinyModel({ k: 2, window: 3, scoreSlope: 0.1 }), { ...DEFAULT_TRAIN, data: corpus, steps: 2, batch: 2, evalEvery: 2 }, run, { quiet: true, log: () => {} });
    const out = path.join(root, 'trained-hf');
    assert.equal((await cli('export', '--checkpoint', run, '--out', out)).code, 0);
    const a = await loadModel(run);
    const b = await loadModel(out);
    assert.equal(b.source, 'llama');
    const core = (c: ModelConfig) => ({ ...arch(c), ...Object.fromEntries(CORE_KEYS.map((k) => [k, c[k]])) });
    assert.deepEqual(core(b.config), core(a.config));
    const text = 'The union of the people, and congress.';
    assert.deepEqual(b.tokenizer.encode(text), a.tokenizer.encode(text));
    const ids = a.tokenizer.encode(text).slice(0, 7);
    assert.deepEqual(await b.logits(ids), await a.logits(ids));
  });

  test('GPT-2 is refused with an error naming the architecture', async () => {
    const r = await cli('export', '--checkpoint', path.join(FIX, 'gpt2'), '--out', path.join(root, 'g'));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /model architecture.*gpt2-style/);
    const w = await loadWeights(path.join(FIX, 'gpt2'));
    await assert.rejects(exportHf(path.join(root, "g2"), w.config, w.params, null), ArgumentError);
  });
});
