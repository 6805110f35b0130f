// GPT-2 style byte-level BPE (SPEC.md section 8): training, encoding, decoding, and the Hugging Face
// tokenizer.json format. Text is cut into words by the GPT-2 pre-tokenization regex, each word's
// UTF-8 bytes become the 256 base symbols (drawn as printable characters by GPT-2's bytes->unicode
// table), and the learned merges are applied lowest rank first, leftmost first, exactly as the
// Hugging Face implementations do, so a file we write encodes identically there and a GPT-2
// tokenizer.json from the Hub encodes identically here.
// Our trained vocabularies put byte b at id b, then merges in the order learned, then any special
// tokens. Not here: dropout, unigram/wordpiece models, Split/Sequence pre-tokenizers (llama-3 style
// files are refused with a clear error), post-processor templates (no BOS/EOS insertion).

import { ArgumentError, CheckpointError } from '../core/errors.js';
import { checkInt } from '../core/check.js';
import type { Tokenizer } from './index.js';

/** GPT-2's bytes -> unicode table: byte b is drawn as the character BYTE_TO_UNICODE[b]. */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  // Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, 0x7f-0xa0, 0xad)
  // are moved to U+0100.. so that every token is a visible, whitespace-free string.
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const table: string[] = new Array(256);
  for (const b of bs) table[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (table[b] === undefined) table[b] = String.fromCharCode(256 + n++);
  }
  return table;
})();

const UNICODE_TO_BYTE = new Map<string, number>(BYTE_TO_UNICODE.map((c, b) => [c, b]));

/** GPT-2's pre-tokenization pattern (contractions, letters, digits, other, whitespace runs). */
export const GPT2_SPLIT_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** A token matched literally in the input before pre-tokenization (tokenizer.json "added_tokens"). */
export interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  /** Remove whitespace on the left / right of the token, as Hugging Face does. */
  lstrip?: boolean;
  rstrip?: boolean;
}

export type UnicodeNormalizer = 'NFC' | 'NFD' | 'NFKC' | 'NFKD';

export interface BpeOptions {
  /** id -> token (byte-level characters). Holes (undefined) are ids that cannot be decoded. */
  vocab: (string | undefined)[];
  /** Merge rules, rank 0 first. Each part and their concatenation must be in vocab. */
  merges: [string, string][];
  addedTokens?: AddedToken[];
  /** ByteLevel add_prefix_space: prepend ' ' to text that does not start with one. */
  addPrefixSpace?: boolean;
  /** ByteLevel use_regex: split with the GPT-2 pattern (false: each text is one word). */
  useRegex?: boolean;
  normalizer?: UnicodeNormalizer | null;
  /** BPE ignore_merges: a word that is itself in vocab is emitted whole. */
  ignoreMerges?: boolean;
  /** Token for bytes missing from vocab (never needed when all 256 bytes are present). */
  unkToken?: string | null;
}

export interface TrainBpeOptions {
  /** Train on at most this many UTF-8 bytes: each text contributes the same fraction of itself. */
  maxBytes?: number;
  /** Tokens appended after the merges (e.g. '<|endoftext|>'); they count toward vocabSize. */
  specialTokens?: string[];
}

// Pair keys pack two ids into one float64-exact integer: a * 2^21 + b (vocabularies < 2^21).
const PAIR = 2 ** 21;
// Words longer than this use the heap-based merge loop; shorter ones the O(n^2) scan, faster there.
const SCAN_MAX = 48;
const CACHE_MAX = 200_000;

