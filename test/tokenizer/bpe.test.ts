// Tests for src/tokenizer (bpe.ts, byte.ts, index.ts). Oracles: @huggingface/tokenizers (an
// independent implementation) encoding our tokenizer.json and a hand-built GPT-2-layout file;
// a naive BPE trainer written plainly below; GPT-2's published pre-tokenization and byte table;
// UTF-8 by definition.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import {
  trainBpe, tokenizerFromJSON, loadTokenizer, saveTokenizer, ByteTokenizer, BpeTokenizer, BYTE_TO_UNICODE,
  GPT2_SPLIT_PATTERN,
} from '../../src/tokenizer/index.js';
import type { Tokenizer } from '../../src/tokenizer/index.js';
import { loadCorpus } from '../../src/data/corpus.js';
import { ArgumentError, CheckpointError } from '../../src/core/errors.js';

const UNICODE_SAMPLES = [
  'héllo wörld — naïve café',
  'Emoji: 😀👍🏽 👨‍👩‍👧‍👦 flags 🇺🇸🇫🇷!',
  '中文字符和日本語のテキスト, 한국어',
  '\uFEFFleading byte-order mark',
  'tabs\tand\nnew\r\nlines  \n\n   trailing   ',
  "I'm sure they'll say it's 'quoted' and we've \"double\" quotes.",
  'numbers 1234567890 3.14159 1,000,000 ٣٤٥',
  '', ' ', '  x', 'a',
  // Words longer than the scan limit (48 bytes), which take the heap-based merge loop.
  '=' .repeat(120) + ' ' + 'Z'.repeat(90) + '123'.repeat(40) + ' ' + 'the'.repeat(30) + ' ' + 'inationsment'.repeat(12) + ' ' + 'ee'.repeat(41),
  'Ωμέγα ∑∫∂ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u0000\u0001\u007f\u00ad',
];

let sotu: string[] = [];
let brown: string[] = [];
let tok: BpeTokenizer;
let dir = '';

