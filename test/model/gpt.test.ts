// Tests of the whole decoder (src/model/gpt.ts, SPEC.md sections 2-4 and 6 end to end). Oracles:
// central finite differences of the float32 loss for the whole-model gradient, for every attention
// kind; the loss recomputed in float64 from the logits; overfitting one batch with AdamW;
// bit-identical losses from the same seed.
// Not here: cached decoding (decode.test.ts), the training loop and run folders (train/).
//
// Piecewise models. SparseK's gates clip(u - tau, 0, 1) and tau are piecewise linear in the scores,
// and the hard selection (SparseK's top-k, qktopk's top-K by q.k, hash buckets) is piecewise
// constant, so the loss has kinks and jumps. Before comparing at a parameter we check that the left
// and right one-sided differences agree to the comparison's own tolerance: a jump of size delta
// within +-eps makes |left - right| about delta / eps (a kink: the change of slope), while the
// central difference's error from it is at most |left - right| / 2, so a point that passes this
// check is compared fairly. Points that fail it are skipped and counted; only a few may be.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Gpt } from '../../src/model/gpt.js';
import type { AttentionKind, ModelConfig } from '../../src/model/config.js';
import { initParams } from '../../src/model/params.js';
import { adamwStep } from '../../src/train/optim.js';
import { sampleBatch } from '../../src/train/data.js';
import { Rng } from '../../src/core/random.js';
import { fillParams, flatNames, randomIds, tinyConfig } from './fixtures.js';

const EPS = 1e-3;
const ATOL = 2e-3;
const RTOL = 2e-2;
const tol = (ref: number) => ATOL + RTOL * Math.abs(ref);

interface Entry {
  index: number;
  name: string;
  analytic: number;
  central: number;
  left: number;
  right: number;
  smooth: boolean; // the one-sided differences agree (no kink or jump within +-EPS)
}

/** A model of the tiny config with filled parameters, and its batch (B = 2, T = 9). */
function setup(c: ModelConfig, seed = 3) {
  const model = Gpt.cpu(c);
  fillParams(model.params, seed);
  const B = 2;
  const T = c.context;
  const ids = randomIds(B * T, c.vocabSize, seed + 100);
  const targets = randomIds(B * T, c.vocabSize, seed + 200);
  targets[3] = -1; // ignored positions: the mean runs over the others, in forward and backward
  targets[T + 5] = -1;
  return { model, B, T, ids, targets };
}

/** Analytic gradient from backward(), and finite differences at the given flat indices. */
function gradCheck(c: ModelConfig, indices: number[], seed = 3): { entries: Entry[]; model: Gpt; loss: number } {
  const { model, B, T, ids, targets } = setup(c, seed);
  const loss = model.forward(ids, B, T, targets);
  model.zeroGrad();
  model.backward();
  const g = model.grads.flat.slice();
  const names = flatNames(model.params);
  const f = model.params.flat;
  const entries: Entry[] = [];
  for (const i of indices) {
    const x = f[i];
    // float32 rounding of x +- EPS: use the step actually taken.
    f[i] = x + EPS;
    const hp = f[i] - x;
    const lp = model.forward(ids, B, T, targets);
    f[i] = x - EPS;
    const hm = x - f[i];
    const lm = model.forward(ids, B, T, targets);
    f[i] = x;
    const right = (lp - loss) / hp;
    const left = (loss - lm) / hm;
    const central = (lp - lm) / (hp + hm);
    entries.push({ index: i, name: names[i], analytic: g[i], central, left, right, smooth: Math.abs(left - right) <= tol(central) });
  }
  model.forward(ids, B, T, targets); // leave the model's activations at the unperturbed point
  return { entries, model, loss };
}

/** Smooth entries whose analytic gradient (or the override) misses the central difference. */
function failures(entries: Entry[], analytic: (e: Entry) => number = (e) => e.analytic): Entry[] {
  return entries.filter((e) => e.smooth && !(Math.abs(analytic(e) - e.central) <= tol(e.central)));
}

function describeEntries(es: Entry[]): string {
  return es.slice(0, 8).map((e) => `${e.name}[#${e.index}]: analytic ${e.analytic}, central ${e.central} (left ${e.left}, right ${e.right})`).join('\n');
}

/** Every third flat index, plus every score_proj entry (so each layer's scoring network is in), and every bias entry. */
function checkedIndices(model: Gpt): number[] {
  const names = flatNames(model.params);
  return names.map((n, i) => i).filter((i) => i % 3 === 0 || names[i].includes('score_proj') || names[i].endsWith('.bias'));
}

/**
 * zeroGradient: tensors whose gradient is exactly zero by the mathematics (a key bias without
 * rotary embeddings adds the same q . b to every score of a query, and softmax ignores it): their
 * analytic gradient must be zero to rounding instead of carrying a large entry.
 */
