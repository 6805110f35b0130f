// Tests of cached decoding and sampling (src/model/decode.ts, src/model/generate.ts; SPEC.md
// section 5). Oracles: the full forward pass of Gpt over the whole sequence (cached decoding must
// give the same logits at every position), the counts SPEC's selection rules imply (keys scored per
// token: min(W, i+1) + min(K, |Cand_i|) per query head and layer), a lower bound on what a dense cache
// must hold, and sampling frequencies from the nucleus's definition.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Gpt } from '../../src/model/gpt.js';
import { Decoder } from '../../src/model/decode.js';
import { generate, sampleLogits } from '../../src/model/generate.js';
import type { ModelConfig } from '../../src/model/config.js';
import { headSize } from '../../src/model/config.js';
import { Rng } from '../../src/core/random.js';
import { ArgumentError } from '../../src/core/errors.js';
import { fillParams, randomIds, tinyConfig } from './fixtures.js';

/**
 * Decodes ids one by one and compares each step's logits with row t of one full forward.
 * scoreScale multiplies score_proj: wider-spread scores keep SparseK's support (the candidates
 * within 1 of tau) small, so the default support cap of 4K is not reached.
 */
function assertDecodeMatchesForward(c: ModelConfig, T: number, seed: number, opts: { scoreScale?: number; supportCap?: number } = {}): Decoder {
  const model = Gpt.cpu(c);
  fillParams(model.params, seed);
  for (const l of model.params.layers) l.wscore?.forEach((x, i, a) => (a[i] = x * (opts.scoreScale ?? 1)));
  const ids = randomIds(T, c.vocabSize, seed + 17);
  model.forward(ids, 1, T);
  const full = model.logits;
  const V = c.vocabSize;
  const dec = new Decoder(c, model.params, { supportCap: opts.supportCap });
  for (let t = 0; t < T; t++) {
    const got = dec.step(ids[t]);
    assert.equal(dec.length, t + 1);
    let scale = 0;
    for (let v = 0; v < V; v++) scale = Math.max(scale, Math.abs(full[t * V + v]));
    assert.ok(scale > 0.1, 'logits are not trivially small');
    for (let v = 0; v < V; v++) {
      const want = full[t * V + v];
      assert.ok(Math.abs(got[v] - want) <= 1e-5 * scale,
        `${c.attention} K=${c.k} W=${c.window}: position ${t}, token ${v}: cached ${got[v]}, full forward ${want}`);
    }
  }
  assert.equal(dec.stats().capHits, 0, 'the support cap was hit: decoding is not exact');
  return dec;
}

