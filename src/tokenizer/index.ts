// Tokenizers for the language model (SPEC.md sections 7-8): the common interface, and loading and
// saving the Hugging Face tokenizer.json format. Two implementations: ByteTokenizer (ids = UTF-8
// bytes, no training) and BpeTokenizer (GPT-2 byte-level BPE, trained by trainBpe or loaded from
// a Hugging Face model folder). Not here: special-token handling beyond splitting on added tokens
// (no BOS/EOS insertion by post-processors; callers add separators themselves).

import { readFile } from 'node:fs/promises';
import { ArgumentError, CheckpointError } from '../core/errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { BYTE_TO_UNICODE, BpeTokenizer, parseTokenizerJSON } from './bpe.js';
import { ByteTokenizer } from './byte.js';

export { BpeTokenizer, trainBpe, BYTE_TO_UNICODE, GPT2_SPLIT_PATTERN } from './bpe.js';
export type { AddedToken, BpeOptions, TrainBpeOptions } from './bpe.js';
export { ByteTokenizer } from './byte.js';

/** What the model needs from a tokenizer. */
export interface Tokenizer {
  /** Number of token ids: every id in [0, vocabSize) can be decoded. */
  readonly vocabSize: number;
  /** Text -> token ids. */
  encode(text: string): number[];
  /** Token ids -> text; byte sequences that are not valid UTF-8 decode to U+FFFD. */
  decode(ids: ArrayLike<number>): string;
  /** The Hugging Face tokenizer.json object (JSON.stringify it to save). */
  toJSON(): object;
}

/**
 * Builds a tokenizer from a parsed Hugging Face tokenizer.json: a byte-level BPE (GPT-2 style:
 * ByteLevel pre-tokenizer and decoder). A BPE with no merges whose vocabulary is exactly the 256
 * bytes in byte order comes back as a ByteTokenizer. `source` names the file in error messages.
 *
 * @example
 *   const tok = tokenizerFromJSON(JSON.parse(readFileSync('gpt2/tokenizer.json', 'utf8')));
 *   tok.encode('Hello world')   // [15496, 995] with GPT-2's file
 */
export function tokenizerFromJSON(obj: unknown, source = 'tokenizer.json'): Tokenizer {
  const opts = parseTokenizerJSON(obj, source);
  const isBytes = opts.merges.length === 0 && opts.vocab.length === 256 && opts.addedTokens.length === 0 &&
    !opts.addPrefixSpace && opts.normalizer === null && opts.vocab.every((tok, id) => tok === BYTE_TO_UNICODE[id]);
  if (isBytes) return new ByteTokenizer();
  try {
    return new BpeTokenizer(opts);
  } catch (err) {
    // The constructor's checks (merges whose tokens are missing, an id given twice) are problems
    // of the file: report them against it.
    if (err instanceof ArgumentError) throw new CheckpointError(source, err.message);
    throw err;
  }
}

/** Reads a tokenizer.json file. Throws CheckpointError when it is missing, not JSON, or unsupported. */
export async function loadTokenizer(path: string): Promise<Tokenizer> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CheckpointError(path, code === 'ENOENT' ? 'file not found' : `cannot read: ${(err as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new CheckpointError(path, `not valid JSON (${(err as Error).message})`);
  }
  return tokenizerFromJSON(obj, path);
}

/** Writes a tokenizer as tokenizer.json, atomically. */
export async function saveTokenizer(path: string, tokenizer: Tokenizer): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(tokenizer.toJSON()));
}
