// Flag parsing: a list option takes every value up to the next flag, as SPEC writes `--runs DIR...`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseOptions } from '../../src/cli/args.js';
import { OptionError } from '../../src/core/errors.js';

const table = {
  runs: { kind: 'strings' as const, help: 'run folders' },
  out: { kind: 'string' as const, help: 'file' },
  steps: { kind: 'int' as const, help: 'steps' },
};

test('--runs a b c takes three values, and the next flag ends the list', () => {
  assert.deepEqual(parseOptions('plot', ['--runs', 'a', 'b', 'c', '--out', 'x.svg'], table), { runs: ['a', 'b', 'c'], out: 'x.svg' });
  assert.deepEqual(parseOptions('plot', ['--out', 'x.svg', '--runs', 'a'], table), { out: 'x.svg', runs: ['a'] });
});

test('a stray value after a single-valued flag is still an error', () => {
  assert.throws(() => parseOptions('plot', ['--out', 'x.svg', 'y.svg'], table), OptionError);
  assert.throws(() => parseOptions('plot', ['--steps', '1.5'], table), /--steps takes an integer/);
});
