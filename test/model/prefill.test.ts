// Tests of Decoder.prefill (src/model/decode.ts; SPEC.md sections 3 and 5): a prompt consumed by one
// batched forward must leave the decoder exactly where stepping through it token by token leaves it.
// Oracle: the step-by-step Decoder (itself checked against the full forward at every position in
// decode.test.ts). Compared: the logits after the prompt and after each of 20 further steps, the
// cache statistics, and the cache's contents (ring and selected positions, selector thresholds).
//
// Tolerance: 1e-5 of the row's largest |logit|. Both paths compute the same float32 values; the
// projections are even bit-identical (the CPU matmul rounds a float64 sum once per element, whatever
// the batch), but the forward's attention kernel and the decoder's attend() sum in different orders,
// and those float32-rounding differences (~1e-7 relative) pass through L layers and norms. 1e-5 is
// about a hundred ulps of headroom, the tolerance decode.test.ts holds cached decoding to; a wrong
// slot, gate, position or ring entry moves logits by 1e-2 or more.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Gpt } from '../../src/model/gpt.js';
import { Decoder } from '../../src/model/decode.js';
import { generate } from '../../src/model/generate.js';
import type { ModelConfig } from '../../src/model/config.js';
import { ArgumentError } from '../../src/core/errors.js';
import { fillParams, randomIds, tinyConfig } from './fixtures.js';

interface Setup {
  c: ModelConfig;
  params: Gpt['params'];
}

/** A tiny model with filled parameters; scoreScale multiplies score_proj (0: every score ties). */
function setup(over: Partial<ModelConfig>, seed: number, scoreScale = 1): Setup {
  const c = tinyConfig({ context: 512, ...over });
  const model = Gpt.cpu(c);
  fillParams(model.params, seed);
  for (const l of model.params.layers) l.wscore?.forEach((x, i, a) => (a[i] = x * scoreScale));
  return { c, params: model.params };
}

function assertClose(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length);
  let scale = 0;
  for (const x of want) scale = Math.max(scale, Math.abs(x));
  assert.ok(scale > 0.1, `${what}: logits are not trivially small`);
  for (let v = 0; v < want.length; v++) {
    assert.ok(Math.abs(got[v] - want[v]) <= 1e-5 * scale, `${what}, token ${v}: prefill path ${got[v]}, stepped ${want[v]}`);
  }
}

// White-box view of the cache, for comparing the two decoders' contents (positions only: K/V values
// are compared through the logits).
interface Slots { pos: Int32Array; capacity: number }
interface HeadView { ring: Slots | null; sel: Slots | null; selCount: number; selector: { tau: number; theta: number; candidates: number; selected(): Int32Array } | null }
function heads(d: Decoder): HeadView[][] {
  return (d as unknown as { heads: HeadView[][] }).heads;
}

function assertSameCache(a: Decoder, b: Decoder, what: string): void {
  const sa = a.stats();
  const sb = b.stats();
  assert.equal(a.length, b.length, `${what}: length`);
  assert.equal(sa.bytes, sb.bytes, `${what}: stats().bytes`);
  assert.equal(sa.capHits, sb.capHits, `${what}: stats().capHits`);
  assert.equal(sa.keysLastStep, sb.keysLastStep, `${what}: stats().keysLastStep`);
  const ha = heads(a);
  const hb = heads(b);
  for (let l = 0; l < ha.length; l++) {
    for (let h = 0; h < ha[l].length; h++) {
      const x = ha[l][h];
      const y = hb[l][h];
      const at = `${what}: layer ${l}, KV head ${h}`;
      assert.equal(x.ring?.capacity, y.ring?.capacity, `${at}: ring capacity`);
      const n = Math.min(a.length, x.ring?.capacity ?? 0);
      assert.deepEqual(x.ring?.pos.subarray(0, n), y.ring?.pos.subarray(0, n), `${at}: ring positions`);
      assert.equal(x.selCount, y.selCount, `${at}: selected count`);
      assert.deepEqual(x.sel?.pos.subarray(0, x.selCount), y.sel?.pos.subarray(0, y.selCount), `${at}: selected positions by slot`);
      if (x.selector && y.selector) {
        assert.equal(x.selector.candidates, y.selector.candidates, `${at}: candidates`);
        assert.deepEqual(x.selector.selected(), y.selector.selected(), `${at}: Sel`);
        const tol = 1e-5 * Math.max(1, Math.abs(y.selector.tau === -Infinity ? 0 : y.selector.tau));
        if (y.selector.tau === -Infinity) assert.equal(x.selector.tau, -Infinity, `${at}: tau`);
        else assert.ok(Math.abs(x.selector.tau - y.selector.tau) <= tol, `${at}: tau ${x.selector.tau} vs ${y.selector.tau}`);
      }
    }
  }
}

