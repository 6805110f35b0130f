// Multi-query associative recall (Arora et al. 2023, "Zoology") for issue 7's long-range
// experiment: a document lists key=value facts ("qzf=37, ") and then asks for every key again in
// another order ("qzf=37. "). Each query's value digits can be predicted only by finding the
// key's fact, which is often further back than a window reaches. Unlike the passkey task, every
// document holds hundreds of such predictions, so a model gets a dense signal to learn retrieval
// from. Documents come from a seed (training and evaluation sets are disjoint by seed). Scoring is
// teacher-forced over the value digits, split by how far back the fact is. Needs a tokenizer that
// gives one token per character (the byte tokenizer).

import { ArgumentError } from '../core/errors.js';
import { Rng } from '../core/random.js';
import { FILLER } from './passkey.js';

/** One recall document and, per query, where its value digits are and how far back its fact is. */
export interface RecallDocument {
  text: string;
  /** For each query: the character offset of its first value digit, and that digit's offset minus the fact's. */
  queries: { at: number; distance: number }[];
  /** Digits per value (2 for style 'text', 1 for 'compact'). */
  digits: number;
}

/** What recallDocuments makes: `pairs` facts per document, keys of `keyLength` characters, and `gap` filler characters between facts and queries. */
export interface RecallOptions {
  pairs: number;
  seed: number;
  /** Characters per key (default 3, over a-z). 1 uses the 52 letters a-z and A-Z, so that a key is one byte token. */
  keyLength?: number;
  /** Characters of filler (passkey's sentences) between the facts and the queries (default 0): with a gap longer
   * than a window, no query's fact is within the window. [min, max]: each document draws its gap uniformly,
   * so that a corpus mixes easy (near) and hard (far) retrievals. */
  gap?: number | [number, number];
  /** 'text' (default): 'qzf=37, ' facts and 'qzf=37. ' queries, two-digit values. 'compact': 'Q3 ' facts and queries,
   * one-digit values right after the key, so that recall is the plain induction pattern (find the key, copy
   * what follows it), the form small models learn first (Olsson et al. 2022). */
  style?: 'text' | 'compact';
}

/**
 * n documents of `pairs` facts each, then the same keys queried in a shuffled order.
 * @example
 *   const [d] = recallDocuments(1, { pairs: 3, seed: 1 });
 *   d.text   // e.g. 'Facts: qzf=37, abk=05, rrt=90. Recall: abk=05. qzf=37. rrt=90.'
 *   recallDocuments(1, { pairs: 3, seed: 1, keyLength: 1, gap: 40 })[0].text
 *            // e.g. 'Facts: Q=37, b=05, r=90. The grass is green. The sky is blue. Recall: b=05. Q=37. r=90.'
 */
export function recallDocuments(n: number, opts: RecallOptions): RecallDocument[] {
  const { keyLength = 3, gap = 0, style = 'text' } = opts;
  if (style !== 'text' && style !== 'compact') throw new ArgumentError('style', "'text' or 'compact'", style);
  const digits = style === 'compact' ? 1 : 2;
  const sep = style === 'compact' ? '' : '=';
  if (!Number.isInteger(n) || n < 1) throw new ArgumentError('n', 'an integer >= 1', n);
  if (!Number.isInteger(keyLength) || keyLength < 1 || keyLength > 8) throw new ArgumentError('keyLength', 'an integer in [1, 8]', keyLength);
  const letters = keyLength === 1 ? 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ' : 'abcdefghijklmnopqrstuvwxyz';
  const maxPairs = Math.min(10000, letters.length ** keyLength);
  if (!Number.isInteger(opts.pairs) || opts.pairs < 1 || opts.pairs > maxPairs) {
    throw new ArgumentError('pairs', `an integer in [1, ${maxPairs}] (distinct keys of ${keyLength} character${keyLength > 1 ? 's' : ''})`, opts.pairs);
  }
  const [gapMin, gapMax] = gapRange(gap);
  const rng = new Rng(opts.seed);
  const docs: RecallDocument[] = [];
  for (let d = 0; d < n; d++) {
    const keys = new Set<string>();
    while (keys.size < opts.pairs) keys.add(Array.from({ length: keyLength }, () => letters[rng.int(letters.length)]).join(''));
    const facts = [...keys].map((k) => ({ key: k, value: String(rng.int(10 ** digits)).padStart(digits, '0') }));
    let text = 'Facts: ';
    const factAt = new Map<string, number>();
    facts.forEach((f, i) => {
      factAt.set(f.key, text.length + keyLength + sep.length); // the value's first digit
      text += `${f.key}${sep}${f.value}${i + 1 < facts.length ? (style === 'compact' ? ' ' : ', ') : '. '}`;
    });
    text += filler(rng, gapMin + rng.int(gapMax - gapMin + 1));
    text += 'Recall: ';
    const order = facts.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    const queries: RecallDocument['queries'] = [];
    order.forEach((i, q) => {
      const f = facts[i];
      const at = text.length + keyLength + sep.length;
      queries.push({ at, distance: at - (factAt.get(f.key) as number) });
      text += `${f.key}${sep}${f.value}${style === 'compact' ? '' : '.'}${q + 1 < order.length ? ' ' : ''}`;
    });
    docs.push({ text, queries, digits });
  }
  return docs;
}

