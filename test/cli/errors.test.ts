// Tests of the command line (src/cli.ts, SPEC.md section 7): the happy path of train, eval,
// generate and plot on a tiny corpus, and every kind of bad input ending in exit code 2 with a
// one-line message that names what was wrong (the flag, the file, the device), with nothing
// half-written left behind. main(argv) runs in-process with stdout and stderr captured; one test
// spawns the real entry point to check the process exit code.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli.js';
import { train, DEFAULT_TRAIN } from '../../src/train/train.js';
import { DataError } from '../../src/core/errors.js';
import { tempDir, tinyModel, tmpLeftovers, writeCorpus } from '../train/fixtures.js';

const root = tempDir('cli');
after(() => fs.rmSync(root, { recursive: true, force: true }));
const corpus = writeCorpus(path.join(root, 'corpus'));
const run = path.join(root, 'run');

interface CliResult {
  code: number | null; // null: main threw instead of returning
  thrown?: unknown;
  stdout: string;
  stderr: string;
}

/**
 * Runs main(argv) with process.stdout/stderr.write captured. Only string chunks are captured (what
 * console.log and the CLI write); anything else goes through, so the test runner's own reporting is
 * never swallowed.
 */
async function cli(...argv: string[]): Promise<CliResult> {
  const out = process.stdout.write;
  const err = process.stderr.write;
  let stdout = '';
  let stderr = '';
  const capture = (orig: typeof out, add: (s: string) => void) =>
    ((chunk: unknown, ...rest: unknown[]) => {
      if (typeof chunk === 'string') {
        add(chunk);
        return true;
      }
      return (orig as (...a: unknown[]) => boolean).call(orig === out ? process.stdout : process.stderr, chunk, ...rest);
    }) as typeof out;
  process.stdout.write = capture(out, (s) => (stdout += s));
  process.stderr.write = capture(err, (s) => (stderr += s));
  try {
    const code = await main(argv);
    return { code, stdout, stderr };
  } catch (e) {
    return { code: null, thrown: e, stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

const lastLine = (s: string) => s.trim().split('\n').pop() ?? '';

/** Asserts exit code 2 with a one-line `sparsek: error:` message matching every pattern. */
function assertUsageError(r: CliResult, ...patterns: (string | RegExp)[]): void {
  assert.equal(r.code, 2, `expected exit code 2, got ${r.code}${r.thrown ? ` (threw ${r.thrown})` : ''}; stderr: ${r.stderr}`);
  const line = r.stderr.split('\n').find((l) => l.startsWith('sparsek: error:'));
  assert.ok(line, `no 'sparsek: error:' line in stderr: ${r.stderr}`);
  for (const p of patterns) {
    const ok = typeof p === 'string' ? line.includes(p) : p.test(line);
    assert.ok(ok, `error line does not mention ${p}: ${line}`);
  }
}

const TINY = ['--layers', '1', '--dim', '16', '--heads', '2', '--kv-heads', '1', '--context', '16', '--batch', '2',
  '--steps', '3', '--vocab', '300', '--k', '3', '--window', '4', '--quiet'];

describe('sparsek CLI: happy path', () => {
  before(async () => {
    const r = await cli('train', '--data', corpus, ...TINY, '--out', run);
    assert.equal(r.code, 0, `train failed: ${r.stderr}`);
  });

  test('train writes the run folder and a JSON summary line', async () => {
    for (const f of ['config.json', 'model.safetensors', 'optimizer.safetensors', 'tokenizer.json', 'trainer.json', 'metrics.jsonl', 'loss.svg']) {
      assert.ok(fs.existsSync(path.join(run, f)), `${f} missing`);
    }
    assert.deepEqual(tmpLeftovers(run), []);
    const cfg = JSON.parse(fs.readFileSync(path.join(run, 'config.json'), 'utf8'));
    assert.equal(cfg.model.layers, 1);
    assert.equal(cfg.model.dim, 16);
    assert.equal(cfg.model.kvHeads, 1);
    assert.equal(cfg.model.k, 3);
    assert.ok(cfg.model.vocabSize > 256 && cfg.model.vocabSize <= 300, `BPE vocabulary ${cfg.model.vocabSize}`);
    assert.equal(fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 3);
  });

  test('train --lr below the default floor: the cosine decays to a tenth of the given peak', async () => {
    const low = path.join(root, 'low-lr');
    const r = await cli('train', '--data', corpus, ...TINY, '--lr', '1e-4', '--out', low);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(fs.readFileSync(path.join(low, 'config.json'), 'utf8'));
    assert.equal(cfg.train.lr, 1e-4);
    assert.ok(Math.abs(cfg.train.minLr - 1e-5) < 1e-18, `minLr ${cfg.train.minLr}`);
  });

  test('eval: last stdout line is JSON {loss, perplexity, tokens}', async () => {
    const r = await cli('eval', '--checkpoint', run);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(lastLine(r.stdout));
    assert.ok(Number.isFinite(j.loss) && j.loss > 0);
    assert.ok(Math.abs(j.perplexity - Math.exp(j.loss)) <= 1e-9 * j.perplexity);
    assert.ok(Number.isInteger(j.tokens) && j.tokens > 0 && j.tokens % 16 === 0);
    // A longer context than training (within 16x) is allowed.
    const r2 = await cli('eval', '--checkpoint', run, '--context', '32', '--rows', '4');
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(JSON.parse(lastLine(r2.stdout)).tokens, 4 * 32);
  });

  test('generate --stats: the continuation, then JSON {tokens, tokensPerSecond, cacheBytesMax, cacheBytesFinal}', async () => {
    const r = await cli('generate', '--checkpoint', run, '--prompt', 'The union', '--tokens', '12', '--temperature', '0', '--stats');
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.startsWith('The union'), 'the prompt is echoed first');
    const j = JSON.parse(lastLine(r.stdout));
    assert.equal(j.tokens, 12);
    assert.ok(j.tokensPerSecond > 0);
    assert.ok(Number.isInteger(j.cacheBytesMax) && j.cacheBytesMax > 0);
    assert.ok(Number.isInteger(j.cacheBytesFinal) && j.cacheBytesFinal > 0 && j.cacheBytesFinal <= j.cacheBytesMax);
    const again = await cli('generate', '--checkpoint', run, '--prompt', 'The union', '--tokens', '12', '--temperature', '0');
    assert.equal(again.stdout.trim(), r.stdout.trim().split('\n').slice(0, -1).join('\n').trim(), 'greedy output is deterministic');
  });

  test('plot --runs: .svg and .png; plot --selection: .svg', async () => {
    const svg = path.join(root, 'plots', 'x.svg');
    const png = path.join(root, 'plots', 'x.png');
    const sel = path.join(root, 'plots', 'sel.svg');
    assert.equal((await cli('plot', '--runs', run, '--out', svg)).code, 0);
    assert.equal((await cli('plot', '--runs', run, '--out', png)).code, 0);
    const r = await cli('plot', '--selection', run, '--text', 'The union of the people and the state of the nation', '--out', sel);
    assert.equal(r.code, 0, r.stderr);
    assert.match(fs.readFileSync(svg, 'utf8'), /<svg[\s>]/);
    assert.match(fs.readFileSync(sel, 'utf8'), /<svg[\s>]/);
    assert.deepEqual([...fs.readFileSync(png).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
    assert.deepEqual(tmpLeftovers(path.join(root, 'plots')), []);
  });

  test('plot --curves picks training or validation curves; --from-step past the last step is an error', async () => {
    const v = path.join(root, 'plots', 'v.svg'), t = path.join(root, 'plots', 't.svg');
    assert.equal((await cli('plot', '--runs', run, '--curves', 'validation', '--out', v)).code, 0);
    assert.equal((await cli('plot', '--runs', run, '--curves', 'train', '--from-step', '1', '--out', t)).code, 0);
    const vs = fs.readFileSync(v, 'utf8'), ts = fs.readFileSync(t, 'utf8');
    assert.match(vs, /Validation loss/);
    assert.doesNotMatch(vs, / train</);
    assert.match(ts, /Training loss/);
    assert.match(ts, / train</);
    assert.doesNotMatch(ts, / validation</);
    assertUsageError(await cli('plot', '--runs', run, '--from-step', '100000000', '--out', v), 'step 100000000');
    assertUsageError(await cli('plot', '--runs', run, '--curves', 'all', '--out', v), '--curves');
  });
});

describe('sparsek CLI: bad input exits 2 and names the problem', () => {
  test('unknown flag, malformed value, unknown command, missing required flag', async () => {
    assertUsageError(await cli('train', '--bogus', '3'), '--bogus');
    assertUsageError(await cli('train', '--steps', 'three', '--out', path.join(root, 'never')), '--steps', 'integer');
    assertUsageError(await cli('frobnicate'), 'frobnicate');
    assertUsageError(await cli('eval'), '--checkpoint');
    assert.equal(fs.existsSync(path.join(root, 'never')), false, 'nothing written for a rejected command line');
  });

  test('train, convert and export refuse a folder that already holds a model, and leave it as it was', async () => {
    const held = path.join(root, 'held');
    assert.equal((await cli('train', '--data', corpus, ...TINY, '--out', held)).code, 0);
    const files = () => Object.fromEntries(fs.readdirSync(held).sort().map((f) => [f, fs.readFileSync(path.join(held, f)).toString('base64')]));
    const before = files();
    assertUsageError(await cli('train', '--data', corpus, ...TINY, '--out', held), held, 'already holds a model', '--resume');
    assertUsageError(await cli('convert', '--from', run, '--attention', 'sparsek', '--k', '3', '--window', '4', '--out', held), held, 'already holds a model');
    assertUsageError(await cli('export', '--checkpoint', run, '--out', held), held, 'already holds a model');
    assert.deepEqual(files(), before);
    // --resume is the way to continue it.
    assert.equal((await cli('train', '--data', corpus, ...TINY, '--steps', '4', '--resume', '--out', held)).code, 0);
  });

  test('the real entry point exits with code 2', () => {
    const cliPath = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
    const p = spawnSync(process.execPath, ['--import', 'tsx', cliPath, 'eval', '--nope'], { encoding: 'utf8' });
    assert.equal(p.status, 2, `status ${p.status}, stderr ${p.stderr}`);
    assert.match(p.stderr, /sparsek: error: .*--nope/);
  });

  test('missing checkpoint folder', async () => {
    const missing = path.join(root, 'no-such-run');
    assertUsageError(await cli('eval', '--checkpoint', missing), missing);
    assertUsageError(await cli('generate', '--checkpoint', missing, '--prompt', 'x'), missing);
  });

  /** A copy of the trained run, corrupted by edit. */
  function corruptCopy(name: string, edit: (dir: string) => void): string {
    const dir = path.join(root, name);
    fs.cpSync(run, dir, { recursive: true });
    edit(dir);
    return dir;
  }

  test('corrupt checkpoint: bad safetensors header', async () => {
    const dir = corruptCopy('bad-header', (d) => {
      const f = path.join(d, 'model.safetensors');
      const bytes = fs.readFileSync(f);
      const len = Number(bytes.readBigUInt64LE(0));
      bytes.fill(0x7e, 8, 8 + Math.min(len, 12)); // '~~~~': the JSON header no longer parses
      fs.writeFileSync(f, bytes);
    });
    assertUsageError(await cli('eval', '--checkpoint', dir), 'model.safetensors', /header/);
    const huge = corruptCopy('huge-header', (d) => {
      const f = path.join(d, 'model.safetensors');
      const bytes = fs.readFileSync(f);
      bytes.writeBigUInt64LE(1n << 40n, 0);
      fs.writeFileSync(f, bytes);
    });
    assertUsageError(await cli('generate', '--checkpoint', huge, '--prompt', 'x'), 'model.safetensors');
  });

  test('corrupt checkpoint: truncated model.safetensors', async () => {
    const dir = corruptCopy('truncated', (d) => {
      const f = path.join(d, 'model.safetensors');
      fs.truncateSync(f, Math.floor(fs.statSync(f).size / 2));
    });
    assertUsageError(await cli('eval', '--checkpoint', dir), 'model.safetensors', /truncated|short|end/);
  });

  test('corrupt checkpoint: config.json no longer matches the weights (dim 16 -> 32)', async () => {
    const dir = corruptCopy('mismatch', (d) => {
      const f = path.join(d, 'config.json');
      const cfg = JSON.parse(fs.readFileSync(f, 'utf8'));
      cfg.model.dim = 32;
      fs.writeFileSync(f, JSON.stringify(cfg));
    });
    assertUsageError(await cli('eval', '--checkpoint', dir), 'model.safetensors', /shape/);
  });

  test('corrupt checkpoint: config.json is not JSON; optimizer state missing on --resume', async () => {
    const dir = corruptCopy('bad-config', (d) => fs.writeFileSync(path.join(d, 'config.json'), '{"format": "sparsek-run", '));
    assertUsageError(await cli('eval', '--checkpoint', dir), 'config.json');
    const noOpt = corruptCopy('no-optimizer', (d) => fs.rmSync(path.join(d, 'optimizer.safetensors')));
    assertUsageError(await cli('train', '--data', corpus, ...TINY, '--steps', '5', '--out', noOpt, '--resume'), 'optimizer.safetensors');
    assert.deepEqual(tmpLeftovers(noOpt), []);
    assert.equal(JSON.parse(fs.readFileSync(path.join(noOpt, 'trainer.json'), 'utf8')).step, 3, 'the failed resume changed nothing');
  });

  test('empty corpus (only whitespace files) is a DataError', async () => {
    const empty = path.join(root, 'empty-corpus');
    fs.mkdirSync(empty);
    fs.writeFileSync(path.join(empty, 'a.txt'), '   \n\n\t ');
    fs.writeFileSync(path.join(empty, 'b.txt'), '\n');
    const out = path.join(root, 'empty-run');
    assertUsageError(await cli('train', '--data', empty, ...TINY, '--out', out), /empty/);
    assert.deepEqual(tmpLeftovers(out), []);
    assert.equal(fs.existsSync(path.join(out, 'config.json')), false, 'no run folder for a failed run');
    await assert.rejects(train(tinyModel(), { ...DEFAULT_TRAIN, data: empty, tokenizer: 'byte', steps: 1 }, out, { quiet: true, log: () => undefined }), DataError);
  });

  test('eval --context beyond 16x the training context', async () => {
    assertUsageError(await cli('eval', '--checkpoint', run, '--context', '257'), '--context', '256');
  });

  test('--device cuda is a DeviceError', async () => {
    const out = path.join(root, 'cuda-run');
    assertUsageError(await cli('train', '--data', corpus, ...TINY, '--device', 'cuda', '--out', out), "device 'cuda'", /not available/);
    assert.equal(fs.existsSync(out), false);
    assertUsageError(await cli('eval', '--checkpoint', run, '--device', 'cuda'), "device 'cuda'");
    assertUsageError(await cli('generate', '--checkpoint', run, '--prompt', 'x', '--device', 'cuda'), "device 'cuda'");
  });

  test('a write that fails mid-run leaves no temporary files and no partial model', async () => {
    // model.safetensors is a folder here, so renaming the finished temporary file over it fails.
    const out = path.join(root, 'blocked');
    fs.mkdirSync(path.join(out, 'model.safetensors'), { recursive: true });
    const r = await cli('train', '--data', corpus, ...TINY, '--out', out);
    assert.ok(r.code !== 0, 'the run must fail');
    assert.deepEqual(tmpLeftovers(out), []);
    assert.ok(fs.statSync(path.join(out, 'model.safetensors')).isDirectory());
    assert.equal(fs.existsSync(path.join(out, 'trainer.json')), false, 'trainer.json (the commit point) must not be written');
  });
});
