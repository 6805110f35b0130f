// Data-parallel training on the CPU (src/train/distributed.ts, distributed-worker.ts, the
// DataParallel hook of train.ts; docs/distributed.md), everything that needs no GPU: the launcher's
// and the CLI's argument checks, libnccl discovery and its typed error, and real multi-process
// runs with the 'ipc' collective (gradients averaged through the launcher instead of NCCL), which
// exercise process spawn, job hand-out, batch sharding, loss and gradient averaging, rank 0 alone
// writing the run folder, identical weights on every rank, and a failing rank stopping the rest.
// Oracle: the single-process train() with the same global batch, itself tested in train.test.ts.
// Data parallelism is exact in real arithmetic (the mean of the ranks' mean gradients over equal
// shares is the mean over the whole batch), so the only differences are float rounding; see the
// tolerance below. The NCCL runs are in test/cuda/nccl.test.ts.

import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_TRAIN, TrainConfig, train } from '../../src/train/train.js';
import { checkDataParallel, IpcReducer, trainDataParallel, WorkerError } from '../../src/train/distributed.js';
import type { DataParallelOptions } from '../../src/train/distributed.js';
import { findNcclLibrary } from '../../src/cuda/find.js';
import { loadNccl, ncclVersionString } from '../../src/cuda/nccl.js';
import { loadRun } from '../../src/io/checkpoint.js';
import { DeviceError, OptionError } from '../../src/core/errors.js';
import { main } from '../../src/cli.js';
import { tempDir, tinyModel, writeCorpus } from './fixtures.js';

const root = tempDir('distributed');
after(() => fs.rmSync(root, { recursive: true, force: true }));
const corpus = writeCorpus(path.join(root, 'corpus'));

const TC: TrainConfig = {
  ...DEFAULT_TRAIN, data: corpus, tokenizer: 'byte', batch: 6, steps: 6, lr: 1e-2, minLr: 1e-3, warmup: 2,
  checkpointEvery: 3, evalEvery: 3, evalRows: 8, seed: 5,
};
// T = 7 and K = 3, W = 2: awkward shapes, and T > K + W so that selection actually drops positions.
const MC = tinyModel({ context: 7, k: 3, window: 2 });
const QUIET = { quiet: true, log: () => undefined };
// One matmul thread per worker: the test machine has two cores and up to three workers.
const IPC: Omit<DataParallelOptions, 'gpus'> = { collective: 'ipc', quiet: true, log: () => undefined, env: () => ({ SPARSEK_THREADS: '1' }) };

/** The per-step losses and final weights of the single-process run: the oracle. */
async function reference(dir: string, tc: TrainConfig = TC): Promise<{ losses: number[]; params: Float32Array }> {
  const losses: number[] = [];
  await train(MC, tc, dir, { ...QUIET, onStep: (_, m) => { losses.push(m.loss!); } });
  return { losses, params: (await loadRun(dir)).params.flat };
}

/**
 * Largest |a - b|. Tolerances: the ranks' per-row losses and gradients are computed exactly as in
 * the single process; what changes is the order of float32 sums (a gradient is a sum over the rows
 * of each share, then a mean of shares). That is about 1e-7 relative per step, which AdamW can
 * amplify for near-zero gradients (its step is g / sqrt(v), scale-free) to about lr * 1e-6 per
 * weight per step. 1e-5 on losses near 5 and 1e-5 on weights leave a margin of 10x over that; a
 * rank training on the wrong rows moves the first loss by more than 1e-2.
 */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('checkDataParallel: flags are checked before anything starts', () => {
  test('--gpus must be an integer >= 1', () => {
    for (const gpus of [0, -1, 1.5, NaN, '2']) {
      assert.throws(() => checkDataParallel({ gpus, device: 'cuda', batch: 8, minutes: null }), (e: unknown) =>
        e instanceof OptionError && /--gpus: expected an integer >= 1/.test(e.message));
    }
  });
  test('NCCL training needs CUDA; the ipc collective does not', () => {
    assert.throws(() => checkDataParallel({ gpus: 2, device: 'cpu', batch: 8, minutes: null }), (e: unknown) =>
      e instanceof OptionError && /--gpus 2/.test(e.message) && /--device cpu/.test(e.message));
    assert.equal(checkDataParallel({ gpus: 2, device: 'cpu', batch: 8, minutes: null, collective: 'ipc' }), 2);
  });
  test('the batch must divide among the ranks', () => {
    assert.throws(() => checkDataParallel({ gpus: 4, device: 'cuda', batch: 6, minutes: null }), (e: unknown) =>
      e instanceof OptionError && /--batch 6 must be a multiple of --gpus 4/.test(e.message));
    assert.equal(checkDataParallel({ gpus: 3, device: 'cuda', batch: 6, minutes: null }), 3);
  });
  test('--minutes only with one rank (ranks must agree on the step count)', () => {
    assert.throws(() => checkDataParallel({ gpus: 2, device: 'cuda', batch: 8, minutes: 1 }), (e: unknown) =>
      e instanceof OptionError && /--minutes/.test(e.message));
    assert.equal(checkDataParallel({ gpus: 1, device: 'cuda', batch: 8, minutes: 1 }), 1);
  });
  test('trainDataParallel refuses a bad request without spawning', async () => {
    await assert.rejects(trainDataParallel(MC, { ...TC, batch: 5 }, path.join(root, 'never'), { ...IPC, gpus: 2 }), OptionError);
    await assert.rejects(trainDataParallel(MC, TC, path.join(root, 'never'), { ...IPC, gpus: 2, devices: [0] }), OptionError);
    assert.equal(fs.existsSync(path.join(root, 'never')), false);
  });
});