/** The letters of copied strings: capitals, less the filler's (T, H), so that a letter of the string
 * occurs in the filler nowhere and matching it finds the string, not the filler's many letters. */
const COPY_LETTERS = 'ABCDEFGIJKLMNOPQRSUVWXYZ';

/** What copyDocuments makes: a random string of `length` letters, `gap` filler characters, then the string again. */
export interface CopyOptions {
  /** Letters to copy, or [min, max] drawn per document: a varying length varies the distance from each letter of
   * the repeat to its original even without a gap, so that no fixed-offset attention solves the task. */
  length: number | [number, number];
  seed: number;
  /** Filler characters between the string and its repeat, or [min, max] drawn per document (default 0). */
  gap?: number | [number, number];
  /** How many times the string is repeated (default 1), each after its own gap: 'Copy: S. <gap> Again: S. <gap> Again: S.'
   * More repeats give more letters to predict per document, and from the second repeat on several earlier
   * occurrences that show the answer. */
  repeats?: number;
}

/**
 * The long-range copy task, a denser relative of recall: 'Copy: <letters>. <filler> Again: <letters>.'
 * Every letter of the repeat after its first follows from the original by the induction pattern
 * (find the previous letter's earlier occurrence, copy what follows it), which small models learn far
 * sooner than key-value recall. Scored as recall (scoreRecall), one query per letter of the repeat
 * after the first, its distance the repeat's offset from the original (with repeats, from the previous repeat).
 * @example
 *   copyDocuments(1, { length: 5, seed: 1, gap: 20 })[0].text
 *            // e.g. 'Copy: QZFAB. The grass is green. Again: QZFAB.'
 */
export function copyDocuments(n: number, opts: CopyOptions): RecallDocument[] {
  const { length: lengths, gap = 0, repeats = 1 } = opts;
  if (!Number.isInteger(n) || n < 1) throw new ArgumentError('n', 'an integer >= 1', n);
  if (!Number.isInteger(repeats) || repeats < 1 || repeats > 100) throw new ArgumentError('repeats', 'an integer in [1, 100]', repeats);
  const [lenMin, lenMax] = typeof lengths === 'number' ? [lengths, lengths] : lengths;
  if (!Number.isInteger(lenMin) || !Number.isInteger(lenMax) || lenMin < 2 || lenMax < lenMin || lenMax > 10000) {
    throw new ArgumentError('length', 'an integer in [2, 10000], or [min, max] with 2 <= min <= max <= 10000 (letters to copy)', lengths);
  }
  const [gapMin, gapMax] = gapRange(gap);
  const rng = new Rng(opts.seed);
  const docs: RecallDocument[] = [];
  for (let d = 0; d < n; d++) {
    // A fixed length draws nothing, so that documents of a fixed length stay what earlier seeds made.
    const length = lenMin === lenMax ? lenMin : lenMin + rng.int(lenMax - lenMin + 1);
    const str = Array.from({ length }, () => COPY_LETTERS[rng.int(COPY_LETTERS.length)]).join('');
    let text = 'Copy: ';
    let from = text.length; // where the previous occurrence starts: a repeat's distance is to the nearest one
    text += str;
    const queries: RecallDocument['queries'] = [];
    for (let r = 0; r < repeats; r++) {
      text += `. ${filler(rng, gapMin + rng.int(gapMax - gapMin + 1))}Again: `;
      const again = text.length;
      text += str;
      for (let i = 1; i < length; i++) queries.push({ at: again + i, distance: again - from });
      from = again;
    }
    text += '.';
    docs.push({ text, queries, digits: 1 });
  }
  return docs;
}