/** A byte-level BPE tokenizer (see the file comment). Build with trainBpe or tokenizerFromJSON. */
export class BpeTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly addedTokens: readonly AddedToken[];
  private readonly vocab: (string | undefined)[];
  private readonly merges: [string, string][];
  private readonly tokenToId = new Map<string, number>();
  private readonly byteToId = new Int32Array(256);
  private readonly mergeRank = new Map<number, number>(); // pair key -> rank
  private readonly mergeLeft: Int32Array; // rank -> left id
  private readonly mergeRight: Int32Array; // rank -> right id
  private readonly mergeResult: Int32Array; // rank -> merged id
  private readonly idBytes: (Uint8Array | undefined)[];
  private readonly addPrefixSpace: boolean;
  private readonly useRegex: boolean;
  private readonly normalizer: UnicodeNormalizer | null;
  private readonly ignoreMerges: boolean;
  private readonly unkId: number;
  private readonly unkToken: string | null;
  private readonly addedSplit: RegExp | null;
  private readonly addedByContent = new Map<string, AddedToken>();
  private readonly cache = new Map<string, number[]>();
  private readonly encoder = new TextEncoder();
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  constructor(opts: BpeOptions) {
    this.vocab = opts.vocab.slice();
    this.merges = opts.merges.map(([a, b]) => [a, b]);
    this.addedTokens = (opts.addedTokens ?? []).map((t) => ({ ...t }));
    this.addPrefixSpace = opts.addPrefixSpace ?? false;
    this.useRegex = opts.useRegex ?? true;
    this.normalizer = opts.normalizer ?? null;
    this.ignoreMerges = opts.ignoreMerges ?? false;
    this.unkToken = opts.unkToken ?? null;

    let size = this.vocab.length;
    for (let id = 0; id < this.vocab.length; id++) {
      const tok = this.vocab[id];
      if (tok === undefined) continue;
      if (this.tokenToId.has(tok)) throw new ArgumentError('vocab', 'distinct token strings', `'${tok}' at ids ${this.tokenToId.get(tok)} and ${id}`);
      this.tokenToId.set(tok, id);
    }
    if (size >= PAIR) throw new ArgumentError('vocab', `fewer than ${PAIR} tokens`, size);
    for (const t of this.addedTokens) {
      checkInt('addedTokens[].id', t.id, 0, PAIR - 1);
      if (typeof t.content !== 'string' || t.content.length === 0) throw new ArgumentError('addedTokens[].content', 'a non-empty string', t.content);
      size = Math.max(size, t.id + 1);
      this.addedByContent.set(t.content, t);
    }
    this.vocabSize = size;
    this.unkId = this.unkToken !== null ? this.tokenToId.get(this.unkToken) ?? -1 : -1;

    for (let b = 0; b < 256; b++) this.byteToId[b] = this.tokenToId.get(BYTE_TO_UNICODE[b]) ?? -1;

    const R = this.merges.length;
    this.mergeLeft = new Int32Array(R);
    this.mergeRight = new Int32Array(R);
    this.mergeResult = new Int32Array(R);
    for (let r = 0; r < R; r++) {
      const [a, b] = this.merges[r];
      const ia = this.tokenToId.get(a);
      const ib = this.tokenToId.get(b);
      const iz = this.tokenToId.get(a + b);
      if (ia === undefined || ib === undefined || iz === undefined) {
        const missing = ia === undefined ? a : ib === undefined ? b : a + b;
        throw new ArgumentError(`merges[${r}]`, 'a pair whose parts and concatenation are in vocab', `'${a} ${b}' ('${missing}' is not)`);
      }
      const key = ia * PAIR + ib;
      // A repeated rule keeps its first (lowest) rank, as in the Hugging Face implementations.
      if (!this.mergeRank.has(key)) this.mergeRank.set(key, r);
      this.mergeLeft[r] = ia;
      this.mergeRight[r] = ib;
      this.mergeResult[r] = iz;
    }

    this.idBytes = new Array(size);
    for (let id = 0; id < this.vocab.length; id++) {
      const tok = this.vocab[id];
      if (tok !== undefined) this.idBytes[id] = this.tokenBytes(tok);
    }
    for (const t of this.addedTokens) this.idBytes[t.id] = this.tokenBytes(t.content);

    if (this.addedTokens.length > 0) {
      // Longest first, so that an added token containing another one wins.
      const contents = [...this.addedByContent.keys()].sort((x, y) => y.length - x.length || (x < y ? -1 : 1));
      this.addedSplit = new RegExp(contents.map(escapeRegExp).join('|'), 'gu');
    } else {
      this.addedSplit = null;
    }
  }

  /** id of a token string (vocabulary or added token), or undefined. */
  tokenId(token: string): number | undefined {
    return this.addedByContent.get(token)?.id ?? this.tokenToId.get(token);
  }

  /**
   * Text -> ids: split on added tokens, normalize, pre-tokenize with the GPT-2 regex, then apply
   * the merges to each word's bytes.
   *
   * @example
   *   tok.encode('Hello, world!')   // e.g. [ 1012, 44, 1422, 33 ]
   */
  encode(text: string): number[] {
    if (typeof text !== 'string') throw new ArgumentError('text', 'a string', text);
    const out: number[] = [];
    if (this.addedSplit === null) {
      this.encodeOrdinary(text, out);
      return out;
    }
    // Sections alternate: ordinary text, added token, ordinary text, ...
    const sections: string[] = [];
    let last = 0;
    for (const m of text.matchAll(this.addedSplit)) {
      sections.push(text.slice(last, m.index), m[0]);
      last = m.index! + m[0].length;
    }
    sections.push(text.slice(last));
    for (let i = 1; i < sections.length; i += 2) {
      const t = this.addedByContent.get(sections[i])!;
      if (t.lstrip) sections[i - 1] = sections[i - 1].trimEnd();
      if (t.rstrip) sections[i + 1] = sections[i + 1].trimStart();
    }
    for (let i = 0; i < sections.length; i++) {
      if (i % 2 === 1) out.push(this.addedByContent.get(sections[i])!.id);
      else if (sections[i].length > 0) this.encodeOrdinary(sections[i], out);
    }
    return out;
  }

  /** ids -> text. Invalid UTF-8 (e.g. a multi-byte character cut in half) decodes to U+FFFD. */
  decode(ids: ArrayLike<number>): string {
    if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') throw new ArgumentError('ids', 'an array of token ids', ids);
    const parts: Uint8Array[] = new Array(ids.length);
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const bytes = Number.isInteger(id) ? this.idBytes[id] : undefined;
      if (bytes === undefined) throw new ArgumentError(`ids[${i}]`, `a token id in [0, ${this.vocabSize})`, id);
      parts[i] = bytes;
      total += bytes.length;
    }
    const buf = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      buf.set(p, o);
      o += p.length;
    }
    return this.decoder.decode(buf);
  }

  /** The Hugging Face tokenizer.json object for this tokenizer. */
  toJSON(): object {
    return hfTokenizerJSON(this.vocab, this.merges, this.addedTokens, {
      addPrefixSpace: this.addPrefixSpace, useRegex: this.useRegex, normalizer: this.normalizer,
      ignoreMerges: this.ignoreMerges, unkToken: this.unkToken,
    });
  }

  private encodeOrdinary(text: string, out: number[]): void {
    if (this.normalizer !== null) text = text.normalize(this.normalizer);
    if (this.addPrefixSpace && !text.startsWith(' ')) text = ' ' + text;
    if (!this.useRegex) {
      if (text.length > 0) this.encodeWord(text, out);
      return;
    }
    const re = new RegExp(GPT2_SPLIT_PATTERN);
    for (let m = re.exec(text); m !== null; m = re.exec(text)) this.encodeWord(m[0], out);
  }

  private encodeWord(word: string, out: number[]): void {
    let ids = this.cache.get(word);
    if (ids === undefined) {
      ids = this.bpe(this.encoder.encode(word));
      // A bounded cache: clearing is cheaper than LRU bookkeeping, and refills from the words
      // that are actually frequent.
      if (this.cache.size >= CACHE_MAX) this.cache.clear();
      this.cache.set(word, ids);
    }
    for (let i = 0; i < ids.length; i++) out.push(ids[i]);
  }

  private bpe(bytes: Uint8Array): number[] {
    const n = bytes.length;
    const syms = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      const id = this.byteToId[bytes[i]];
      if (id < 0) {
        if (this.unkId < 0) throw new ArgumentError('text', 'bytes present in the vocabulary (this tokenizer has no unk token)', `byte 0x${bytes[i].toString(16)}`);
        syms[i] = this.unkId;
      } else {
        syms[i] = id;
      }
    }
    if (this.ignoreMerges && n > 1) {
      let s = '';
      for (let i = 0; i < n; i++) s += BYTE_TO_UNICODE[bytes[i]];
      const whole = this.tokenToId.get(s);
      if (whole !== undefined) return [whole];
    }
    if (n < 2 || this.merges.length === 0) return syms;
    return n <= SCAN_MAX ? this.mergeScan(syms) : this.mergeHeap(syms);
  }

  // Short words: repeatedly find the lowest-rank adjacent pair (leftmost on ties) and merge it.
  private mergeScan(syms: number[]): number[] {
    let n = syms.length;
    while (n > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < n; i++) {
        const r = this.mergeRank.get(syms[i] * PAIR + syms[i + 1]);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      syms[best] = this.mergeResult[bestRank];
      for (let i = best + 1; i + 1 < n; i++) syms[i] = syms[i + 1];
      n--;
    }
    syms.length = n;
    return syms;
  }

  // Long words: the same order of merges, driven by a min-heap of (rank, position) over a linked
  // list, O(n log n) instead of O(n^2). A popped entry is stale when its pair has changed, which
  // is detected by recomputing the pair's rank (a rank names exactly one pair).
  private mergeHeap(syms: number[]): number[] {
    const n = syms.length;
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1;
      prev[i] = i - 1;
    }
    const heap = new NumberHeap();
    const push = (i: number): void => {
      const j = next[i];
      if (j >= n) return;
      const r = this.mergeRank.get(syms[i] * PAIR + syms[j]);
      if (r !== undefined) heap.push(r * n + i);
    };
    for (let i = 0; i + 1 < n; i++) push(i);
    while (heap.size > 0) {
      const key = heap.pop();
      const r = Math.floor(key / n);
      const i = key - r * n;
      if (!alive[i]) continue;
      const j = next[i];
      if (j >= n || this.mergeRank.get(syms[i] * PAIR + syms[j]) !== r) continue;
      syms[i] = this.mergeResult[r];
      alive[j] = 0;
      next[i] = next[j];
      if (next[j] < n) prev[next[j]] = i;
      if (prev[i] >= 0) push(prev[i]);
      push(i);
    }
    const out: number[] = [];
    for (let i = 0; i < n; i = next[i]) out.push(syms[i]);
    return out;
  }

  // Bytes of a token: its characters through the byte table, or (as the Rust decoder does for a
  // token with a character outside the table) its own UTF-8.
  private tokenBytes(tok: string): Uint8Array {
    const out = new Uint8Array(tok.length);
    for (let i = 0; i < tok.length; i++) {
      const b = UNICODE_TO_BYTE.get(tok[i]);
      if (b === undefined) return this.encoder.encode(tok);
      out[i] = b;
    }
    return out;
  }
}