function assertGradient(kind: AttentionKind, over: Partial<ModelConfig>, maxSkipFraction: number, seed = 3, zeroGradient: (name: string) => boolean = () => false) {
  const c = tinyConfig({ attention: kind, ...over });
  const indices = checkedIndices(Gpt.cpu(c));
  const { entries, model } = gradCheck(c, indices, seed);
  const skipped = entries.filter((e) => !e.smooth);
  assert.ok(skipped.length <= maxSkipFraction * entries.length,
    `${kind}: ${skipped.length} of ${entries.length} points have disagreeing one-sided differences (allowed ${maxSkipFraction}):\n${describeEntries(skipped)}`);
  const bad = failures(entries);
  assert.equal(bad.length, 0, `${kind}: gradient mismatches:\n${describeEntries(bad)}`);
  // Every tensor of the model is represented among the compared points, and carries real gradient.
  for (const s of model.params.specs) {
    const mine = entries.filter((e) => e.smooth && e.name === s.name);
    assert.ok(mine.length > 0, `${kind}: no compared entry of ${s.name}`);
    if (zeroGradient(s.name)) {
      assert.ok(mine.every((e) => Math.abs(e.analytic) < 1e-6), `${kind}: ${s.name} should have zero gradient`);
      continue;
    }
    assert.ok(mine.some((e) => Math.abs(e.central) > 5 * ATOL), `${kind}: ${s.name} has no gradient entry above 5 x atol`);
  }
  return { entries, model };
}

/**
 * The check has teeth for the scoring network: in each layer several score_proj entries have a
 * gradient far above the tolerance, so a zeroed (or dropped) score gradient would fail.
 */
function assertScoreTeeth(entries: Entry[], layers: number): void {
  for (let l = 0; l < layers; l++) {
    const name = `model.layers.${l}.self_attn.score_proj.weight`;
    const mine = entries.filter((e) => e.name === name && e.smooth);
    const all = entries.filter((e) => e.name === name).length;
    assert.ok(mine.length >= 0.75 * all && all > 0, `${name}: only ${mine.length} of ${all} entries compared`);
    assert.ok(mine.filter((e) => Math.abs(e.central) > 10 * ATOL).length >= 5, `${name}: too few entries with a large gradient`);
    const zeroed = failures(entries, (e) => (e.name === name ? 0 : e.analytic));
    assert.ok(zeroed.length >= 5, `${name}: zeroing its gradient is caught by only ${zeroed.length} entries`);
  }
}

describe('Gpt: whole-model gradient against central differences', () => {
  test('sparsek (K 3, W 2, GQA 4:2): every 3rd parameter and all of score_proj', () => {
    const { entries, model } = assertGradient('sparsek', { k: 3, window: 2 }, 0.05, 3);
    // The SparseK path is really exercised: in every layer some gate is strictly inside (0, 1), so
    // tau is finite and the scores get gradient through the free set (SPEC section 4).
    model.selections().forEach((sel, l) => {
      assert.ok(sel, `layer ${l}: no selection`);
      let free = 0;
      for (const s of sel) for (const g of s.gates) for (const x of g) if (x > 0 && x < 1) free++;
      assert.ok(free > 0, `layer ${l}: no gate strictly between 0 and 1`);
    });
    assertScoreTeeth(entries, 2);
  });

  test('sparsek, W = 0 and K = 5 (selection only), one KV head', () => {
    const { entries } = assertGradient('sparsek', { k: 5, window: 0, kvHeads: 1 }, 0.05, 1);
    assertScoreTeeth(entries, 2);
  });

  test('sparsek with a position slope (eps 0.3) and K not a power of two', () => {
    assertGradient('sparsek', { k: 3, window: 3, scoreSlope: 0.3 }, 0.05, 2);
  });

  // Smooth models: one-sided differences still differ by about eps |f''|, so a point of unusual
  // curvature may be set aside; at most 0.5% (none with these inputs).
  test('dense (smooth)', () => {
    assertGradient('dense', {}, 0.005);
  });

  test('window W 3 (smooth)', () => {
    assertGradient('window', { window: 3 }, 0.005);
  });

  test('fixed W 3 (smooth)', () => {
    assertGradient('fixed', { window: 3 }, 0.005);
  });

  test('qktopk K 2, W 2 (top-K by q.k is piecewise constant: jumps are skipped, few allowed)', () => {
    assertGradient('qktopk', { k: 2, window: 2 }, 0.05);
  });

  test('hash: parameters that cannot move a bucket are all checked; the rest where smooth', () => {
    // Buckets depend only on each layer's q and k, i.e. on the embeddings and on every parameter of
    // the layers up to and including that layer's input norm, q_proj and k_proj. The last layer's
    // v_proj, o_proj, post-attention norm and MLP, and the final norm, touch no q or k of any layer:
    // the bucket pattern is constant in them, so the loss is smooth there and all of them are
    // compared (as for the smooth kinds, at most 0.5% may be set aside for curvature). The
    // embeddings are tied to the output head but also feed layer 0's q and k: not in this set.
    const c = tinyConfig({ attention: 'hash', hashBuckets: 4 });
    const names = flatNames(Gpt.cpu(c).params);
    const last = `model.layers.${c.layers - 1}.`;
    const free = (n: string) =>
      n === 'model.norm.weight' ||
      (n.startsWith(last) && /(v_proj|o_proj|post_attention_layernorm|mlp\.)/.test(n));
    const hashFree = names.map((_, i) => i).filter((i) => free(names[i]));
    assert.ok(hashFree.length > 1000, 'the bucket-independent set is most of the last layer');
    const { entries } = gradCheck(c, hashFree);
    const rough = entries.filter((e) => !e.smooth);
    assert.ok(rough.length <= 0.005 * entries.length, `loss not smooth in bucket-independent parameters:\n${describeEntries(rough)}`);
    const bad = failures(entries);
    assert.equal(bad.length, 0, `hash: gradient mismatches:\n${describeEntries(bad)}`);
    // The others (embeddings, layer 0, last layer's q/k/norm): where no bucket flips within +-eps.
    const others = names.map((_, i) => i).filter((i) => !free(names[i]) && i % 3 === 0);
    const rest = gradCheck(c, others).entries;
    const skipped = rest.filter((e) => !e.smooth);
    assert.ok(skipped.length <= 0.05 * rest.length, `hash: ${skipped.length} of ${rest.length} skipped`);
    const bad2 = failures(rest);
    assert.equal(bad2.length, 0, `hash: gradient mismatches:\n${describeEntries(bad2)}`);
  });
});