describe('sparsek train --gpus: CLI errors (exit code 2, one line naming the flag)', () => {
  async function cli(...argv: string[]): Promise<{ code: number; stderr: string }> {
    const err = process.stderr.write;
    let stderr = '';
    process.stderr.write = ((chunk: unknown, ...rest: unknown[]) => {
      if (typeof chunk === 'string') {
        stderr += chunk;
        return true;
      }
      return (err as (...a: unknown[]) => boolean).call(process.stderr, chunk, ...rest);
    }) as typeof err;
    try {
      return { code: await main(argv), stderr };
    } finally {
      process.stderr.write = err;
    }
  }
  const base = ['train', '--data', corpus, '--out', path.join(root, 'cli-never'), '--quiet'];
  for (const [what, args, pattern] of [
    ['--gpus 0', ['--gpus', '0'], /--gpus: expected an integer >= 1/],
    ['--gpus two', ['--gpus', 'two'], /--gpus takes an integer/],
    ['--gpus with --device cpu', ['--gpus', '2', '--device', 'cpu'], /cannot be combined with --device cpu/],
    ['--batch not divisible', ['--gpus', '3', '--batch', '8', '--device', 'cuda'], /--batch 8 must be a multiple of --gpus 3/],
    ['--minutes with --gpus 2', ['--gpus', '2', '--minutes', '1'], /--minutes cannot be used with --gpus 2/],
  ] as const) {
    test(what, async () => {
      const r = await cli(...base, ...args);
      assert.equal(r.code, 2, r.stderr);
      const line = r.stderr.split('\n').find((l) => l.startsWith('sparsek: error:'));
      assert.ok(line && pattern.test(line), `expected ${pattern} in: ${r.stderr}`);
      assert.equal(fs.existsSync(path.join(root, 'cli-never')), false);
    });
  }
});