/**
 * prefill(prompt) against stepping through it: the same logits after the prompt, the same cache,
 * and the same logits for `after` further tokens. Returns the stepped decoder's final stats.
 */
function assertPrefillMatchesSteps(s: Setup, prompt: number[], opts: { after?: number; supportCap?: number; seed?: number } = {}) {
  const { c, params } = s;
  const after = opts.after ?? 20;
  const pre = new Decoder(c, params, { supportCap: opts.supportCap });
  const ref = new Decoder(c, params, { supportCap: opts.supportCap });
  const name = `${c.attention} K=${c.k} W=${c.window} T=${prompt.length}`;
  const got = Float32Array.from(pre.prefill(prompt));
  let want = new Float32Array(0);
  for (const id of prompt) want = Float32Array.from(ref.step(id));
  assertClose(got, want, `${name}: logits after the prompt`);
  assertSameCache(pre, ref, `${name} after the prompt`);
  const more = randomIds(after, c.vocabSize, opts.seed ?? 99);
  for (let t = 0; t < after; t++) {
    assertClose(pre.step(more[t]), ref.step(more[t]), `${name}: step ${t + 1} after the prompt`);
  }
  assertSameCache(pre, ref, `${name} after ${after} more steps`);
  return ref.stats();
}

describe('Decoder.prefill equals stepping through the prompt', () => {
  const cases: { name: string; over: Partial<ModelConfig>; T: number; scoreScale?: number; supportCap?: number }[] = [
    { name: 'sparsek K 4, W 3 (GQA 4:2), T 113', over: { k: 4, window: 3 }, T: 113, scoreScale: 4 },
    { name: 'sparsek W 0, K 3 (selection only), T 113', over: { k: 3, window: 0 }, T: 113, scoreScale: 4 },
    { name: 'sparsek K 0, W 4 (sliding window), T 50', over: { k: 0, window: 4 }, T: 50 },
    { name: 'sparsek K 40 >= T 37, W 2 (every candidate selected)', over: { k: 40, window: 2 }, T: 37 },
    { name: 'sparsek T 7 < W 10, K 2', over: { k: 2, window: 10 }, T: 7 },
    { name: 'sparsek MQA (one KV head), K 5, W 1, slope 0.3', over: { k: 5, window: 1, kvHeads: 1, scoreSlope: 0.3 }, T: 61 },
    { name: 'sparsek NKV = NH, biased untied block, K 3, W 2', over: { k: 3, window: 2, kvHeads: 4, qkvBias: true, tieEmbeddings: false }, T: 45, scoreScale: 4 },
    { name: 'sparsek long prompt, 400 >> W 8 + K 5, slope 0.05', over: { k: 5, window: 8, scoreSlope: 0.05 }, T: 400 },
    { name: 'sparsek exact cap (supportCap Infinity), K 3, W 2, T 90', over: { k: 3, window: 2 }, T: 90, supportCap: Infinity },
    { name: 'window W 5, T 60', over: { attention: 'window', window: 5 }, T: 60 },
    { name: 'dense, T 300 (past the first growth at 256)', over: { attention: 'dense' }, T: 300 },
  ];
  for (const { name, over, T, scoreScale, supportCap } of cases) {
    test(name, () => {
      const s = setup(over, 5, scoreScale);
      const stats = assertPrefillMatchesSteps(s, randomIds(T, s.c.vocabSize, 17), { supportCap });
      if (supportCap === Infinity) assert.equal(stats.capHits, 0);
    });
  }

  test('a prompt of one token (sparsek W 0 and W 2, window, dense)', () => {
    for (const over of [{ k: 3, window: 0 }, { k: 2, window: 2 }, { attention: 'window' as const, window: 3 }, { attention: 'dense' as const }]) {
      const s = setup(over, 6);
      assertPrefillMatchesSteps(s, [7]);
    }
  });

  test('ties in the scores (score_proj 0, slope 0: every u is 0 in every layer), exact cap', () => {
    // All scores equal: Sel breaks ties by position (newest wins) and every candidate stays in
    // SparseK's support, so only an unbounded support list keeps decoding exact.
    const s = setup({ k: 3, window: 2, scoreSlope: 0 }, 8, 0);
    const stats = assertPrefillMatchesSteps(s, randomIds(70, s.c.vocabSize, 3), { supportCap: Infinity });
    assert.equal(stats.capHits, 0);
  });

  test('ties with the default cap: the batch stops at the first cap hit, steps take over', () => {
    // With every score equal the support list passes 4K = 12 after about 12 + W candidates: the
    // capped decoder then leaves the exact forward, and prefill must follow the capped decoder.
    const s = setup({ k: 3, window: 2, scoreSlope: 0 }, 8, 0);
    const stats = assertPrefillMatchesSteps(s, randomIds(60, s.c.vocabSize, 3));
    assert.ok(stats.capHits > 0, 'expected the support cap to be reached');
  });

  test('ties from a repeated token (layer 0 scores equal, slope 0), K 4, W 3', () => {
    const s = setup({ k: 4, window: 3, scoreSlope: 0 }, 9, 4);
    const prompt = [...Array(25).fill(5), ...randomIds(20, s.c.vocabSize, 4), ...Array(20).fill(11)];
    assertPrefillMatchesSteps(s, prompt, { supportCap: Infinity });
  });

  test('a prompt longer than the context: batched up to context, stepped after', () => {
    const s = setup({ k: 3, window: 4, context: 32, scoreSlope: 0.2 }, 10);
    assertPrefillMatchesSteps(s, randomIds(100, s.c.vocabSize, 5));
    const w = setup({ attention: 'window', window: 6, context: 16 }, 10);
    assertPrefillMatchesSteps(w, randomIds(40, w.c.vocabSize, 5));
  });

  test('prefillMax bounds the batch (the rest is stepped) and is checked', () => {
    const s = setup({ k: 4, window: 3, scoreSlope: 0.2 }, 13);
    const ids = randomIds(50, s.c.vocabSize, 8);
    const a = new Decoder(s.c, s.params, { prefillMax: 11 });
    const b = new Decoder(s.c, s.params);
    const got = Float32Array.from(a.prefill(ids));
    let want = new Float32Array(0);
    for (const id of ids) want = Float32Array.from(b.step(id));
    assertClose(got, want, 'prefillMax 11, T 50');
    assertSameCache(a, b, 'prefillMax 11, T 50');
    for (const bad of [0, 2.5, -3]) {
      assert.throws(() => new Decoder(s.c, s.params, { prefillMax: bad }), (e: Error) => e instanceof ArgumentError && /opts\.prefillMax/.test(e.message));
    }
  });

  test('prefill after earlier steps continues the sequence (same as stepping all of it)', () => {
    const s = setup({ k: 3, window: 2, scoreSlope: 0.2 }, 11);
    const ids = randomIds(30, s.c.vocabSize, 6);
    const a = new Decoder(s.c, s.params);
    const b = new Decoder(s.c, s.params);
    for (const id of ids.slice(0, 4)) a.step(id);
    const got = Float32Array.from(a.prefill(ids.slice(4)));
    let want = new Float32Array(0);
    for (const id of ids) want = Float32Array.from(b.step(id));
    assertClose(got, want, 'prefill after 4 steps');
    assertSameCache(a, b, 'prefill after 4 steps');
  });

  test('generate() with prefill draws the same greedy tokens as stepping the prompt', () => {
    const s = setup({ k: 3, window: 2, scoreSlope: 0.2 }, 12);
    const prompt = randomIds(40, s.c.vocabSize, 7);
    const opts = { tokens: 15, temperature: 0, topP: 1, seed: 1 };
    const withPrefill = generate(s.c, s.params, prompt, opts);
    const stepped = generate(s.c, s.params, prompt, {
      ...opts,
      decoder: () => {
        const d = new Decoder(s.c, s.params);
        return { step: (id: number) => d.step(id), stats: () => d.stats() }; // no prefill
      },
    });
    assert.deepEqual(withPrefill.ids, stepped.ids);
    assert.equal(withPrefill.stats.cacheBytesFinal, stepped.stats.cacheBytesFinal);
  });

  test('bad prompts raise ArgumentError naming ids', () => {
    const s = setup({ k: 3, window: 2 }, 5);
    const d = new Decoder(s.c, s.params);
    const bad = (ids: unknown, re: RegExp) =>
      assert.throws(() => d.prefill(ids as number[]), (e: Error) => e instanceof ArgumentError && re.test(e.message));
    bad([], /^ids: expected a non-empty array/);
    bad([1, 2.5], /^ids\[1\]: expected a token id in \[0, 23\)/);
    bad([1, 23], /^ids\[1\]: expected a token id in \[0, 23\)/);
    bad([-1], /^ids\[0\]/);
    bad('abc', /^ids: expected a non-empty array/);
    assert.equal(d.length, 0, 'a refused prompt consumes nothing');
  });
});
