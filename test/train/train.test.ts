// Tests of the training loop, run folders and batching (src/train/train.ts, src/train/data.ts,
// src/io/checkpoint.ts; SPEC.md sections 7-8). Oracles: an uninterrupted run is the oracle for a
// crashed-and-resumed one (bit-identical losses, weights and moments); the in-memory model before
// saving is the oracle for the reloaded one; the learning-rate schedule written out from its
// definition; token streams of consecutive integers, whose batches can be checked by arithmetic.
//
// Interrupting train(): it has no stop hook, so the test makes the progress line of step 5 throw
// (process.stderr.write is replaced for the duration). That is a crash between checkpoints, after
// the step-4 checkpoint was written: exactly what --resume must recover from.

import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { DEFAULT_TRAIN, TrainConfig, evaluate, prepareData, train } from '../../src/train/train.js';
import { encodeDocuments, evalBatches, sampleBatch } from '../../src/train/data.js';
import { loadRun, saveRun } from '../../src/io/checkpoint.js';
import { Gpt } from '../../src/model/gpt.js';
import { initParams } from '../../src/model/params.js';
import { adamwStep } from '../../src/train/optim.js';
import { ByteTokenizer } from '../../src/tokenizer/index.js';
import { Rng } from '../../src/core/random.js';
import { DataError } from '../../src/core/errors.js';
import { tempDir, tinyModel, tmpLeftovers, writeCorpus } from './fixtures.js';

const root = tempDir('train');
after(() => fs.rmSync(root, { recursive: true, force: true }));
const corpus = writeCorpus(path.join(root, 'corpus'));

const TC: TrainConfig = {
  ...DEFAULT_TRAIN, data: corpus, tokenizer: 'byte', batch: 2, steps: 8, lr: 1e-2, minLr: 1e-3, warmup: 2,
  checkpointEvery: 4, evalEvery: 50, evalRows: 8, seed: 3,
};

interface MetricLine { step: number; loss?: number; valLoss?: number; lr?: number; gradNorm?: number }