function gapRange(gap: number | [number, number]): [number, number] {
  const [lo, hi] = typeof gap === 'number' ? [gap, gap] : gap;
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 0 || hi < lo) {
    throw new ArgumentError('gap', 'an integer >= 0, or [min, max] with 0 <= min <= max (filler characters)', gap);
  }
  return [lo, hi];
}

/** n characters of passkey's filler from a random phase, ending in a space ('' for n = 0). */
function filler(rng: Rng, n: number): string {
  if (n === 0) return '';
  const from = rng.int(FILLER.length); // a varying phase, so that the filler is not one fixed string
  return FILLER.repeat(Math.ceil((n + from) / FILLER.length) + 1).slice(from, from + n).trimEnd() + ' ';
}

/** Calls visit(distance, hit) for each value digit of doc's queries: whether the logits row before it has its maximum at that digit. */
function forEachDigit(logits: ArrayLike<number>, V: number, ids: ArrayLike<number>, doc: RecallDocument,
  visit: (distance: number, hit: boolean) => void): void {
  if (logits.length !== ids.length * V) throw new ArgumentError('logits', `(${ids.length}, ${V}) values`, logits.length);
  for (const q of doc.queries) {
    for (let t = q.at; t < q.at + doc.digits; t++) {
      if (t < 1 || t >= ids.length) continue;
      const row = t - 1; // row t - 1 predicts token t
      let best = 0;
      for (let v = 1; v < V; v++) if (logits[row * V + v] > logits[row * V + best]) best = v;
      visit(q.distance, best === ids[t]);
    }
  }
}

/**
 * Scores logits (T, V) of a document's byte ids (T = text length): for each query's value
 * digits (doc.digits of them), whether the logits row before it has its maximum at that digit. Counts are split at
 * `near`: facts at most that many characters back, and facts further back.
 */
export function scoreRecall(logits: ArrayLike<number>, V: number, ids: ArrayLike<number>, doc: RecallDocument, near: number):
  { nearCorrect: number; nearTotal: number; farCorrect: number; farTotal: number } {
  const r = { nearCorrect: 0, nearTotal: 0, farCorrect: 0, farTotal: 0 };
  forEachDigit(logits, V, ids, doc, (distance, hit) => {
    if (distance <= near) {
      r.nearCorrect += hit ? 1 : 0;
      r.nearTotal++;
    } else {
      r.farCorrect += hit ? 1 : 0;
      r.farTotal++;
    }
  });
  return r;
}

/**
 * scoreRecall's digits counted by distance to their fact, in the bins [0, edges[0]], (edges[0], edges[1]], ...
 * of ascending edges; digits further back than the last edge are not counted.
 */
export function scoreRecallByDistance(logits: ArrayLike<number>, V: number, ids: ArrayLike<number>, doc: RecallDocument,
  edges: readonly number[]): { correct: number[]; total: number[] } {
  if (edges.length === 0 || edges.some((e, i) => !(e >= 0) || (i > 0 && e <= edges[i - 1]))) {
    throw new ArgumentError('edges', 'ascending distances >= 0', edges);
  }
  const correct = edges.map(() => 0), total = edges.map(() => 0);
  forEachDigit(logits, V, ids, doc, (distance, hit) => {
    const b = edges.findIndex((e) => distance <= e);
    if (b < 0) return;
    correct[b] += hit ? 1 : 0;
    total[b]++;
  });
  return { correct, total };
}
