// The passkey retrieval task (Mohtashami and Jaggi 2023) for issue 7's long-range experiment: a
// document of repetitive filler hides one sentence "The pass key is NNNNN. Remember it. NNNNN is
// the pass key." at some depth, and ends with "What is the pass key? The pass key is NNNNN." A
// model can predict the final digits only by looking back at the key, so attention that cannot
// reach that far (a window shorter than the distance) is at chance. Documents are made from a seed,
// so the training corpus and the evaluation set are reproducible and disjoint (different seeds).
// Scoring is teacher-forced: the argmax of the logits at each of the last five digits. Not here:
// training (the CLI trains on a folder of these documents like any corpus).

import { ArgumentError } from '../core/errors.js';
import { Rng } from '../core/random.js';

/** The repetitive filler sentence of the passkey documents (and of recall documents' gaps). */
export const FILLER = 'The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ';
const QUESTION = 'What is the pass key? The pass key is ';

/** One passkey document, with where its key sentence starts and the key itself. */
export interface PasskeyDocument {
  text: string;
  key: string; // five digits
  keyAt: number; // character offset of the key sentence
}

export interface PasskeyOptions {
  /** Document length in characters (about; filler is cut to fit), at least 200. */
  length: number;
  /** Where the key sentence goes, as a fraction of the filler before it: [min, max] in [0, 1]. */
  depth: [number, number];
  seed: number;
}

/**
 * n passkey documents of about opts.length characters each.
 * @example
 *   const [d] = passkeyDocuments(1, { length: 2000, depth: [0, 0.5], seed: 1 });
 *   d.text.endsWith(`The pass key is ${d.key}.`)   // true
 */
export function passkeyDocuments(n: number, opts: PasskeyOptions): PasskeyDocument[] {
  if (!Number.isInteger(n) || n < 1) throw new ArgumentError('n', 'an integer >= 1', n);
  if (!Number.isInteger(opts.length) || opts.length < 200) throw new ArgumentError('length', 'an integer >= 200 (characters)', opts.length);
  const [lo, hi] = opts.depth;
  if (!(lo >= 0 && lo <= hi && hi <= 1)) throw new ArgumentError('depth', '[min, max] with 0 <= min <= max <= 1', `[${lo}, ${hi}]`);
  const rng = new Rng(opts.seed);
  const docs: PasskeyDocument[] = [];
  for (let d = 0; d < n; d++) {
    const key = String(10000 + rng.int(90000));
    const keySentence = `The pass key is ${key}. Remember it. ${key} is the pass key. `;
    const ending = `${QUESTION}${key}.`;
    const fillerChars = Math.max(0, opts.length - keySentence.length - ending.length);
    const filler = FILLER.repeat(Math.ceil(fillerChars / FILLER.length) + 1).slice(0, fillerChars);
    // Cut the filler at a sentence boundary near the chosen depth, so the key sentence stays whole.
    const want = Math.floor((lo + (hi - lo) * rng.uniform()) * fillerChars);
    const cut = Math.max(0, filler.lastIndexOf('. ', want) + 2);
    const text = filler.slice(0, cut) + keySentence + filler.slice(cut) + ending;
    docs.push({ text, key, keyAt: cut });
  }
  return docs;
}

/** Token ids of a document and the positions whose next-token logits must name the key's digits. */
export interface PasskeyProbe {
  ids: number[];
  /** positions[c] = index t whose logits row predicts digit c of the final key. */
  positions: number[];
  digits: number[]; // the token id of each digit
}

/**
 * The teacher-forced probe of a document: encodes everything before the final key, then the key one
 * digit token at a time (digits are encoded separately so that any tokenizer gives one token per
 * digit position to score).
 */
export function passkeyProbe(doc: PasskeyDocument, encode: (s: string) => number[]): PasskeyProbe {
  const prefix = doc.text.slice(0, doc.text.length - doc.key.length - 1);
  const ids = encode(prefix);
  const positions: number[] = [];
  const digits: number[] = [];
  for (const ch of doc.key) {
    const t = encode(ch);
    if (t.length !== 1) throw new ArgumentError('encode', 'a tokenizer that encodes a single digit as one token', `${t.length} tokens for '${ch}'`);
    positions.push(ids.length - 1);
    digits.push(t[0]);
    ids.push(t[0]);
  }
  // The model trained on whole documents: the probe must be the tokens it saw there (true for the
  // byte tokenizer; a BPE may merge a digit with its neighbours).
  const whole = encode(doc.text.slice(0, doc.text.length - 1));
  if (whole.length !== ids.length || whole.some((x, i) => x !== ids[i])) {
    throw new ArgumentError('encode', 'a tokenizer under which the key encodes digit by digit in context (use --tokenizer byte)', 'a merged encoding');
  }
  return { ids, positions, digits };
}

/**
 * Scores logits (T, V) of a probe's ids: the number of digits whose argmax is right, and whether
 * all five are (the key retrieved).
 */
export function scorePasskey(logits: ArrayLike<number>, V: number, probe: PasskeyProbe): { correct: number; exact: boolean } {
  if (logits.length !== probe.ids.length * V) throw new ArgumentError('logits', `(${probe.ids.length}, ${V}) values`, logits.length);
  let correct = 0;
  probe.positions.forEach((t, c) => {
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[t * V + v] > logits[t * V + best]) best = v;
    if (best === probe.digits[c]) correct++;
  });
  return { correct, exact: correct === probe.digits.length };
}
