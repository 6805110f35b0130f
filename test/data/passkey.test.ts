// The passkey task (src/data/passkey.ts): documents hold their key where they say, end with the
// question and the key, are reproducible from the seed, and the scoring counts argmax hits.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { passkeyDocuments, passkeyProbe, scorePasskey } from '../../src/data/passkey.js';
import { ByteTokenizer } from '../../src/tokenizer/index.js';

describe('passkey documents', () => {
  test('the key sentence sits at keyAt, the document ends with the question and the key, lengths are as asked', () => {
    const docs = passkeyDocuments(50, { length: 1500, depth: [0, 0.5], seed: 3 });
    for (const d of docs) {
      assert.match(d.key, /^[1-9]\d{4}$/);
      assert.ok(d.text.startsWith(`The pass key is ${d.key}.`, d.keyAt), 'key sentence at keyAt');
      assert.ok(d.text.endsWith(`What is the pass key? The pass key is ${d.key}.`));
      assert.equal(d.text.split(d.key).length - 1, 3, 'the key appears twice in its sentence and once at the end');
      assert.ok(Math.abs(d.text.length - 1500) <= 2, `length ${d.text.length}`);
      assert.ok(d.keyAt <= 0.5 * 1500, `depth within the first half: ${d.keyAt}`);
    }
    assert.deepEqual(passkeyDocuments(5, { length: 1500, depth: [0, 0.5], seed: 3 }), docs.slice(0, 5), 'reproducible from the seed');
    assert.notDeepEqual(passkeyDocuments(5, { length: 1500, depth: [0, 0.5], seed: 4 }).map((d) => d.key), docs.slice(0, 5).map((d) => d.key));
  });

  test('bad options raise ArgumentError naming them', () => {
    assert.throws(() => passkeyDocuments(0, { length: 1500, depth: [0, 1], seed: 1 }), /\bn\b/);
    assert.throws(() => passkeyDocuments(1, { length: 50, depth: [0, 1], seed: 1 }), /length/);
    assert.throws(() => passkeyDocuments(1, { length: 500, depth: [0.6, 0.2], seed: 1 }), /depth/);
  });
});

describe('passkey probe and score', () => {
  const tok = new ByteTokenizer();
  const [doc] = passkeyDocuments(1, { length: 600, depth: [0, 0.5], seed: 9 });
  const probe = passkeyProbe(doc, (s) => tok.encode(s));

  test('the probe is the document without its final period, scoring the five key digits', () => {
    assert.deepEqual(probe.ids, tok.encode(doc.text.slice(0, -1)));
    assert.deepEqual(probe.digits, [...doc.key].map((c) => tok.encode(c)[0]));
    probe.positions.forEach((t, c) => assert.equal(probe.ids[t + 1], probe.digits[c], 'row t predicts the token at t + 1'));
  });

  test('scoring counts the digits whose logit row has its maximum at the right token', () => {
    const V = tok.vocabSize;
    const logits = new Float32Array(probe.ids.length * V);
    // Right at digits 0, 2, 4; at 1 and 3 a wrong token wins.
    probe.positions.forEach((t, c) => {
      logits[t * V + probe.digits[c]] = 1;
      if (c % 2 === 1) logits[t * V + ((probe.digits[c] + 1) % V)] = 2;
    });
    assert.deepEqual(scorePasskey(logits, V, probe), { correct: 3, exact: false });
    probe.positions.forEach((t, c) => (logits[t * V + ((probe.digits[c] + 1) % V)] = 0));
    assert.deepEqual(scorePasskey(logits, V, probe), { correct: 5, exact: true });
    assert.throws(() => scorePasskey(logits.subarray(1), V, probe), /logits/);
  });
});
