// Shared fixtures of the training and CLI tests: a tiny English-like corpus folder in a temporary
// directory, and a tiny model configuration. Inputs only, not oracles.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ModelConfig } from '../../src/model/config.js';

const WORDS = ('the of and to in a is that for it as was with be by on not he this are or his from at which ' +
  'but have an they you were her she there been one all we their has would when if so no will more out up ' +
  'union people state nation government congress year law public country peace war trade money citizens').split(' ');

/** A temporary folder, removed by the caller. */
export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `sparsek-${prefix}-`));
}

/**
 * Writes `docs` text files of about `words` words each into dir (sentences of common words drawn by
 * an LCG, so the text has English-like statistics and repeats). Returns dir.
 */
export function writeCorpus(dir: string, docs = 5, words = 500, seed = 1): string {
  fs.mkdirSync(dir, { recursive: true });
  let s = seed >>> 0;
  const next = (n: number) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return Math.floor((s / 4294967296) * n);
  };
  for (let d = 0; d < docs; d++) {
    const parts: string[] = [];
    let sentence: string[] = [];
    for (let w = 0; w < words; w++) {
      // Skewed draws: low indices (the, of, and) are the frequent words, as in English.
      const i = Math.min(next(WORDS.length), next(WORDS.length));
      sentence.push(WORDS[i]);
      if (sentence.length >= 6 + next(8)) {
        const t = sentence.join(' ');
        parts.push(t[0].toUpperCase() + t.slice(1) + '.');
        sentence = [];
      }
    }
    fs.writeFileSync(path.join(dir, `doc${d}.txt`), parts.join(' ') + '\n');
  }
  return dir;
}

/** A tiny SparseK model (the vocabulary is replaced by the tokenizer's in train()). */
export function tinyModel(over: Partial<ModelConfig> = {}): ModelConfig {
  return {
    vocabSize: 256, layers: 2, dim: 16, heads: 2, kvHeads: 1, ffnDim: 32, context: 16,
    attention: 'sparsek', k: 3, window: 4, scoreSlope: 0.01, hashBuckets: 4, ropeTheta: 10000, normEps: 1e-5,
    ...over,
  };
}

/** Files left with the temporary suffix of writeFileAtomic or writePlot, below dir. */
export function tmpLeftovers(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => /\.tmp-/.test(f));
}