describe('Gpt: imported architectures (config.ts architecture fields), gradient against central differences', () => {
  // Every tensor (LayerNorm biases, projection biases, the position table, the untied head) must
  // carry a compared, non-trivial gradient: assertGradient checks that for each ParamSpec.
  const gpt2 = { norm: 'layer', mlp: 'gelu_tanh', positions: 'learned', qkvBias: true, outBias: true, mlpBias: true } as const;
  const neox = {
    dim: 32, norm: 'layer', mlp: 'gelu', rotaryDims: 4, parallelResidual: true, qkvBias: true, outBias: true, mlpBias: true, tieEmbeddings: false,
  } as const;

  test('GPT-2 style: LayerNorm, tanh GELU, learned positions, biases, tied head (dense, smooth)', () => {
    const { model } = assertGradient('dense', gpt2, 0.005, 3, (n) => n.endsWith('k_proj.bias'));
    assert.ok(model.params.wpe && model.params.layers[0].ln1b && !model.params.lmHead && !model.params.layers[0].wgate);
  });

  test('GPT-NeoX style: parallel residual, exact GELU, RoPE on 4 of 8 features, biases, untied head (dense, smooth)', () => {
    const { model } = assertGradient('dense', neox, 0.005);
    assert.ok(model.params.lmHead && !model.params.wpe);
  });

  test('Qwen2 / Mistral style: q, k, v biases, MLP biases, untied head, window W 3 (smooth)', () => {
    assertGradient('window', { window: 3, qkvBias: true, mlpBias: true, tieEmbeddings: false }, 0.005);
  });

  test('sparsek on a GPT-2 style block (what conversion of a GPT-2 checkpoint trains)', () => {
    // seed 5: with these tiny widths the last layer's query bias has gradients of 0.005-0.03 depending on the draw
    const { entries } = assertGradient('sparsek', { ...gpt2, k: 3, window: 2 }, 0.05, 5, (n) => n.endsWith('k_proj.bias'));
    assertScoreTeeth(entries, 2);
  });

  test('learned positions: T beyond the table is an ArgumentError naming T', () => {
    const c = tinyConfig({ ...gpt2, attention: 'dense' });
    const model = Gpt.cpu(c);
    assert.throws(() => model.forward(randomIds(c.context + 1, c.vocabSize, 1), 1, c.context + 1), /T: expected at most context \(9\)/);
  });

  test('the parallel residual is not the sequential one (the flag is used)', () => {
    const c = tinyConfig({ ...neox, attention: 'dense' });
    const a = Gpt.cpu(c);
    fillParams(a.params, 4);
    const b = Gpt.cpu({ ...c, parallelResidual: false });
    b.params.flat.set(a.params.flat);
    const ids = randomIds(9, c.vocabSize, 2);
    a.forward(ids, 1, 9);
    b.forward(ids, 1, 9);
    let diff = 0;
    for (let i = 0; i < a.logits.length; i++) diff = Math.max(diff, Math.abs(a.logits[i] - b.logits[i]));
    assert.ok(diff > 1e-3, `logits differ by only ${diff}`);
  });
});