describe('Decoder: cached decoding equals the full forward at every position', () => {
  const cases: { name: string; over: Partial<ModelConfig>; T: number; scoreScale?: number }[] = [
    { name: 'sparsek K 4, W 3 (GQA 4:2)', over: { k: 4, window: 3 }, T: 37 },
    { name: 'sparsek W 0, K 3 (selection only)', over: { k: 3, window: 0 }, T: 37 },
    { name: 'sparsek K 0, W 4 (sliding window)', over: { k: 0, window: 4 }, T: 37 },
    { name: 'sparsek K 40 >= T 37, W 2 (every candidate selected)', over: { k: 40, window: 2 }, T: 37 },
    { name: 'sparsek T 7 < W 10, K 2', over: { k: 2, window: 10 }, T: 7 },
    { name: 'sparsek T 1', over: { k: 2, window: 2 }, T: 1 },
    { name: 'sparsek one KV head (MQA), K 3, W 2', over: { k: 3, window: 2, kvHeads: 1 }, T: 29, scoreScale: 4 },
    { name: 'sparsek NKV = NH, slope 0.3, K 5, W 1', over: { k: 5, window: 1, kvHeads: 4, scoreSlope: 0.3 }, T: 31 },
    { name: 'window W 5', over: { attention: 'window', window: 5 }, T: 23 },
    { name: 'dense (GQA)', over: { attention: 'dense' }, T: 23 },
    { name: 'Qwen2 style: dense, q/k/v biases, untied head', over: { attention: 'dense', qkvBias: true, tieEmbeddings: false }, T: 19 },
    { name: 'Mistral style: window W 4, untied head, every bias', over: { attention: 'window', window: 4, qkvBias: true, outBias: true, mlpBias: true, tieEmbeddings: false }, T: 19 },
    { name: 'sparsek K 3, W 2 on a biased, untied Llama block', over: { k: 3, window: 2, qkvBias: true, tieEmbeddings: false }, T: 29, scoreScale: 4 },
  ];
  for (const { name, over, T, scoreScale } of cases) {
    test(name, () => {
      assertDecodeMatchesForward(tinyConfig(over), T, 5, { scoreScale });
    });
  }

  test('GPT-2 and GPT-NeoX blocks have no cached form: supports() says so, the constructor names the architecture', () => {
    for (const over of [
      { attention: 'dense', norm: 'layer', mlp: 'gelu_tanh', positions: 'learned' },
      { attention: 'dense', norm: 'layer', mlp: 'gelu', rotaryDims: 2, parallelResidual: true },
      { attention: 'window', window: 3, parallelResidual: true },
    ] as const) {
      const c = tinyConfig(over);
      assert.equal(Decoder.supports(c), false, JSON.stringify(over));
      assert.throws(() => new Decoder(c, Gpt.cpu(c).params), (e: Error) => e instanceof ArgumentError && /Llama-style block/.test(e.message));
    }
  });

  test('the support cap: hits are reported; supportCap Infinity keeps decoding exact', () => {
    // Scores spread over about +-1 put many candidates within 1 of tau, more than 4K = 12.
    const c = tinyConfig({ k: 3, window: 2, kvHeads: 1 });
    const model = Gpt.cpu(c);
    fillParams(model.params, 5);
    const capped = new Decoder(c, model.params);
    for (const id of randomIds(29, c.vocabSize, 22)) capped.step(id);
    assert.ok(capped.stats().capHits > 0, 'expected the default cap of 4K to be reached in this setting');
    const dec = assertDecodeMatchesForward(c, 29, 5, { supportCap: Infinity });
    assert.equal(dec.stats().capHits, 0);
  });

  test('Decoder refuses kinds without a cache form', () => {
    const c = tinyConfig({ attention: 'fixed', window: 3 });
    assert.equal(Decoder.supports(c), false);
    assert.throws(() => new Decoder(c, Gpt.cpu(c).params), /fixed/);
  });
});

describe('Decoder: constant memory and constant work per token (SPEC section 5)', () => {
  test('sparsek: cache bytes constant over the last 2000 of 2700 steps, capHits 0, keys <= NH (W + K)', () => {
    // A position slope breaks the ties that layer 0's token-only scores would otherwise make (equal
    // scores all stay in SparseK's support and would fill the support list).
    const c = tinyConfig({ layers: 2, k: 5, window: 8, scoreSlope: 0.05 });
    const model = Gpt.cpu(c);
    fillParams(model.params, 5);
    const dec = new Decoder(c, model.params);
    const ids = randomIds(2700, c.vocabSize, 3);
    const { layers: L, heads: NH, k: K, window: W } = c;
    const bytes: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      dec.step(ids[i]);
      const s = dec.stats();
      bytes.push(s.bytes);
      const cand = Math.max(0, i - W + 1); // |Cand_i| = #{ j <= i - W }
      const keys = L * NH * (Math.min(W, i + 1) + Math.min(K, cand));
      assert.equal(s.keysLastStep, keys, `step ${i}: keys scored`);
      assert.ok(s.keysLastStep <= L * NH * (W + K));
      assert.equal(s.capHits, 0, `step ${i}: support cap hit`);
    }
    const last = bytes[bytes.length - 1];
    for (let i = bytes.length - 2000; i < bytes.length; i++) assert.equal(bytes[i], last, `bytes changed at step ${i}`);
    // K/V of W + K entries per (layer, KV head) are a floor on what the cache must hold.
    const HS = headSize(c);
    assert.ok(last >= L * c.kvHeads * (W + K) * 2 * HS * 4, `bytes ${last} below the K/V floor`);
  });

  test('dense: cache bytes grow with the sequence and keys per step grow linearly', () => {
    const c = tinyConfig({ attention: 'dense' });
    const model = Gpt.cpu(c);
    fillParams(model.params, 5);
    const dec = new Decoder(c, model.params);
    const ids = randomIds(700, c.vocabSize, 3);
    const HS = headSize(c);
    const bytesAt: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      dec.step(ids[i]);
      const s = dec.stats();
      bytesAt.push(s.bytes);
      assert.equal(s.keysLastStep, c.layers * c.heads * (i + 1), `step ${i}: keys scored`);
      // A dense cache holds K and V of every position so far.
      assert.ok(s.bytes >= c.layers * c.kvHeads * (i + 1) * 2 * HS * 4, `step ${i}: bytes ${s.bytes} below the dense floor`);
    }
    assert.ok(bytesAt[699] > bytesAt[299] && bytesAt[299] > bytesAt[99], `bytes ${bytesAt[99]}, ${bytesAt[299]}, ${bytesAt[699]}`);
  });
});