before(async () => {
  const s = await loadCorpus('sotu');
  // A few documents from across the two centuries, not the whole corpus: the tests stay fast.
  sotu = [s[0], s[60], s[120], s[180], s[232]].map((d) => d.text);
  const b = await loadCorpus('brown');
  brown = [b[0], b[150], b[300], b[499]].map((d) => d.text);
  tok = trainBpe([...sotu, ...brown], 700, { specialTokens: ['<|endoftext|>'] });
  dir = mkdtempSync(join(tmpdir(), 'sparsek-tok-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function hfIds(json: object, text: string): number[] {
  const hf = new HfTokenizer(json, {});
  return hf.encode(text, { add_special_tokens: false }).ids;
}

describe('byte-level building blocks (GPT-2 definitions)', () => {
  test("bytes -> unicode table matches GPT-2's", () => {
    assert.equal(new Set(BYTE_TO_UNICODE).size, 256);
    assert.equal(BYTE_TO_UNICODE[65], 'A');
    assert.equal(BYTE_TO_UNICODE[0x21], '!');
    assert.equal(BYTE_TO_UNICODE[0xff], 'ÿ');
    assert.equal(BYTE_TO_UNICODE[32], '\u0120'); // 'Ġ', the famous space
    assert.equal(BYTE_TO_UNICODE[10], '\u010a'); // 'Ċ', newline
    assert.equal(BYTE_TO_UNICODE[0], '\u0100');
    assert.equal(BYTE_TO_UNICODE[127], '\u0121');
    assert.equal(BYTE_TO_UNICODE[0xad], '\u0143'); // the last moved byte
  });

  test('pre-tokenization splits like GPT-2', () => {
    const split = (s: string) => s.match(GPT2_SPLIT_PATTERN) ?? [];
    assert.deepEqual(split("I'm here, aren't you?"), ['I', "'m", ' here', ',', ' aren', "'t", ' you', '?']);
    // \s+(?!\S) leaves the last whitespace character to the next word; with no space there to
    // attach, that character stands alone.
    assert.deepEqual(split('a  b\n\nc'), ['a', ' ', ' b', '\n', '\n', 'c']);
    assert.deepEqual(split('a\n\n  b'), ['a', '\n\n ', ' b']);
    assert.deepEqual(split('x2024 is 99%'), ['x', '2024', ' is', ' 99', '%']);
  });
});

describe('ByteTokenizer', () => {
  const bt = new ByteTokenizer();
  test('ids are the UTF-8 bytes', () => {
    assert.equal(bt.vocabSize, 256);
    assert.deepEqual(bt.encode('é!'), [0xc3, 0xa9, 0x21]);
    assert.deepEqual(bt.encode('😀'), [0xf0, 0x9f, 0x98, 0x80]);
  });
  test('round trip, and replacement characters for invalid UTF-8', () => {
    for (const s of [...UNICODE_SAMPLES, sotu[0].slice(0, 3000)]) assert.equal(bt.decode(bt.encode(s)), s);
    assert.equal(bt.decode([0xff, 0x41]), '\uFFFDA');
    assert.equal(bt.decode([0x80]), '\uFFFD');
    assert.equal(bt.decode([0x41, 0xf0, 0x9f, 0x98]), 'A\uFFFD'); // an emoji cut short
    assert.equal(bt.decode(new Uint8Array([0xe2, 0x82, 0xac])), '€');
  });
  test('bad ids are refused', () => {
    assert.throws(() => bt.decode([256]), (e: unknown) => e instanceof ArgumentError && /ids\[0\]/.test(e.message));
    assert.throws(() => bt.decode([1.5]), ArgumentError);
    assert.throws(() => bt.encode(5 as unknown as string), ArgumentError);
  });
  test('its tokenizer.json gives the same ids in Hugging Face tokenizers, and loads back as bytes', () => {
    const json = bt.toJSON();
    for (const s of UNICODE_SAMPLES.filter((x) => x.length > 0)) assert.deepEqual(hfIds(json, s), bt.encode(s), s);
    const back = tokenizerFromJSON(JSON.parse(JSON.stringify(json)));
    assert.ok(back instanceof ByteTokenizer);
  });
});

describe('trainBpe', () => {
  test('a hand-worked example: most frequent pair first, ties to the smaller ids, early stop', () => {
    // Words: 'ab' x1, ' ab' x2, ' cd' x1 (space is byte 32, drawn 'Ġ').
    // Pairs: a b = 3, Ġ a = 2, Ġ c = 1, c d = 1 -> merge 'a b'; then 'Ġ ab' = 2; then the tie
    // 'Ġ c' (ids 32, 99) vs 'c d' (99, 100) goes to the smaller ids; then 'Ġc d'; then no pairs.
    const t = trainBpe(['ab ab ab cd'], 300);
    const json = t.toJSON() as { model: { merges: string[]; vocab: Record<string, number> } };
    assert.deepEqual(json.model.merges, ['a b', 'Ġ ab', 'Ġ c', 'Ġc d']);
    assert.equal(t.vocabSize, 260);
    assert.equal(json.model.vocab['Ġab'], 257);
    assert.deepEqual(t.encode('ab ab cd'), [256, 257, 259]);
  });

  test('equals a naive trainer that recounts every pair at every step', () => {
    const texts = [sotu[1].slice(0, 6000), brown[1].slice(0, 6000), 'aaaa aaaaa aaa abab ababab 😀😀😀 ééé'];
    for (const V of [256 + 1, 256 + 57, 256 + 300]) {
      const ours = trainBpe(texts, V).toJSON() as { model: { merges: string[]; vocab: Record<string, number> } };
      const ref = naiveTrain(texts, V);
      assert.deepEqual(ours.model.merges, ref.merges, `merges for V = ${V}`);
      assert.deepEqual(ours.model.vocab, ref.vocab, `vocab for V = ${V}`);
    }
  });

  test('deterministic, and independent of the order of the texts', () => {
    const texts = [sotu[2].slice(0, 20000), brown[2].slice(0, 20000), sotu[3].slice(0, 20000)];
    const a = JSON.stringify(trainBpe(texts, 600).toJSON());
    const b = JSON.stringify(trainBpe(texts, 600).toJSON());
    const c = JSON.stringify(trainBpe([texts[2], texts[0], texts[1]], 600).toJSON());
    assert.equal(a, b);
    assert.equal(a, c);
  });

  test('vocabSize counts bytes, merges and special tokens', () => {
    assert.equal(tok.vocabSize, 700);
    assert.equal(tok.tokenId('<|endoftext|>'), 699);
    assert.deepEqual(tok.encode('a<|endoftext|>b'), [...tok.encode('a'), 699, ...tok.encode('b')]);
    assert.equal(tok.decode([699]), '<|endoftext|>');
    assert.throws(() => trainBpe(['x'], 255), ArgumentError);
    assert.throws(() => trainBpe(['x'], 256, { specialTokens: ['<s>'] }), ArgumentError);
    assert.throws(() => trainBpe('text' as unknown as string[], 300), ArgumentError);
  });

  test('maxBytes samples every text proportionally', () => {
    const long = 'alpha beta gamma delta '.repeat(2000); // 46 kB
    const other = 'zzyzx qwop '.repeat(2000); // 22 kB
    const t = trainBpe([long, other], 400, { maxBytes: 6000 });
    // Both texts contributed: each one's words are single tokens after training.
    assert.equal(t.encode(' alpha').length, 1);
    assert.equal(t.encode(' qwop').length, 1);
  });

  test('3 MB of SOTU to vocab 2048 takes a few seconds', async (t) => {
    const docs = await loadCorpus('sotu');
    const start = performance.now();
    const big = trainBpe(docs.map((d) => d.text), 2048, { maxBytes: 3_000_000 });
    const ms = performance.now() - start;
    t.diagnostic(`trainBpe: 3 MB of SOTU -> vocab 2048 in ${ms.toFixed(0)} ms`);
    assert.equal(big.vocabSize, 2048);
    assert.ok(ms < 15_000, `took ${ms} ms`);
    const sample = docs[100].text.slice(0, 5000);
    assert.equal(big.decode(big.encode(sample)), sample);
    assert.ok(big.encode(sample).length < sample.length / 3, 'compresses English text');
  });
});

describe('BpeTokenizer encode / decode', () => {
  test('decode(encode(x)) == x on SOTU, Brown and unicode text', () => {
    for (const s of [...sotu.map((x) => x.slice(0, 20000)), ...brown.map((x) => x.slice(0, 20000)), ...UNICODE_SAMPLES]) {
      assert.equal(tok.decode(tok.encode(s)), s);
    }
  });

  test('our tokenizer.json encodes to exactly the same ids in Hugging Face tokenizers', () => {
    const json = JSON.parse(JSON.stringify(tok.toJSON()));
    const hf = new HfTokenizer(json, {});
    const texts = [...sotu.map((x) => x.slice(5000, 15000)), ...brown.map((x) => x.slice(0, 10000)), ...UNICODE_SAMPLES.filter((x) => x.length > 0), 'x<|endoftext|>y <|endoftext|> z'];
    for (const s of texts) {
      const ids = tok.encode(s);
      assert.deepEqual(hf.encode(s, { add_special_tokens: false }).ids, ids, JSON.stringify(s.slice(0, 60)));
      if (ids.length > 0) assert.equal(hf.decode(ids, { clean_up_tokenization_spaces: false }), s);
    }
  });

  test('save and load tokenizer.json round trip', async () => {
    const path = join(dir, 'tokenizer.json');
    await saveTokenizer(path, tok);
    const back = await loadTokenizer(path);
    assert.equal(back.vocabSize, tok.vocabSize);
    for (const s of [sotu[4].slice(0, 5000), ...UNICODE_SAMPLES]) assert.deepEqual(back.encode(s), tok.encode(s));
    await assert.rejects(loadTokenizer(join(dir, 'missing.json')), CheckpointError);
  });

  test('bad ids are refused; cut multi-byte characters decode to U+FFFD', () => {
    assert.throws(() => tok.decode([700]), (e: unknown) => e instanceof ArgumentError && /\[0, 700\)/.test(e.message));
    assert.throws(() => tok.decode([-1]), ArgumentError);
    const ids = tok.encode('😀');
    const byteIds = [...new TextEncoder().encode('😀')]; // with byte-order ids, bytes are ids
    assert.equal(tok.decode(byteIds.slice(0, 2)), '\uFFFD');
    assert.equal(tok.decode(ids), '😀');
  });
});

describe('loading a GPT-2 style tokenizer.json as Hugging Face writes it', () => {
  // GPT-2's layout: the 256 byte characters in the order of the bytes->unicode table (so ids are
  // NOT bytes), merges as "left right" strings, <|endoftext|> both in vocab and in added_tokens,
  // a ByteLevel post-processor and a truncation setting.
  function gpt2Style(mergeFormat: 'strings' | 'pairs'): object {
    const order: number[] = [];
    for (let b = 0x21; b <= 0x7e; b++) order.push(b);
    for (let b = 0xa1; b <= 0xac; b++) order.push(b);
    for (let b = 0xae; b <= 0xff; b++) order.push(b);
    for (let b = 0; b < 256; b++) if (!order.includes(b)) order.push(b);
    const vocab: Record<string, number> = {};
    order.forEach((b, i) => (vocab[BYTE_TO_UNICODE[b]] = i));
    const merges = [['Ġ', 't'], ['h', 'e'], ['Ġt', 'he'], ['Ġ', 'w'], ['o', 'r'], ['Ġw', 'or'], ['l', 'd'], ['Ġwor', 'ld'],
      ['H', 'e'], ['l', 'l'], ['He', 'll'], ['Hell', 'o'], ['Ġ', 'a'], ['n', 'd'], ['Ġa', 'nd'], ['Ġ', 'Ġ'], ['ĠĠ', 'ĠĠ'], ['Ã', '©']];
    for (const [a, b] of merges) if (vocab[a + b] === undefined) vocab[a + b] = Object.keys(vocab).length;
    const eot = Object.keys(vocab).length;
    vocab['<|endoftext|>'] = eot;
    return {
      version: '1.0',
      truncation: { direction: 'Right', max_length: 1024, strategy: 'LongestFirst', stride: 0 },
      padding: null,
      added_tokens: [{ id: eot, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false,
        vocab, merges: mergeFormat === 'strings' ? merges.map(([a, b]) => `${a} ${b}`) : merges,
      },
    };
  }

  for (const format of ['strings', 'pairs'] as const) {
    test(`merges as ${format}: same ids as Hugging Face tokenizers, and the hand-expected ones`, () => {
      const json = gpt2Style(format);
      const t: Tokenizer = tokenizerFromJSON(json);
      const vocab = (json as { model: { vocab: Record<string, number> } }).model.vocab;
      assert.deepEqual(t.encode('Hello world'), [vocab['Hello'], vocab['Ġworld']]);
      assert.deepEqual(t.encode('the and'), [vocab['t'], vocab['he'], vocab['Ġand']]); // no 'the' without 'Ġ'
      assert.deepEqual(t.encode('Hi'), [vocab['H'], vocab['i']]);
      assert.deepEqual(t.encode('café'), [vocab['c'], vocab['a'], vocab['f'], vocab['Ã©']]);
      const texts = ['Hello world, the world and the other world!', 'the     and\t\tthe', 'x<|endoftext|>Hello', 'café ☕ 😀', sotu[0].slice(0, 4000)];
      for (const s of texts) {
        assert.deepEqual(t.encode(s), hfIds(json, s), s.slice(0, 40));
        assert.equal(t.decode(t.encode(s)), s);
      }
      assert.equal(t.vocabSize, vocab['<|endoftext|>'] + 1);
    });
  }

  test('unsupported or inconsistent files raise CheckpointError naming the problem', () => {
    const base = () => JSON.parse(JSON.stringify(gpt2Style('strings')));
    const metaspace = base();
    metaspace.pre_tokenizer = { type: 'Metaspace', replacement: '▁' };
    assert.throws(() => tokenizerFromJSON(metaspace, 'x/tokenizer.json'), (e: unknown) => e instanceof CheckpointError && /x\/tokenizer\.json/.test(e.message) && /Metaspace/.test(e.message));
    const wordpiece = base();
    wordpiece.model.type = 'WordPiece';
    assert.throws(() => tokenizerFromJSON(wordpiece), /WordPiece/);
    const badMerge = base();
    badMerge.model.merges.push('Ġthe zzz');
    assert.throws(() => tokenizerFromJSON(badMerge), (e: unknown) => e instanceof CheckpointError && /merges\[\d+\]/.test(e.message));
    const dupId = base();
    dupId.model.vocab['zz-dup'] = 0;
    assert.throws(() => tokenizerFromJSON(dupId), /id 0/);
    assert.throws(() => tokenizerFromJSON(null), CheckpointError);
    assert.throws(() => tokenizerFromJSON({ model: { type: 'BPE', vocab: {}, merges: [] }, pre_tokenizer: null }), /pre_tokenizer/);
  });
});

/**
 * The textbook BPE trainer: count pairs over all words from scratch at every step, take the most
 * frequent (ties: smaller left id, then smaller right id), merge it everywhere.
 */
function naiveTrain(texts: string[], vocabSize: number): { merges: string[]; vocab: Record<string, number> } {
  const pattern = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
  const counts = new Map<string, number>();
  for (const t of texts) for (const w of t.match(pattern) ?? []) counts.set(w, (counts.get(w) ?? 0) + 1);
  const vocab: string[] = [];
  for (let b = 0; b < 256; b++) vocab.push(BYTE_TO_UNICODE[b]);
  const words = [...counts].map(([w, c]) => ({ ids: [...new TextEncoder().encode(w)], c }));
  const merges: string[] = [];
  while (vocab.length < vocabSize) {
    const pc = new Map<string, number>();
    for (const { ids, c } of words) for (let i = 0; i + 1 < ids.length; i++) pc.set(`${ids[i]},${ids[i + 1]}`, (pc.get(`${ids[i]},${ids[i + 1]}`) ?? 0) + c);
    let best: [number, number] | null = null;
    let bestCount = 0;
    for (const [k, c] of pc) {
      const [a, b] = k.split(',').map(Number);
      if (c > bestCount || (c === bestCount && best !== null && (a < best[0] || (a === best[0] && b < best[1])))) {
        best = [a, b];
        bestCount = c;
      }
    }
    if (best === null) break;
    const [a, b] = best;
    const s = vocab[a] + vocab[b];
    let z = vocab.indexOf(s);
    if (z < 0) {
      z = vocab.length;
      vocab.push(s);
    }
    merges.push(`${vocab[a]} ${vocab[b]}`);
    for (const w of words) {
      const out: number[] = [];
      for (let i = 0; i < w.ids.length; i++) {
        if (i + 1 < w.ids.length && w.ids[i] === a && w.ids[i + 1] === b) {
          out.push(z);
          i++;
        } else out.push(w.ids[i]);
      }
      w.ids = out;
    }
  }
  const obj: Record<string, number> = {};
  vocab.forEach((t, i) => (obj[t] = i));
  return { merges, vocab: obj };
}
