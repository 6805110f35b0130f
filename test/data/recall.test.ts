// Multi-query associative recall (src/data/recall.ts): every query asks a key of the fact list and
// carries that fact's value; positions and distances point at the right characters; documents are
// reproducible from the seed; scoring counts argmax hits split by distance.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyDocuments, recallDocuments, scoreRecall, scoreRecallByDistance } from '../../src/data/recall.js';
import { FILLER } from '../../src/data/passkey.js';
import { ByteTokenizer } from '../../src/tokenizer/index.js';

describe('recall documents', () => {
  test('queries repeat the facts\' key=value pairs, at the offsets and distances given', () => {
    const docs = recallDocuments(20, { pairs: 40, seed: 2 });
    for (const d of docs) {
      const [factPart, recallPart] = d.text.split('Recall: ');
      const facts = new Map([...factPart.matchAll(/([a-z]{3})=(\d\d)/g)].map((m) => [m[1], m[2]]));
      assert.equal(facts.size, 40, 'distinct keys');
      const asked = [...recallPart.matchAll(/([a-z]{3})=(\d\d)/g)];
      assert.equal(asked.length, 40);
      assert.deepEqual(new Set(asked.map((m) => m[1])), new Set(facts.keys()), 'every key asked once');
      for (const m of asked) assert.equal(m[2], facts.get(m[1]), `value of ${m[1]}`);
      for (const q of d.queries) {
        const key = d.text.slice(q.at - 4, q.at - 1);
        assert.equal(d.text[q.at - 1], '=');
        assert.equal(d.text.slice(q.at, q.at + 2), facts.get(key));
        assert.equal(d.text.slice(q.at - q.distance - 4, q.at - q.distance + 2), `${key}=${facts.get(key)}`, 'distance points at the fact');
      }
    }
    assert.deepEqual(recallDocuments(3, { pairs: 40, seed: 2 }), docs.slice(0, 3), 'reproducible from the seed');
    assert.throws(() => recallDocuments(1, { pairs: 0, seed: 1 }), /pairs/);
  });

  test('one-character keys and a filler gap: every fact is at least the gap back, and keys stay distinct', () => {
    const gap = 600;
    const docs = recallDocuments(10, { pairs: 48, seed: 3, keyLength: 1, gap });
    for (const d of docs) {
      const [factPart, recallPart] = d.text.split('Recall: ');
      const facts = new Map([...factPart.matchAll(/(?:^Facts: |, )([a-zA-Z])=(\d\d)/g)].map((m) => [m[1], m[2]]));
      assert.equal(facts.size, 48, 'distinct one-letter keys');
      assert.ok(factPart.includes('The grass is green.') || factPart.includes('The sky is blue.'), 'the gap is filler');
      for (const q of d.queries) {
        const key = d.text[q.at - 2];
        assert.equal(d.text[q.at - 1], '=');
        assert.equal(d.text.slice(q.at, q.at + 2), facts.get(key));
        assert.equal(d.text.slice(q.at - q.distance - 2, q.at - q.distance + 2), `${key}=${facts.get(key)}`, 'distance points at the fact');
        assert.ok(q.distance > gap, `distance ${q.distance} beyond the gap`);
      }
      assert.equal(recallPart.split('. ').length, 48);
    }
    assert.throws(() => recallDocuments(1, { pairs: 53, seed: 1, keyLength: 1 }), /pairs.*\[1, 52\]/);
    assert.throws(() => recallDocuments(1, { pairs: 5, seed: 1, gap: -1 }), /gap/);
    assert.throws(() => recallDocuments(1, { pairs: 5, seed: 1, gap: [10, 5] }), /gap/);
    assert.throws(() => recallDocuments(1, { pairs: 5, seed: 1, keyLength: 0 }), /keyLength/);
  });

  test('a gap range draws each document\'s gap within it: both near and far facts occur', () => {
    const docs = recallDocuments(40, { pairs: 16, seed: 4, keyLength: 1, gap: [0, 1000] });
    const fillers = docs.map((d) => d.text.split('Recall: ')[0].replace(/^Facts: .*?\. /, '').length);
    assert.ok(Math.min(...fillers) < 300 && Math.max(...fillers) > 700, `gaps spread over the range: ${Math.min(...fillers)}..${Math.max(...fillers)}`);
    for (const n of fillers) assert.ok(n <= 1001, `gap ${n} within the range (plus its separator)`);
    const distances = docs.flatMap((d) => d.queries.map((q) => q.distance));
    assert.ok(distances.some((x) => x <= 200) && distances.some((x) => x > 900), 'near and far facts');
  });

  test('compact style: one-digit values right after the key, both in facts and queries', () => {
    for (const d of recallDocuments(10, { pairs: 20, seed: 6, keyLength: 1, gap: [0, 300], style: 'compact' })) {
      assert.equal(d.digits, 1);
      const [factPart, recallPart] = d.text.split('Recall: ');
      const facts = new Map([...factPart.matchAll(/(?:^Facts: | )([a-zA-Z])(\d)(?= |\. )/g)].map((m) => [m[1], m[2]]));
      assert.equal(facts.size, 20);
      assert.match(recallPart, /^([a-zA-Z]\d )*[a-zA-Z]\d$/, 'queries are key-digit pairs');
      for (const q of d.queries) {
        const key = d.text[q.at - 1];
        assert.equal(d.text[q.at], facts.get(key), `value of ${key}`);
        assert.equal(d.text.slice(q.at - q.distance - 1, q.at - q.distance + 1), `${key}${facts.get(key)}`, 'distance points at the fact');
      }
    }
    assert.throws(() => recallDocuments(1, { pairs: 5, seed: 1, style: 'json' as 'text' }), /style/);
  });

  test('copy documents: the repeat equals the original, queries point at its letters after the first', () => {
    const docs = copyDocuments(20, { length: 12, seed: 8, gap: [0, 400] });
    const gaps = new Set<number>();
    for (const d of docs) {
      const m = /^Copy: ([A-Z]{12})\. (.*)Again: ([A-Z]{12})\.$/s.exec(d.text);
      assert.ok(m, d.text);
      assert.ok(![...m[1]].some((ch) => FILLER.includes(ch)), 'no letter of the string occurs in the filler');
      assert.equal(m[3], m[1], 'the repeat');
      gaps.add(m[2].length);
      assert.equal(d.digits, 1);
      assert.equal(d.queries.length, 11);
      for (const [i, q] of d.queries.entries()) {
        assert.equal(d.text[q.at], m[1][i + 1], `query ${i}: letter ${i + 1} of the repeat`);
        assert.equal(d.text[q.at - q.distance], d.text[q.at], 'distance points at the same letter of the original');
      }
    }
    assert.ok(gaps.size > 5 && Math.max(...gaps) > 300, 'gaps drawn over the range');
    assert.deepEqual(copyDocuments(2, { length: 12, seed: 8, gap: [0, 400] }), docs.slice(0, 2), 'reproducible from the seed');
    assert.throws(() => copyDocuments(1, { length: 1, seed: 1 }), /length/);
    assert.throws(() => copyDocuments(1, { length: 5, seed: 1, gap: [3, 2] }), /gap/);
  });

  test('copy documents of a length drawn per document: the distance varies without a gap', () => {
    const docs = copyDocuments(40, { length: [4, 30], seed: 3 });
    const lengths = new Set<number>();
    const distances = new Set<number>();
    for (const d of docs) {
      const m = /^Copy: ([A-Z]+)\. Again: ([A-Z]+)\.$/.exec(d.text);
      assert.ok(m, d.text);
      assert.equal(m[2], m[1], 'the repeat');
      assert.ok(m[1].length >= 4 && m[1].length <= 30, `length ${m[1].length} in [4, 30]`);
      lengths.add(m[1].length);
      assert.equal(d.queries.length, m[1].length - 1);
      for (const q of d.queries) assert.equal(d.text[q.at - q.distance], d.text[q.at], 'distance points at the same letter');
      distances.add(d.queries[0].distance);
    }
    assert.ok(lengths.size > 10 && distances.size === lengths.size, 'lengths, and with them distances, drawn over the range');
    assert.deepEqual(copyDocuments(3, { length: [4, 30], seed: 3 }), docs.slice(0, 3), 'reproducible from the seed');
    assert.equal(copyDocuments(1, { length: [7, 7], seed: 2 })[0].text, copyDocuments(1, { length: 7, seed: 2 })[0].text, '[n, n] is n');
    assert.throws(() => copyDocuments(1, { length: [1, 5], seed: 1 }), /length/);
    assert.throws(() => copyDocuments(1, { length: [6, 5], seed: 1 }), /length/);
    assert.throws(() => copyDocuments(1, { length: [2, Number.NaN], seed: 1 }), /length/);
  });

  test('copy documents with repeats: each repeat after its own gap, distances to the previous occurrence', () => {
    const docs = copyDocuments(20, { length: [3, 9], seed: 4, gap: [0, 50], repeats: 3 });
    for (const d of docs) {
      const m = /^Copy: ([A-Z]+)\. (.*)Again: ([A-Z]+)\. (.*)Again: ([A-Z]+)\. (.*)Again: ([A-Z]+)\.$/s.exec(d.text);
      assert.ok(m, d.text);
      const s = m[1];
      assert.deepEqual([m[3], m[5], m[7]], [s, s, s], 'three repeats of the string');
      assert.equal(d.queries.length, 3 * (s.length - 1), 'letters 2.. of every repeat');
      for (const q of d.queries) assert.equal(d.text[q.at - q.distance], d.text[q.at], 'distance points at the same letter');
      // each repeat's distance is to the occurrence just before it, not to the first
      const starts = [...d.text.matchAll(new RegExp(s, 'g'))].map((x) => x.index as number);
      assert.equal(starts.length, 4);
      for (let r = 0; r < 3; r++) {
        for (let i = 0; i < s.length - 1; i++) {
          const q = d.queries[r * (s.length - 1) + i];
          assert.equal(q.at, starts[r + 1] + i + 1);
          assert.equal(q.distance, starts[r + 1] - starts[r]);
        }
      }
    }
    assert.equal(copyDocuments(1, { length: 6, seed: 2, gap: [0, 9], repeats: 1 })[0].text,
      copyDocuments(1, { length: 6, seed: 2, gap: [0, 9] })[0].text, 'repeats: 1 is the default');
    assert.throws(() => copyDocuments(1, { length: 5, seed: 1, repeats: 0 }), /repeats/);
    assert.throws(() => copyDocuments(1, { length: 5, seed: 1, repeats: 1.5 }), /repeats/);
  });

  test('scoring counts right argmaxes at the value digits, split by distance', () => {
    const tok = new ByteTokenizer();
    const [d] = recallDocuments(1, { pairs: 30, seed: 5 });
    const ids = tok.encode(d.text);
    assert.equal(ids.length, d.text.length, 'one byte token per character');
    const V = tok.vocabSize;
    const logits = new Float32Array(ids.length * V);
    let want = { near: 0, far: 0 };
    const near = 200;
    d.queries.forEach((q, i) => {
      for (const t of [q.at, q.at + 1]) {
        const right = i % 3 !== 0; // every third query wrong
        logits[(t - 1) * V + (right ? ids[t] : (ids[t] + 1) % V)] = 1;
        if (right) want = q.distance <= near ? { ...want, near: want.near + 1 } : { ...want, far: want.far + 1 };
      }
    });
    const r = scoreRecall(logits, V, ids, d, near);
    assert.equal(r.nearCorrect, want.near);
    assert.equal(r.farCorrect, want.far);
    assert.equal(r.nearTotal + r.farTotal, 2 * d.queries.length);
    assert.ok(r.farTotal > 0 && r.nearTotal > 0, 'both distance classes occur');
  });

  test('scoring by distance bins the same digits: bins add up to the near / far split', () => {
    const tok = new ByteTokenizer();
    const [d] = copyDocuments(1, { length: 8, gap: [0, 300], repeats: 6, seed: 4 });
    const ids = tok.encode(d.text);
    const V = tok.vocabSize;
    const logits = new Float32Array(ids.length * V);
    const edges = [64, 128, 256, 512];
    const want = { correct: [0, 0, 0, 0], total: [0, 0, 0, 0] };
    d.queries.forEach((q, i) => {
      const right = i % 2 === 0;
      logits[(q.at - 1) * V + (right ? ids[q.at] : (ids[q.at] + 1) % V)] = 1;
      const b = edges.findIndex((e) => q.distance <= e);
      want.correct[b] += right ? 1 : 0;
      want.total[b]++;
    });
    const r = scoreRecallByDistance(logits, V, ids, d, edges);
    assert.deepEqual(r, want);
    assert.ok(r.total.filter((n) => n > 0).length >= 2, 'at least two bins occur');
    const split = scoreRecall(logits, V, ids, d, 128);
    assert.equal(r.correct[0] + r.correct[1], split.nearCorrect);
    assert.equal(r.total[2] + r.total[3], split.farTotal);
    assert.throws(() => scoreRecallByDistance(logits, V, ids, d, [64, 32]), /edges/);
  });
});