function readMetrics(dir: string): MetricLine[] {
  return fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** Runs fn with process.stderr.write replaced by hook (which may throw); restores it after. */
async function withStderr<T>(hook: (s: string) => void, fn: () => Promise<T>): Promise<T> {
  const orig = process.stderr.write;
  process.stderr.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (typeof chunk !== 'string') return (orig as (...a: unknown[]) => boolean).call(process.stderr, chunk, ...rest);
    hook(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    return await fn();
  } finally {
    process.stderr.write = orig;
  }
}

describe('train(): run folder, resume, reload', () => {
  const dirA = path.join(root, 'runA');
  const dirB = path.join(root, 'runB');
  const quiet = { quiet: true, log: () => undefined };

  test('writes a complete run folder', async () => {
    const r = await train(tinyModel(), TC, dirA, quiet);
    for (const f of ['config.json', 'model.safetensors', 'optimizer.safetensors', 'tokenizer.json', 'trainer.json', 'metrics.jsonl']) {
      assert.ok(fs.statSync(path.join(dirA, f)).size > 0, `${f} missing or empty`);
    }
    assert.deepEqual(tmpLeftovers(dirA), []);
    assert.equal(r.steps, 8);
    const cfg = JSON.parse(fs.readFileSync(path.join(dirA, 'config.json'), 'utf8'));
    assert.equal(cfg.model.vocabSize, 256, 'the byte tokenizer fixes V');
    assert.equal(cfg.model.attention, 'sparsek');
    assert.equal(cfg.train.steps, 8);
    const trainer = JSON.parse(fs.readFileSync(path.join(dirA, 'trainer.json'), 'utf8'));
    assert.equal(trainer.step, 8);
    const ms = readMetrics(dirA);
    assert.deepEqual(ms.map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.ok(ms.every((m) => Number.isFinite(m.loss) && m.loss! > 0));
    assert.ok(Math.abs(ms[0].loss! - Math.log(256)) < 0.5, `first loss ${ms[0].loss} should be near ln 256`);
    // The schedule, written out: linear warm-up over 2 steps, then cosine from lr to minLr at step 8.
    const want = (s: number) => (s < 2 ? TC.lr * (s + 1) / 2 : TC.minLr + 0.5 * (TC.lr - TC.minLr) * (1 + Math.cos(Math.PI * (s - 2) / 6)));
    ms.forEach((m, s) => assert.ok(Math.abs(m.lr! - want(s)) < 1e-12, `lr at step ${s}: ${m.lr} vs ${want(s)}`));
    assert.equal(ms[7].valLoss, r.valLoss, 'the last step is validated');
    assert.ok(Number.isFinite(r.valLoss));
  });

  test('--resume after a crash between checkpoints reproduces the uninterrupted run bit for bit', async () => {
    let crashed = false;
    await assert.rejects(
      withStderr((s) => {
        if (/\b5\/8\b/.test(s)) {
          crashed = true;
          throw new Error('simulated interruption at step 5');
        }
      }, () => train(tinyModel(), TC, dirB, { quiet: false, log: () => undefined })),
      /simulated interruption/,
    );
    assert.ok(crashed, 'the progress line of step 5 was never printed: the interruption hook did not fire');
    assert.equal(JSON.parse(fs.readFileSync(path.join(dirB, 'trainer.json'), 'utf8')).step, 4, 'the step-4 checkpoint is on disk');
    assert.equal(readMetrics(dirB).length, 4);
    assert.deepEqual(tmpLeftovers(dirB), []);

    const r = await train(tinyModel(), TC, dirB, { resume: true, ...quiet });
    assert.equal(r.steps, 8);
    const a = readMetrics(dirA);
    const b = readMetrics(dirB);
    assert.deepEqual(b.map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8], 'no duplicate or missing metric lines');
    for (let i = 0; i < 8; i++) {
      assert.ok(Object.is(a[i].loss, b[i].loss), `step ${i + 1}: loss ${a[i].loss} uninterrupted vs ${b[i].loss} resumed`);
      assert.ok(Object.is(a[i].gradNorm, b[i].gradNorm), `step ${i + 1}: gradient norm`);
      assert.ok(Object.is(a[i].lr, b[i].lr), `step ${i + 1}: learning rate`);
    }
    assert.ok(Object.is(a[7].valLoss, b[7].valLoss), 'final validation loss');
    for (const f of ['model.safetensors', 'optimizer.safetensors']) {
      assert.ok(fs.readFileSync(path.join(dirA, f)).equals(fs.readFileSync(path.join(dirB, f))), `${f} differs from the uninterrupted run`);
    }
    const ta = JSON.parse(fs.readFileSync(path.join(dirA, 'trainer.json'), 'utf8'));
    const tb = JSON.parse(fs.readFileSync(path.join(dirB, 'trainer.json'), 'utf8'));
    assert.deepEqual(tb.rng, ta.rng, 'sampler state');
    assert.equal(tb.step, 8);
  });

  test('loadRun of the run folder reproduces its final validation loss exactly', async () => {
    const run = await loadRun(dirA);
    const ms = readMetrics(dirA);
    const d = await prepareData(run.train, run.model.vocabSize, run.tokenizer);
    const model = Gpt.cpu(run.model);
    model.params.flat.set(run.params.flat);
    const T = run.model.context;
    const loss = evaluate(model, evalBatches(d.val, run.train.batch, T, run.train.evalRows), T);
    assert.ok(Object.is(loss, ms[7].valLoss), `reloaded ${loss} vs in-training ${ms[7].valLoss}`);
    assert.equal(run.m, null, 'moments are read only when asked');
    const withOpt = await loadRun(dirA, { optimizer: true });
    assert.ok(withOpt.m && withOpt.v && withOpt.m.length === run.params.flat.length);
    assert.ok(withOpt.v!.every((x) => x >= 0) && withOpt.v!.some((x) => x > 0));
  });

  test('save -> load -> identical loss and identical next AdamW step', async () => {
    const mc = { ...tinyModel(), vocabSize: 256 };
    const T = mc.context;
    const model = Gpt.cpu(mc);
    initParams(model.params, mc, 9);
    const nP = model.params.flat.length;
    const mFlat = new Float32Array(nP);
    const vFlat = new Float32Array(nP);
    const views = (flat: Float32Array, like: Float32Array[]) => {
      let off = 0;
      return like.map((w) => flat.subarray(off, (off += w.length)));
    };
    const decay = model.params.specs.map((s) => s.decay);
    const stream = Int32Array.from({ length: 500 }, (_, i) => (i * 37 + (i >> 3)) % 256);
    const rng = new Rng(2);
    const opt = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
    const stepOnce = (m: Gpt, mF: Float32Array, vF: Float32Array, step: number, r: Rng) => {
      const b = sampleBatch(stream, 2, T, r);
      const loss = m.forward(b.inputs, 2, T, b.targets);
      m.zeroGrad();
      m.backward();
      adamwStep(m.params.views, m.grads.views, views(mF, m.params.views), views(vF, m.params.views), step, opt, decay);
      return loss;
    };
    for (let s = 1; s <= 3; s++) stepOnce(model, mFlat, vFlat, s, rng);
    const dir = path.join(root, 'saved');
    await saveRun(dir, { model: mc, train: TC, params: model.params, m: mFlat, v: vFlat, step: 3, rng: rng.state, elapsedSeconds: 1.5, tokenizer: new ByteTokenizer() }, []);
    assert.deepEqual(tmpLeftovers(dir), []);
    const run = await loadRun(dir, { optimizer: true });
    assert.equal(run.step, 3);
    assert.deepEqual(run.model, mc);
    const loaded = Gpt.cpu(run.model);
    loaded.params.flat.set(run.params.flat);
    assert.ok(run.params.flat.every((x, i) => Object.is(x, model.params.flat[i])), 'parameters differ after the round trip');
    const rng2 = new Rng(0);
    rng2.state = run.rng;
    // Next step from the original and from the reloaded state: same batch, same loss, same update.
    const l1 = stepOnce(model, mFlat, vFlat, 4, rng);
    const l2 = stepOnce(loaded, run.m!, run.v!, 4, rng2);
    assert.ok(Object.is(l1, l2), `next-step loss ${l1} vs reloaded ${l2}`);
    assert.ok(loaded.params.flat.every((x, i) => Object.is(x, model.params.flat[i])), 'parameters differ after the next step');
    const b = sampleBatch(stream, 2, T, new Rng(77));
    assert.ok(Object.is(model.forward(b.inputs, 2, T, b.targets), loaded.forward(b.inputs, 2, T, b.targets)));
  });
});

describe('data.ts: token streams and batches', () => {
  const arange = (n: number) => Int32Array.from({ length: n }, (_, i) => i);

  test('encodeDocuments joins documents with the separator encoding', () => {
    const enc = (s: string) => Array.from(s, (ch) => ch.charCodeAt(0));
    const out = encodeDocuments(['ab', 'c'], enc);
    assert.deepEqual(Array.from(out), [97, 98, 10, 10, 99, 10, 10]);
  });

  test('sampleBatch: rows are consecutive tokens and targets are inputs shifted by one', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 60 }), fc.integer({ min: 0, max: 1000 }),
      (B, T, extra, seed) => {
        const n = T + extra;
        const b = sampleBatch(arange(n), B, T, new Rng(seed));
        assert.equal(b.inputs.length, B * T);
        for (let r = 0; r < B; r++) {
          const start = b.inputs[r * T];
          assert.ok(start >= 0 && start + T + 1 <= n, `row ${r} starts at ${start}, stream of ${n}`);
          for (let t = 0; t < T; t++) {
            assert.equal(b.inputs[r * T + t], start + t);
            assert.equal(b.targets[r * T + t], start + t + 1);
          }
        }
      }), { numRuns: 200 });
    // The same seed gives the same batch; the generator's state advances.
    const rng = new Rng(5);
    const x = sampleBatch(arange(1000), 4, 8, rng);
    const y = sampleBatch(arange(1000), 4, 8, rng);
    assert.deepEqual(sampleBatch(arange(1000), 4, 8, new Rng(5)), x);
    assert.notDeepEqual(x.inputs, y.inputs);
  });

  test('evalBatches: deterministic, non-overlapping rows inside the stream, at most maxRows', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 0, max: 300 }), fc.integer({ min: 1, max: 40 }),
      (B, T, extra, maxRows) => {
        const n = T + 1 + extra;
        const batches = evalBatches(arange(n), B, T, maxRows);
        assert.deepEqual(evalBatches(arange(n), B, T, maxRows), batches, 'not deterministic');
        const starts: number[] = [];
        for (const b of batches) {
          const rows = b.inputs.length / T;
          assert.ok(rows >= 1 && rows <= B && Number.isInteger(rows));
          for (let r = 0; r < rows; r++) {
            const s = b.inputs[r * T];
            for (let t = 0; t < T; t++) {
              assert.equal(b.inputs[r * T + t], s + t);
              assert.equal(b.targets[r * T + t], s + t + 1);
            }
            assert.ok(s + T + 1 <= n, 'row runs past the stream');
            starts.push(s);
          }
        }
        assert.equal(starts.length, Math.min(maxRows, Math.floor((n - 1) / T)));
        for (let r = 1; r < starts.length; r++) assert.ok(starts[r] >= starts[r - 1] + T, `rows ${r - 1} and ${r} overlap: ${starts[r - 1]}, ${starts[r]}`);
      }), { numRuns: 300 });
    // Exactly full: 3 rows of 7 in 22 tokens tile the stream.
    const rows = evalBatches(arange(22), 2, 7, 10).flatMap((b) => Array.from({ length: b.inputs.length / 7 }, (_, r) => b.inputs[r * 7]));
    assert.deepEqual(rows, [0, 7, 14]);
  });

  test('too-short streams raise DataError naming the split and the context', () => {
    assert.throws(() => sampleBatch(arange(16), 2, 16, new Rng(1)), (e: unknown) => e instanceof DataError && /training/.test(e.message) && /16/.test(e.message));
    assert.throws(() => evalBatches(arange(5), 2, 16, 4), (e: unknown) => e instanceof DataError && /validation/.test(e.message) && /17/.test(e.message));
    assert.throws(() => sampleBatch(new Int32Array(0), 1, 1, new Rng(1)), DataError);
    // T + 1 tokens is enough for one row.
    assert.equal(evalBatches(arange(17), 2, 16, 4).length, 1);
    assert.equal(sampleBatch(arange(17), 3, 16, new Rng(1)).inputs[0], 0);
  });
});