describe('Gpt: loss and gradient bookkeeping', () => {
  test('the loss is the float64 mean cross-entropy of the logits over targets that are not -1', () => {
    const c = tinyConfig();
    const { model, B, T, ids, targets } = setup(c);
    const loss = model.forward(ids, B, T, targets);
    const V = c.vocabSize;
    let sum = 0;
    let n = 0;
    for (let r = 0; r < B * T; r++) {
      if (targets[r] < 0) continue;
      let max = -Infinity;
      for (let v = 0; v < V; v++) max = Math.max(max, model.logits[r * V + v]);
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(model.logits[r * V + v] - max);
      sum += max + Math.log(z) - model.logits[r * V + targets[r]];
      n++;
    }
    assert.equal(n, B * T - 2);
    assert.ok(Math.abs(loss - sum / n) < 1e-5, `loss ${loss}, recomputed ${sum / n}`);
    assert.ok(Number.isNaN(model.forward(ids, B, T)), 'no targets: NaN');
  });

  test('backward accumulates into grads until zeroGrad', () => {
    const { model, B, T, ids, targets } = setup(tinyConfig());
    model.forward(ids, B, T, targets);
    model.zeroGrad();
    model.backward();
    const once = model.grads.flat.slice();
    model.backward();
    assert.ok(model.grads.flat.every((g, i) => Math.abs(g - 2 * once[i]) <= 1e-6 * (1 + Math.abs(once[i]))), 'second backward does not add');
    model.zeroGrad();
    assert.ok(model.grads.flat.every((g) => g === 0));
  });
});

describe('Gpt: training behaviour', () => {
  test('a tiny sparsek model overfits one batch with AdamW', () => {
    const c: ModelConfig = { ...tinyConfig(), vocabSize: 29, dim: 32, heads: 4, kvHeads: 2, ffnDim: 64, context: 16, k: 3, window: 4 };
    const model = Gpt.cpu(c);
    initParams(model.params, c, 3);
    const B = 4, T = 16;
    const ids = randomIds(B * T, c.vocabSize, 11);
    const targets = randomIds(B * T, c.vocabSize, 12);
    const views = model.params.views;
    const m = views.map((v) => new Float32Array(v.length));
    const v2 = views.map((v) => new Float32Array(v.length));
    const decay = model.params.specs.map((s) => s.decay);
    const first = model.forward(ids, B, T, targets);
    // Random targets: the start is near ln V, and only memorisation can bring it down.
    assert.ok(Math.abs(first - Math.log(c.vocabSize)) < 0.2, `initial loss ${first} vs ln V ${Math.log(c.vocabSize)}`);
    let loss = first;
    let step = 0;
    const started = performance.now();
    while (step < 300 && loss >= 0.1 * Math.log(c.vocabSize)) {
      model.zeroGrad();
      model.backward();
      adamwStep(views, model.grads.views, m, v2, ++step, { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0 }, decay);
      loss = model.forward(ids, B, T, targets);
    }
    const secs = (performance.now() - started) / 1000;
    assert.ok(loss < 0.1 * Math.log(c.vocabSize), `after ${step} steps the loss is ${loss} (start ${first})`);
    assert.ok(secs < 5, `overfitting took ${secs.toFixed(1)} s`);
  });

  test('two runs from the same seed give bit-identical losses; another seed does not', () => {
    const run = (seed: number) => {
      const c = tinyConfig({ vocabSize: 31, context: 12, k: 2, window: 3 });
      const model = Gpt.cpu(c);
      initParams(model.params, c, seed);
      const rng = new Rng(seed);
      const stream = Int32Array.from(randomIds(400, c.vocabSize, 5));
      const views = model.params.views;
      const m = views.map((v) => new Float32Array(v.length));
      const v2 = views.map((v) => new Float32Array(v.length));
      const decay = model.params.specs.map((s) => s.decay);
      const losses: number[] = [];
      for (let step = 1; step <= 15; step++) {
        const b = sampleBatch(stream, 3, c.context, rng);
        losses.push(model.forward(b.inputs, 3, c.context, b.targets));
        model.zeroGrad();
        model.backward();
        adamwStep(views, model.grads.views, m, v2, step, { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 }, decay);
      }
      return { losses, params: model.params.flat };
    };
    const a = run(7);
    const b = run(7);
    assert.deepEqual(a.losses, b.losses);
    assert.ok(a.params.every((x, i) => Object.is(x, b.params[i])), 'parameters differ bitwise');
    assert.ok(a.losses.every(Number.isFinite));
    const other = run(8);
    assert.notEqual(other.losses[0], a.losses[0], 'the seed has no effect');
  });
});