describe('libnccl discovery and loading', () => {
  test('finds libnccl under NCCL_HOME, then in a virtualenv\'s nvidia-nccl wheel', () => {
    const home = path.join(root, 'nccl-home');
    fs.mkdirSync(path.join(home, 'lib'), { recursive: true });
    fs.writeFileSync(path.join(home, 'lib', 'libnccl.so.2'), '');
    const venv = path.join(root, 'venv');
    const wheel = path.join(venv, 'lib', 'python3.11', 'site-packages', 'nvidia', 'nccl', 'lib');
    fs.mkdirSync(wheel, { recursive: true });
    fs.writeFileSync(path.join(wheel, 'libnccl.so.2'), '');
    const both = findNcclLibrary({ NCCL_HOME: home, VIRTUAL_ENV: venv });
    assert.equal(both.path, path.join(home, 'lib', 'libnccl.so.2'));
    const system = findNcclLibrary({});
    const wheelOnly = findNcclLibrary({ VIRTUAL_ENV: venv });
    // A libnccl installed system-wide comes before the wheel; otherwise the wheel is the answer.
    if (system.path === null) assert.equal(wheelOnly.path, path.join(wheel, 'libnccl.so.2'));
    assert.ok(wheelOnly.searched.includes(wheel), `the wheel's folder is searched: ${wheelOnly.searched.join(', ')}`);
  });
  test('a library that cannot be found or loaded is a DeviceError that says what to do', (t) => {
    assert.throws(() => loadNccl({ path: path.join(root, 'nccl-home', 'lib', 'libnccl.so.2') }), (e: unknown) =>
      e instanceof DeviceError && /cannot load NCCL from .*libnccl\.so\.2/.test(e.message));
    const env = { LD_LIBRARY_PATH: path.join(root, 'nowhere') };
    if (findNcclLibrary(env).path !== null) {
      t.skip('a libnccl is installed on this machine, so "not found" cannot be tested here');
      return;
    }
    assert.throws(() => loadNccl({ env }), (e: unknown) =>
      e instanceof DeviceError && /libnccl\.so\.2 was not found \(searched .*nowhere/.test(e.message) && /NCCL_HOME or LD_LIBRARY_PATH/.test(e.message));
  });
  test('version codes decode as NCCL writes them', () => {
    assert.equal(ncclVersionString(22105), '2.21.5'); // major*10000 + minor*100 + patch since 2.9
    assert.equal(ncclVersionString(2804), '2.8.4'); // major*1000 + minor*100 + patch before
  });
});

describe('IpcReducer: the ipc collective\'s arithmetic', () => {
  test('means over ranks, in float64, once every rank has sent', () => {
    const r = new IpcReducer(3);
    assert.equal(r.add(2, 1, Float32Array.of(3, 0.1), 6), null);
    assert.equal(r.add(0, 1, Float32Array.of(1, 0.2), 3), null);
    const m = r.add(1, 1, Float32Array.of(2, 0.3), 4)!;
    assert.deepEqual(Array.from(m.grads), [2, Math.fround((Math.fround(0.1) + Math.fround(0.2) + Math.fround(0.3)) / 3)]);
    assert.equal(m.loss, 13 / 3);
    assert.throws(() => { r.add(0, 2, new Float32Array(2), 0); r.add(0, 2, new Float32Array(2), 0); }, OptionError);
  });
});

describe('trainDataParallel with the ipc collective: N processes = one process with the same global batch', () => {
  let ref: { losses: number[]; params: Float32Array };
  const refDir = path.join(root, 'ref');

  test('N = 1 through the launcher is train() itself, bit for bit', async () => {
    ref = await reference(refDir);
    const dir = path.join(root, 'dp1');
    const r = await trainDataParallel(MC, TC, dir, { ...IPC, gpus: 1 });
    assert.deepEqual(r.ranks[0].losses, ref.losses);
    assert.deepEqual((await loadRun(dir)).params.flat, ref.params);
    assert.equal(r.steps, TC.steps);
  });

  test('N = 2 and N = 3 (B = 6): the same losses and weights up to rounding, every rank identical', async () => {
    for (const gpus of [2, 3]) {
      const dir = path.join(root, `dp${gpus}`);
      const r = await trainDataParallel(MC, TC, dir, { ...IPC, gpus });
      assert.equal(r.ranks.length, gpus);
      for (const k of r.ranks) {
        assert.equal(k.paramsHash, r.ranks[0].paramsHash, `rank ${k.rank}'s weights differ from rank 0's`);
        assert.deepEqual(k.losses, r.ranks[0].losses, `rank ${k.rank} logged other losses than rank 0`);
      }
      const dl = maxDiff(r.ranks[0].losses, ref.losses);
      assert.ok(dl <= 1e-5, `N = ${gpus}: losses differ from one process by ${dl}`);
      const run = await loadRun(dir);
      const dw = maxDiff(run.params.flat, ref.params);
      assert.ok(dw <= 1e-5, `N = ${gpus}: weights differ from one process by ${dw}`);
      // Rank 0 wrote the whole metrics file: one line per step, validation where due.
      const lines = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.deepEqual(lines.map((l) => l.step), [1, 2, 3, 4, 5, 6]);
      assert.deepEqual(lines.map((l) => l.loss), r.ranks[0].losses);
      assert.ok(Number.isFinite(lines[2].valLoss) && Number.isFinite(lines[5].valLoss));
    }
  });

  test('a data-parallel checkpoint resumes in one process (or any N): the global batch does not depend on N', async () => {
    // Oracle: one process, 4 steps, then --resume to 6 (the schedule is fixed when a run starts).
    const four = { ...TC, steps: 4, checkpointEvery: 2 };
    const refLosses: number[] = [];
    const a = path.join(root, 'resume-ref');
    await train(MC, four, a, QUIET);
    await train(MC, TC, a, { ...QUIET, resume: true, onStep: (_, m) => { refLosses.push(m.loss!); } });
    const b = path.join(root, 'resume-dp');
    await trainDataParallel(MC, four, b, { ...IPC, gpus: 2 });
    const losses: number[] = [];
    await train(MC, TC, b, { ...QUIET, resume: true, onStep: (_, m) => { losses.push(m.loss!); } });
    assert.equal(losses.length, 2);
    const d = maxDiff(losses, refLosses);
    assert.ok(d <= 1e-5, `resumed losses differ by ${d}`);
  });

  test('a rank that fails stops the others; the launcher reports its rank and message', async () => {
    // Rank 0 cannot write its checkpoint (the run folder would be inside a file); rank 1 is then
    // waiting for step 4's averages, which never come, and must be stopped.
    const file = path.join(root, 'a-file');
    fs.writeFileSync(file, 'not a folder');
    const t0 = Date.now();
    await assert.rejects(trainDataParallel(MC, TC, path.join(file, 'run'), { ...IPC, gpus: 2 }), (e: unknown) =>
      e instanceof WorkerError && e.rank === 0 && /rank 0 failed: .*(ENOTDIR|not a directory)/s.test(e.message));
    assert.ok(Date.now() - t0 < 15_000, 'the launcher stopped the waiting rank promptly');
    // Every rank failing the same way (no such corpus): the first report wins, with its typed code.
    await assert.rejects(trainDataParallel(MC, { ...TC, data: path.join(root, 'no-such-corpus') }, path.join(root, 'never2'), { ...IPC, gpus: 2 }),
      (e: unknown) => e instanceof WorkerError && e.workerCode === 'E_DATA' && /no-such-corpus/.test(e.message));
  });
});