describe('generate and sampleLogits', () => {
  /** Greedy continuation by full recomputation with Gpt over the last `context` tokens: the oracle. */
  function greedyByForward(c: ModelConfig, model: Gpt, prompt: number[], n: number): number[] {
    const ids = [...prompt];
    const out: number[] = [];
    const V = c.vocabSize;
    for (let t = 0; t < n; t++) {
      const ctx = ids.slice(-c.context);
      model.forward(ctx, 1, ctx.length);
      const row = model.logits.subarray((ctx.length - 1) * V, ctx.length * V);
      let best = 0;
      for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
      ids.push(best);
      out.push(best);
    }
    return out;
  }

  test('temperature 0 is greedy, deterministic, and gives exactly `tokens` tokens (sparsek, cached)', () => {
    const c = tinyConfig({ k: 3, window: 2, context: 64 });
    const model = Gpt.cpu(c);
    fillParams(model.params, 7);
    const prompt = randomIds(5, c.vocabSize, 1);
    const a = generate(c, model.params, prompt, { tokens: 25, temperature: 0, topP: 1, seed: 1, supportCap: Infinity });
    const b = generate(c, model.params, prompt, { tokens: 25, temperature: 0, topP: 0.5, seed: 99, supportCap: Infinity });
    assert.equal(a.ids.length, 25);
    assert.equal(a.stats.tokens, 25);
    assert.deepEqual(a.ids, b.ids);
    assert.deepEqual(a.ids, greedyByForward(c, model, prompt, 25));
    assert.equal(a.stats.capHits, 0);
    assert.ok(a.stats.cacheBytesMax >= a.stats.cacheBytesFinal && a.stats.cacheBytesFinal > 0);
    const seen: number[] = [];
    const z = generate(c, model.params, prompt, { tokens: 0, temperature: 0, topP: 1, seed: 1, onToken: (id) => seen.push(id) });
    assert.deepEqual(z.ids, []);
    assert.equal(seen.length, 0);
    const one = generate(c, model.params, prompt, { tokens: 1, temperature: 0, topP: 1, seed: 1, onToken: (id) => seen.push(id) });
    assert.deepEqual(one.ids, a.ids.slice(0, 1));
    assert.deepEqual(seen, one.ids);
  });

  test('temperature 0 without a cache form (fixed): recomputes over a sliding context', () => {
    const c = tinyConfig({ attention: 'fixed', window: 3, context: 9 });
    const model = Gpt.cpu(c);
    fillParams(model.params, 7);
    const prompt = randomIds(4, c.vocabSize, 2);
    const a = generate(c, model.params, prompt, { tokens: 12, temperature: 0, topP: 1, seed: 1 });
    assert.equal(a.ids.length, 12);
    assert.deepEqual(a.ids, greedyByForward(c, model, prompt, 12));
  });

  test('sampling with a temperature is reproducible from the seed and respects `tokens`', () => {
    const c = tinyConfig({ k: 3, window: 2, context: 64 });
    const model = Gpt.cpu(c);
    fillParams(model.params, 7);
    const prompt = randomIds(3, c.vocabSize, 1);
    const opts = { tokens: 40, temperature: 1.5, topP: 0.9, seed: 4 };
    const a = generate(c, model.params, prompt, opts);
    const b = generate(c, model.params, prompt, opts);
    const d = generate(c, model.params, prompt, { ...opts, seed: 5 });
    assert.equal(a.ids.length, 40);
    assert.deepEqual(a.ids, b.ids);
    assert.notDeepEqual(a.ids, d.ids);
    assert.ok(a.ids.every((id) => Number.isInteger(id) && id >= 0 && id < c.vocabSize));
  });

  test('generate rejects bad options with ArgumentError naming them', () => {
    const c = tinyConfig();
    const p = Gpt.cpu(c).params;
    assert.throws(() => generate(c, p, [1], { tokens: -1, temperature: 0, topP: 1, seed: 0 }), (e: unknown) => e instanceof ArgumentError && /tokens/.test(e.message));
    assert.throws(() => generate(c, p, [1], { tokens: 2, temperature: -1, topP: 1, seed: 0 }), (e: unknown) => e instanceof ArgumentError && /temperature/.test(e.message));
    assert.throws(() => generate(c, p, [1], { tokens: 2, temperature: 1, topP: 0, seed: 0 }), (e: unknown) => e instanceof ArgumentError && /topP/.test(e.message));
    assert.throws(() => generate(c, p, [], { tokens: 2, temperature: 1, topP: 1, seed: 0 }), (e: unknown) => e instanceof ArgumentError && /prompt/.test(e.message));
  });

  test('sampleLogits: top-p draws only inside the nucleus, with renormalised frequencies', () => {
    // Probabilities 0.15, 0.5, 0.05, 0.3 (shuffled, so the nucleus must be found by sorting).
    const p = [0.15, 0.5, 0.05, 0.3];
    const logits = Float32Array.from(p, (x) => Math.log(x) + 3);
    const rng = new Rng(123);
    const N = 20000;
    // topP 0.7: the smallest top set with mass >= 0.7 is {0.5, 0.3} (mass 0.8).
    const counts = [0, 0, 0, 0];
    for (let n = 0; n < N; n++) counts[sampleLogits(logits, 1, 0.7, rng)]++;
    assert.equal(counts[0], 0, 'token of p 0.15 is outside the nucleus');
    assert.equal(counts[2], 0, 'token of p 0.05 is outside the nucleus');
    const f1 = counts[1] / N;
    const sigma = Math.sqrt(0.625 * 0.375 / N);
    assert.ok(Math.abs(f1 - 0.625) < 5 * sigma, `frequency of the top token ${f1}, expected 0.5 / 0.8 = 0.625`);
    // topP 0.4: the top token alone.
    for (let n = 0; n < 200; n++) assert.equal(sampleLogits(logits, 1, 0.4, rng), 1);
    // topP 1, temperature 2: p^(1/2) renormalised, every token reachable.
    const all = [0, 0, 0, 0];
    for (let n = 0; n < N; n++) all[sampleLogits(logits, 2, 1, rng)]++;
    const z = p.reduce((s, x) => s + Math.sqrt(x), 0);
    p.forEach((x, i) => {
      const want = Math.sqrt(x) / z;
      const got = all[i] / N;
      assert.ok(Math.abs(got - want) < 5 * Math.sqrt(want * (1 - want) / N), `token ${i}: frequency ${got}, expected ${want}`);
    });
    // temperature 0: argmax, whatever topP.
    assert.equal(sampleLogits(logits, 0, 0.01, rng), 1);
    assert.equal(sampleLogits(Float32Array.of(-5, 2, 7, 7), 0, 1, rng), 2, 'first of equal maxima');
  });
});