/**
 * Trains a byte-level BPE tokenizer with `vocabSize` tokens (256 bytes + merges + special tokens).
 * Words are counted once; each merge then touches only the word types containing the pair, with
 * pair counts updated incrementally. The most frequent pair wins; ties go to the smaller
 * (left id, right id), so the result depends only on the word counts. Stops early when no pair
 * is left.
 *
 * @example
 *   const tok = trainBpe(docs.map((d) => d.text), 2048, { maxBytes: 3e6 });
 *   tok.decode(tok.encode('The Congress')) === 'The Congress'
 */
export function trainBpe(texts: readonly string[], vocabSize: number, opts: TrainBpeOptions = {}): BpeTokenizer {
  if (!Array.isArray(texts) || !texts.every((t) => typeof t === 'string')) throw new ArgumentError('texts', 'an array of strings', texts);
  const specials = opts.specialTokens ?? [];
  if (!Array.isArray(specials) || !specials.every((s) => typeof s === 'string' && s.length > 0) || new Set(specials).size !== specials.length) {
    throw new ArgumentError('opts.specialTokens', 'an array of distinct non-empty strings', specials);
  }
  checkInt('vocabSize', vocabSize, 256 + specials.length, PAIR - 1);
  const sample = opts.maxBytes === undefined ? texts : sampleTexts(texts, checkInt('opts.maxBytes', opts.maxBytes, 1));

  // 1. Count pre-tokenized words.
  const wordCounts = new Map<string, number>();
  for (const text of sample) {
    const re = new RegExp(GPT2_SPLIT_PATTERN);
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const w = m[0];
      wordCounts.set(w, (wordCounts.get(w) ?? 0) + 1);
    }
  }
  const encoder = new TextEncoder();
  const words: Int32Array[] = [];
  const counts: number[] = [];
  for (const [w, c] of wordCounts) {
    words.push(Int32Array.from(encoder.encode(w))); // base ids are the bytes
    counts.push(c);
  }

  // 2. Pair counts and, per pair, the words that (may) contain it. Word lists are append-only:
  //    a word whose pair was merged away stays listed and is skipped when visited.
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, number[]>();
  const addWord = (key: number, w: number): void => {
    const list = pairWords.get(key);
    if (list === undefined) pairWords.set(key, [w]);
    else if (list[list.length - 1] !== w) list.push(w);
  };
  for (let w = 0; w < words.length; w++) {
    const s = words[w];
    for (let i = 0; i + 1 < s.length; i++) {
      const key = s[i] * PAIR + s[i + 1];
      pairCount.set(key, (pairCount.get(key) ?? 0) + counts[w]);
      addWord(key, w);
    }
  }
  // Max-heap on (count, -key), lazily updated: counts only fall, except for pairs containing the
  // newest token, which are (re)pushed with their final counts after each merge. A popped entry
  // whose count is out of date is pushed back with the current count.
  const heap = new PairHeap();
  for (const [key, c] of pairCount) heap.push(c, key);

  const vocab: string[] = BYTE_TO_UNICODE.slice();
  const tokenToId = new Map<string, number>(vocab.map((t, i) => [t, i]));
  const merges: [string, string][] = [];
  const target = vocabSize - specials.length;
  const touched = new Set<number>();

  while (vocab.length < target && heap.size > 0) {
    const { count, key } = heap.pop();
    const current = pairCount.get(key) ?? 0;
    if (current !== count) {
      if (current > 0) heap.push(current, key);
      continue;
    }
    const a = Math.floor(key / PAIR);
    const b = key - a * PAIR;
    const merged = vocab[a] + vocab[b];
    // Two different merges can spell the same string ("ab"+"c", "a"+"bc"): they share one id,
    // as in the Hugging Face trainer.
    let z = tokenToId.get(merged);
    if (z === undefined) {
      z = vocab.length;
      vocab.push(merged);
      tokenToId.set(merged, z);
    }
    merges.push([vocab[a], vocab[b]]);

    touched.clear();
    for (const w of pairWords.get(key)!) {
      const s = words[w];
      let hit = false;
      for (let i = 0; i + 1 < s.length; i++) {
        if (s[i] === a && s[i + 1] === b) {
          hit = true;
          break;
        }
      }
      if (!hit) continue;
      const t = new Int32Array(s.length);
      let n = 0;
      for (let i = 0; i < s.length; ) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          t[n++] = z;
          i += 2;
        } else {
          t[n++] = s[i++];
        }
      }
      const c = counts[w];
      for (let i = 0; i + 1 < s.length; i++) {
        const k = s[i] * PAIR + s[i + 1];
        const left = pairCount.get(k)! - c;
        if (left === 0) pairCount.delete(k);
        else pairCount.set(k, left);
      }
      for (let i = 0; i + 1 < n; i++) {
        const k = t[i] * PAIR + t[i + 1];
        pairCount.set(k, (pairCount.get(k) ?? 0) + c);
        if (t[i] === z || t[i + 1] === z) {
          touched.add(k);
          addWord(k, w);
        }
      }
      words[w] = t.subarray(0, n);
    }
    pairWords.delete(key);
    for (const k of touched) {
      const c = pairCount.get(k);
      if (c !== undefined) heap.push(c, k);
    }
  }

  const addedTokens: AddedToken[] = [];
  for (const content of specials) {
    if (tokenToId.has(content)) throw new ArgumentError('opts.specialTokens', 'strings that are not also learned tokens', content);
    addedTokens.push({ id: vocab.length, content, special: true });
    vocab.push(content);
  }
  return new BpeTokenizer({ vocab, merges, addedTokens });
}

// Each text keeps the same fraction of its bytes, cut at a character boundary, so that a byte
// budget samples every document (SOTU's first 3 MB would be only its first eighty years).
function sampleTexts(texts: readonly string[], maxBytes: number): string[] {
  const sizes = texts.map((t) => Buffer.byteLength(t, 'utf8'));
  const total = sizes.reduce((x, y) => x + y, 0);
  if (total <= maxBytes) return texts.slice();
  const encoder = new TextEncoder();
  return texts.map((t, i) => {
    const keep = Math.floor((sizes[i] * maxBytes) / total);
    // encodeInto writes only whole characters: `read` is the UTF-16 length that fits.
    const { read } = encoder.encodeInto(t, new Uint8Array(keep));
    return t.slice(0, read);
  });
}

/**
 * Parses a Hugging Face tokenizer.json object into BpeOptions, refusing (CheckpointError) what we
 * cannot reproduce. Consistency of vocab and merges is checked by the BpeTokenizer constructor.
 */
export function parseTokenizerJSON(obj: unknown, source: string): Required<BpeOptions> {
  function fail(detail: string): never {
    throw new CheckpointError(source, detail);
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) fail('not a tokenizer.json object');
  const root = obj as Record<string, unknown>;
  const model = root.model as Record<string, unknown> | null | undefined;
  if (model === null || typeof model !== 'object') return fail('missing "model"');
  if (model.type !== undefined && model.type !== 'BPE') fail(`model type ${JSON.stringify(model.type)} is not supported (only BPE)`);
  if (model.vocab === null || typeof model.vocab !== 'object' || Array.isArray(model.vocab)) fail('model.vocab is not an object of token -> id');
  if (!Array.isArray(model.merges)) fail('model.merges is not an array');
  if (model.dropout !== undefined && model.dropout !== null && model.dropout !== 0) fail('BPE dropout is not supported');
  if (model.byte_fallback === true) fail('byte_fallback is not supported');
  if (typeof model.continuing_subword_prefix === 'string' && model.continuing_subword_prefix !== '') fail('continuing_subword_prefix is not supported');
  if (typeof model.end_of_word_suffix === 'string' && model.end_of_word_suffix !== '') fail('end_of_word_suffix is not supported');

  const entries = Object.entries(model.vocab as Record<string, unknown>);
  let size = 0;
  for (const [tok, id] of entries) {
    if (!Number.isSafeInteger(id) || (id as number) < 0 || (id as number) >= PAIR) fail(`model.vocab['${tok}'] = ${JSON.stringify(id)} is not a valid id`);
    size = Math.max(size, (id as number) + 1);
  }
  const vocab: (string | undefined)[] = Array.from({ length: size }, () => undefined);
  for (const [tok, id] of entries) {
    if (vocab[id as number] !== undefined) fail(`model.vocab gives id ${id} to both '${vocab[id as number]}' and '${tok}'`);
    vocab[id as number] = tok;
  }
  const merges: [string, string][] = (model.merges as unknown[]).map((m, r) => {
    if (typeof m === 'string') {
      const parts = m.split(' ');
      if (parts.length !== 2) fail(`model.merges[${r}] = ${JSON.stringify(m)} is not 'left right'`);
      return [parts[0], parts[1]];
    }
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return [m[0], m[1]];
    return fail(`model.merges[${r}] = ${JSON.stringify(m)} is neither 'left right' nor ["left", "right"]`);
  });

  const pre = root.pre_tokenizer as Record<string, unknown> | null | undefined;
  if (pre === null || typeof pre !== 'object' || pre.type !== 'ByteLevel') {
    fail(`pre_tokenizer ${JSON.stringify(pre?.type ?? pre ?? null)} is not supported (only ByteLevel)`);
  }
  const dec = root.decoder as Record<string, unknown> | null | undefined;
  if (dec !== null && dec !== undefined && dec.type !== 'ByteLevel') fail(`decoder ${JSON.stringify(dec.type)} is not supported (only ByteLevel)`);

  let normalizer: UnicodeNormalizer | null = null;
  const norm = root.normalizer as Record<string, unknown> | null | undefined;
  if (norm !== null && norm !== undefined) {
    const t = norm.type;
    if (t === 'NFC' || t === 'NFD' || t === 'NFKC' || t === 'NFKD') normalizer = t;
    else fail(`normalizer ${JSON.stringify(t)} is not supported (only none, NFC, NFD, NFKC, NFKD)`);
  }

  const added: AddedToken[] = [];
  const rawAdded = root.added_tokens ?? [];
  if (!Array.isArray(rawAdded)) fail('added_tokens is not an array');
  (rawAdded as unknown[]).forEach((t, i) => {
    const o = t as Record<string, unknown>;
    if (o === null || typeof o !== 'object' || !Number.isSafeInteger(o.id) || (o.id as number) < 0 || typeof o.content !== 'string' || o.content === '') {
      fail(`added_tokens[${i}] needs an integer id and non-empty content`);
    }
    added.push({ id: o.id as number, content: o.content as string, special: o.special === true, lstrip: o.lstrip === true, rstrip: o.rstrip === true });
  });

  const opts: Required<BpeOptions> = {
    vocab, merges, addedTokens: added,
    addPrefixSpace: pre!.add_prefix_space === true,
    useRegex: pre!.use_regex !== false,
    normalizer,
    ignoreMerges: model.ignore_merges === true,
    unkToken: typeof model.unk_token === 'string' ? model.unk_token : null,
  };
  return opts;
}

/** The tokenizer.json object (Hugging Face `tokenizers` format, as GPT-2's file lays it out). */
export function hfTokenizerJSON(
  vocab: readonly (string | undefined)[],
  merges: readonly [string, string][],
  addedTokens: readonly AddedToken[],
  o: { addPrefixSpace: boolean; useRegex: boolean; normalizer: UnicodeNormalizer | null; ignoreMerges: boolean; unkToken: string | null },
): object {
  const vocabObj: Record<string, number> = {};
  vocab.forEach((tok, id) => {
    if (tok !== undefined) vocabObj[tok] = id;
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens.map((t) => ({
      id: t.id, content: t.content, single_word: false, lstrip: t.lstrip ?? false, rstrip: t.rstrip ?? false,
      normalized: false, special: t.special,
    })),
    normalizer: o.normalizer === null ? null : { type: o.normalizer },
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: o.addPrefixSpace, trim_offsets: true, use_regex: o.useRegex },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: o.unkToken, continuing_subword_prefix: '', end_of_word_suffix: '',
      fuse_unk: false, byte_fallback: false,
      // Written only when set: tokenizers versions before 0.19 do not know the field.
      ...(o.ignoreMerges ? { ignore_merges: true } : {}),
      vocab: vocabObj,
      // 'left right' strings: readable by every tokenizers version (byte-level tokens hold no spaces).
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// Binary min-heap of non-negative integers (packed (rank, position) keys).
class NumberHeap {
  private a: number[] = [];
  get size(): number {
    return this.a.length;
  }
  push(x: number): void {
    const a = this.a;
    let i = a.length;
    a.push(x);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p] <= x) break;
      a[i] = a[p];
      i = p;
    }
    a[i] = x;
  }
  pop(): number {
    const a = this.a;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      let i = 0;
      const n = a.length;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && a[c + 1] < a[c]) c++;
        if (a[c] >= last) break;
        a[i] = a[c];
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}

// Binary max-heap of (count, key), larger count first, then smaller key.
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];
  get size(): number {
    return this.counts.length;
  }
  private above(c1: number, k1: number, c2: number, k2: number): boolean {
    return c1 > c2 || (c1 === c2 && k1 < k2);
  }
  push(count: number, key: number): void {
    const C = this.counts;
    const K = this.keys;
    let i = C.length;
    C.push(count);
    K.push(key);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(count, key, C[p], K[p])) break;
      C[i] = C[p];
      K[i] = K[p];
      i = p;
    }
    C[i] = count;
    K[i] = key;
  }
  pop(): { count: number; key: number } {
    const C = this.counts;
    const K = this.keys;
    const top = { count: C[0], key: K[0] };
    const lc = C.pop()!;
    const lk = K.pop()!;
    const n = C.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && this.above(C[c + 1], K[c + 1], C[c], K[c])) c++;
        if (!this.above(C[c], K[c], lc, lk)) break;
        C[i] = C[c];
        K[i] = K[c];
        i = c;
      }
      C[i] = lc;
      K[i] = lk;
    }
    return top;
  }
}
