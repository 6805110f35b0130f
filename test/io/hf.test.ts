// Tests of Hugging Face folders (src/io/hf.ts) and loadModel (src/model/load.ts), issue 6.
// Oracles: reference logits computed by transformers (eager attention, float32, CPU) on tiny
// random checkpoints of each family, and the token ids of the `tokenizers` library, all made by
// scripts/make_hf_fixtures.py on the GPU machine and kept in test/fixtures/hf/<family>/
// (reference.json, format_version 1); hand-written config.json objects in the layouts of older
// and current transformers releases; corrupted copies of the fixtures for the errors.
// Tolerance: 1e-4 of the row's largest |logit| in float32 (issue 6). The bfloat16 checkpoint is
// compared at that tolerance with the logits of its own weights widened to float32, and more
// loosely (see BF16_TOL) with the float32 model it was rounded from.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../../src/model/load.js';
import { hfConfig, loadHfFolder, readHfWeights } from '../../src/io/hf.js';
import { readSafetensors, readSafetensorsHeader, writeSafetensors } from '../../src/io/safetensors.js';
import { saveRun } from '../../src/io/checkpoint.js';
import { ArgumentError, CheckpointError, DeviceError } from '../../src/core/errors.js';
import { Gpt } from '../../src/model/gpt.js';
import { headSize } from '../../src/model/config.js';
import type { ModelConfig } from '../../src/model/config.js';
import { DEFAULT_TRAIN } from '../../src/train/train.js';
import { ByteTokenizer } from '../../src/tokenizer/index.js';
import { cudaAvailability } from '../../src/cuda/runtime.js';
import { fillParams, tinyConfig } from '../model/fixtures.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'hf');
const FAMILIES = ['llama', 'qwen2', 'mistral', 'gpt2', 'gpt_neox'] as const;
const RTOL = 1e-4;
/**
 * bfloat16 keeps 8 significant bits: each weight moves by up to 2^-9 (0.2%) of itself, and the
 * errors of about 30 weights per output compound over two layers; measured 8.6e-3 of the row max
 * for this fixture. 3e-2 leaves room without hiding a wrong mapping, which errs by O(1).
 */
const BF16_TOL = 3e-2;

interface RefSequence {
  name: string;
  ids: number[];
  logits_shape: [number, number];
  logits_f32le_base64: string;
}
interface Reference {
  format_version: number;
  model_type: string;
  saved_dtype: 'float32' | 'bfloat16';
  sharded: boolean;
  sequences: RefSequence[];
  fp32_original?: RefSequence;
  tokenizer: { text: string; ids: number[]; decoded: string }[];
}

function reference(family: string): Reference {
  const ref = JSON.parse(fs.readFileSync(path.join(FIXTURES, family, 'reference.json'), 'utf8')) as Reference;
  assert.equal(ref.format_version, 1, `${family}/reference.json: format_version`);
  return ref;
}

function refLogits(s: RefSequence): Float32Array {
  const buf = Buffer.from(s.logits_f32le_base64, 'base64');
  const out = new Float32Array(buf.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = buf.readFloatLE(4 * i);
  assert.equal(out.length, s.logits_shape[0] * s.logits_shape[1]);
  return out;
}

/** max over rows of max_v |got - want| / max_v |want|. */
function worstRowError(got: Float32Array, want: Float32Array, V: number): number {
  assert.equal(got.length, want.length, 'logits length');
  let worst = 0;
  for (let r = 0; r < want.length / V; r++) {
    let scale = 0, err = 0;
    for (let v = 0; v < V; v++) {
      scale = Math.max(scale, Math.abs(want[r * V + v]));
      err = Math.max(err, Math.abs(got[r * V + v] - want[r * V + v]));
    }
    assert.ok(scale > 0.5, `row ${r}: reference logits are not trivially small`);
    worst = Math.max(worst, err / scale);
  }
  return worst;
}

const temps: string[] = [];
function tempCopy(family: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `sparsek-hf-${family}-`));
  temps.push(dir);
  for (const f of fs.readdirSync(path.join(FIXTURES, family))) fs.copyFileSync(path.join(FIXTURES, family, f), path.join(dir, f));
  return dir;
}
after(() => {
  for (const d of temps) fs.rmSync(d, { recursive: true, force: true });
});

async function rejects(p: Promise<unknown>, pattern: RegExp, file?: string): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    assert.ok(e instanceof CheckpointError, `expected a CheckpointError, got ${e.name}: ${e.message}`);
    assert.match(e.message, pattern);
    if (file) assert.ok(e.message.includes(file), `the message names ${file}: ${e.message}`);
    return true;
  });
}

describe('loadModel on Hugging Face checkpoints: logits match transformers (fp32, CPU)', () => {
  for (const family of FAMILIES) {
    test(`${family}: both sequences within ${RTOL} of the row max`, async () => {
      const ref = reference(family);
      const model = await loadModel(path.join(FIXTURES, family));
      assert.equal(model.source, ref.model_type);
      const V = model.config.vocabSize;
      for (const s of ref.sequences) {
        assert.equal(s.logits_shape[1], V);
        const got = await model.logits(s.ids);
        const err = worstRowError(got, refLogits(s), V);
        assert.ok(err <= RTOL, `${family} ${s.name} (T ${s.ids.length}): worst row error ${err.toExponential(2)} of the row max`);
      }
    });
  }

  test('the families really differ in what the loader must get right (each check has teeth)', async () => {
    // The same weights run with one architecture field flipped must miss the reference by far:
    // Mistral without its window, NeoX rotating whole heads or without the parallel residual,
    // Llama with the default rope theta. (GPT-2 with the exact GELU instead of gelu_new misses by
    // only ~2e-4 here: the two forms differ by < 1e-3 anywhere, so it is not in this list.)
    const cases: [string, Partial<ModelConfig>][] = [
      ['mistral', { attention: 'dense', window: 0 }],
      ['gpt_neox', { rotaryDims: undefined }],
      ['gpt_neox', { parallelResidual: false }],
      ['llama', { ropeTheta: 10000 }],
    ];
    for (const [family, over] of cases) {
      const hf = await loadHfFolder(path.join(FIXTURES, family));
      const c = { ...hf.config, ...over };
      const model = Gpt.cpu(c);
      model.params.flat.set(hf.params.flat);
      const s = reference(family).sequences[1];
      model.forward(s.ids, 1, s.ids.length);
      const err = worstRowError(model.logits.slice(0, s.ids.length * c.vocabSize), refLogits(s), c.vocabSize);
      assert.ok(err > 1e-2, `${family} with ${JSON.stringify(over)} still matches (${err.toExponential(2)})`);
    }
  });

  test('qwen2 in bfloat16: stored as BF16, within BF16_TOL of the float32 model it was rounded from', async () => {
    // (Against the logits of its own weights widened to float32 it is held to 1e-4 above.)
    const dir = path.join(FIXTURES, 'qwen2');
    const ref = reference('qwen2');
    assert.equal(ref.saved_dtype, 'bfloat16');
    const header = await readSafetensorsHeader(path.join(dir, 'model.safetensors'));
    assert.ok([...header.tensors.values()].every((t) => t.dtype === 'BF16'), 'every tensor is stored as BF16');
    const model = await loadModel(dir);
    const V = model.config.vocabSize;
    assert.ok(ref.fp32_original, 'reference.json has fp32_original');
    const orig = ref.fp32_original;
    const err = worstRowError(await model.logits(orig.ids), refLogits(orig), V);
    assert.ok(err <= BF16_TOL, `against the float32 original: ${err.toExponential(2)}`);
    assert.ok(err > 1e-5, 'the bf16 rounding shows (the original is a different model)');
  });

  test('llama is sharded: the index lists several shards, and every tensor is read from its shard', async () => {
    const dir = path.join(FIXTURES, 'llama');
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    const shards = new Set(Object.values(index.weight_map as Record<string, string>));
    assert.ok(shards.size >= 2, `${shards.size} shard(s)`);
    assert.ok(!fs.existsSync(path.join(dir, 'model.safetensors')));
    const w = await readHfWeights(dir);
    assert.equal(w.tensors.size, Object.keys(index.weight_map).length);
    for (const [name, file] of w.fileOf) assert.equal(path.basename(file), index.weight_map[name]);
  });
});

describe('Hugging Face tokenizers: ids as the tokenizers library gives them', () => {
  for (const family of FAMILIES) {
    test(`${family}: encode and decode of the reference texts`, async () => {
      const model = await loadModel(path.join(FIXTURES, family));
      for (const { text, ids, decoded } of reference(family).tokenizer) {
        assert.deepEqual(model.tokenizer.encode(text), ids, `encode(${JSON.stringify(text)})`);
        assert.equal(model.tokenizer.decode(ids), decoded, `decode of ${JSON.stringify(text)}`);
      }
    });
  }

  test('the llama tokenizer adds its BOS through the post-processor, as transformers does', async () => {
    const model = await loadModel(path.join(FIXTURES, 'llama'));
    const bos = reference('llama').tokenizer[0].ids[0];
    assert.equal(model.tokenizer.encode('the')[0], bos);
    assert.equal(model.tokenizer.encode('')[0], bos);
  });
});

describe('config.json layouts: older and current transformers read the same', () => {
  const gpt2Old = {
    activation_function: 'gelu_new', architectures: ['GPT2LMHeadModel'], attn_pdrop: 0.1, bos_token_id: 50256, embd_pdrop: 0.1,
    eos_token_id: 50256, initializer_range: 0.02, layer_norm_epsilon: 1e-5, model_type: 'gpt2', n_ctx: 1024, n_embd: 768,
    n_head: 12, n_layer: 12, n_positions: 1024, resid_pdrop: 0.1, summary_activation: null, vocab_size: 50257,
  };
  test('GPT-2: the original n_* names, and the hidden_size / num_* names', () => {
    const { modelType, config } = hfConfig(gpt2Old);
    assert.equal(modelType, 'gpt2');
    assert.deepEqual(
      [config.vocabSize, config.dim, config.layers, config.heads, config.kvHeads, config.ffnDim, config.context, config.normEps],
      [50257, 768, 12, 12, 12, 3072, 1024, 1e-5]);
    assert.equal(config.norm, 'layer');
    assert.equal(config.mlp, 'gelu_tanh');
    assert.equal(config.positions, 'learned');
    assert.equal(config.tieEmbeddings, true);
    const renamed = { model_type: 'gpt2', vocab_size: 50257, hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, max_position_embeddings: 1024, n_inner: 1000 };
    const c2 = hfConfig(renamed).config;
    assert.deepEqual([c2.dim, c2.layers, c2.heads, c2.context, c2.ffnDim], [768, 12, 12, 1024, 1000]);
    assert.equal(hfConfig({ ...gpt2Old, activation_function: 'gelu' }).config.mlp, 'gelu');
  });

  test('GPT-NeoX (Pythia): rotary_pct / rotary_emb_base and rope_parameters give the same config', () => {
    const common = {
      model_type: 'gpt_neox', vocab_size: 50304, hidden_size: 512, num_hidden_layers: 6, num_attention_heads: 8,
      intermediate_size: 2048, max_position_embeddings: 2048, hidden_act: 'gelu', layer_norm_eps: 1e-5,
      use_parallel_residual: true, tie_word_embeddings: false,
    };
    const old = hfConfig({ ...common, rotary_pct: 0.25, rotary_emb_base: 10000, rope_scaling: null }).config;
    const cur = hfConfig({ ...common, rope_parameters: { rope_type: 'default', rope_theta: 10000.0, partial_rotary_factor: 0.25 } }).config;
    assert.deepEqual(old, cur);
    assert.equal(old.rotaryDims, 16); // int(64 * 0.25)
    assert.equal(old.parallelResidual, true);
    assert.equal(old.mlp, 'gelu');
    assert.equal(old.tieEmbeddings, false);
    // defaults: rotary_pct 0.25, parallel residual on
    const bare = hfConfig({ model_type: 'gpt_neox', vocab_size: 100, hidden_size: 64, num_hidden_layers: 1, num_attention_heads: 4, intermediate_size: 128, max_position_embeddings: 64 }).config;
    assert.equal(bare.rotaryDims, 4);
    assert.equal(bare.parallelResidual, true);
  });

  test('Llama: rope_theta at the top level and in rope_parameters; num_key_value_heads defaults to heads', () => {
    const common = {
      model_type: 'llama', vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32,
      num_attention_heads: 32, max_position_embeddings: 4096, rms_norm_eps: 1e-5, hidden_act: 'silu',
    };
    const old = hfConfig({ ...common, rope_theta: 500000.0, rope_scaling: null, num_key_value_heads: 8 }).config;
    const cur = hfConfig({ ...common, rope_parameters: { rope_type: 'default', rope_theta: 500000.0 }, num_key_value_heads: 8 }).config;
    assert.deepEqual(old, cur);
    assert.equal(old.ropeTheta, 500000);
    assert.equal(old.kvHeads, 8);
    assert.equal(old.tieEmbeddings, false);
    assert.equal(old.attention, 'dense');
    const mha = hfConfig(common).config;
    assert.equal(mha.kvHeads, 32);
    assert.equal(mha.ropeTheta, 10000);
    const biased = hfConfig({ ...common, attention_bias: true, mlp_bias: true }).config;
    assert.deepEqual([biased.qkvBias, biased.outBias, biased.mlpBias], [true, true, true]);
  });

  test('Qwen2 and Mistral: which sliding windows become window attention', () => {
    const qwen = {
      model_type: 'qwen2', vocab_size: 1000, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 4,
      num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 32768,
    };
    // Qwen2 checkpoints carry sliding_window: 4096 with use_sliding_window false: full attention.
    const q0 = hfConfig({ ...qwen, sliding_window: 4096, use_sliding_window: false, max_window_layers: 28 }).config;
    assert.equal(q0.attention, 'dense');
    assert.equal(q0.qkvBias, true);
    assert.equal(q0.outBias, false);
    const q1 = hfConfig({ ...qwen, sliding_window: 256, use_sliding_window: true, max_window_layers: 0 }).config;
    assert.deepEqual([q1.attention, q1.window], ['window', 256]);
    assert.throws(() => hfConfig({ ...qwen, sliding_window: 256, use_sliding_window: true, max_window_layers: 2 }, 'q/config.json'),
      (e: Error) => e instanceof CheckpointError && /some layers use sliding-window attention/.test(e.message) && e.message.startsWith('q/config.json'));
    const mistral = { ...qwen, model_type: 'mistral' };
    assert.deepEqual([hfConfig({ ...mistral, sliding_window: 4096 }).config.attention, hfConfig({ ...mistral, sliding_window: 4096 }).config.window], ['window', 4096]);
    assert.equal(hfConfig({ ...mistral, sliding_window: null }).config.attention, 'dense');
    assert.equal(hfConfig({ ...mistral, sliding_window: 4096 }).config.qkvBias, false);
    assert.equal(hfConfig({ ...mistral, sliding_window: 64, layer_types: ['sliding_attention', 'sliding_attention', 'sliding_attention', 'sliding_attention'] }).config.window, 64);
    assert.throws(() => hfConfig({ ...mistral, sliding_window: 64, layer_types: ['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention'] }), CheckpointError);
  });

  const llama = {
    model_type: 'llama', vocab_size: 100, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2,
    num_attention_heads: 4, max_position_embeddings: 256,
  };
  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['unknown model_type', { ...llama, model_type: 'bert' }, /field 'model_type' = "bert": unknown model type \(supported: llama, mistral, qwen2, gpt2, gpt_neox\)/],
    ['no model_type', { hidden_size: 64 }, /missing field 'model_type'/],
    ['missing hidden_size', { ...llama, hidden_size: undefined }, /missing field 'hidden_size'/],
    ['missing n_embd (gpt2)', { model_type: 'gpt2', vocab_size: 100, n_layer: 2, n_head: 4, n_positions: 64 }, /missing field 'n_embd' \(or 'hidden_size'\)/],
    ['missing intermediate_size', { ...llama, intermediate_size: undefined }, /missing field 'intermediate_size'/],
    ['hidden_size not an integer', { ...llama, hidden_size: '64' }, /field 'hidden_size': expected an integer >= 1, got "64"/],
    ['linear rope scaling', { ...llama, rope_scaling: { type: 'linear', factor: 2 } }, /field 'rope_scaling'.*rope type 'linear' is not supported/],
    ['llama3 rope_parameters', { ...llama, rope_parameters: { rope_type: 'llama3', rope_theta: 500000, factor: 8 } }, /field 'rope_parameters'.*rope type 'llama3'/],
    ['a head_dim of its own', { ...llama, head_dim: 32 }, /field 'head_dim' = 32: a head size other than/],
    ['an unknown activation', { ...llama, hidden_act: 'relu' }, /field 'hidden_act' = "relu": activation 'relu' is not supported/],
    ['gpt2 per-layer attention scaling', { ...gpt2Old, scale_attn_by_inverse_layer_idx: true }, /scale_attn_by_inverse_layer_idx/],
    ['neox rotary dims odd', { model_type: 'gpt_neox', vocab_size: 100, hidden_size: 48, num_hidden_layers: 1, num_attention_heads: 4, intermediate_size: 96, max_position_embeddings: 64 }, /rotary dimensions int\(12 \* 0.25\) = 3/],
    ['heads not dividing hidden', { ...llama, num_attention_heads: 5 }, /not valid here: dim: expected a multiple of heads/],
  ];
  for (const [what, raw, pattern] of bad) {
    test(`CheckpointError naming the file and field: ${what}`, () => {
      assert.throws(() => hfConfig(raw, 'some/config.json'), (e: Error) => {
        assert.ok(e instanceof CheckpointError, `${e.name}: ${e.message}`);
        assert.ok(e.message.startsWith('some/config.json: '), e.message);
        assert.match(e.message, pattern);
        return true;
      });
    });
  }
});

describe('Hugging Face folders: missing, unexpected and misplaced files and tensors', () => {
  test('a missing tensor is named with its expected shape; an extra one is refused', async () => {
    const dir = tempCopy('gpt2');
    const file = path.join(dir, 'model.safetensors');
    const st = await readSafetensors(file);
    const name = [...st.tensors.keys()].find((n) => n.endsWith('h.1.mlp.c_fc.bias'));
    assert.ok(name, 'the fixture has h.1.mlp.c_fc.bias');
    const without = new Map(st.tensors);
    without.delete(name);
    await writeSafetensors(file, without);
    await rejects(loadModel(dir), new RegExp(`missing tensor '${name.replace(/\./g, '\\.')}' of shape \\[128\\]`), 'model.safetensors');
    const extra = new Map(st.tensors);
    extra.set('transformer.h.0.mlp.gate.weight', { dtype: 'F32', shape: [2], data: new Float32Array(2) });
    await writeSafetensors(file, extra);
    await rejects(loadModel(dir), /unexpected tensor 'transformer\.h\.0\.mlp\.gate\.weight' \(not part of a gpt2 model/, 'model.safetensors');
  });

  test('a tensor of the wrong shape or an integer dtype is refused', async () => {
    const dir = tempCopy('mistral');
    const file = path.join(dir, 'model.safetensors');
    const st = await readSafetensors(file);
    const bad = new Map(st.tensors);
    bad.set('model.norm.weight', { dtype: 'F32', shape: [31], data: new Float32Array(31) });
    await writeSafetensors(file, bad);
    await rejects(loadModel(dir), /tensor 'model\.norm\.weight' has shape \[31\], the config needs \[32\]/);
    bad.set('model.norm.weight', { dtype: 'I32', shape: [32], data: new Int32Array(32) });
    await writeSafetensors(file, bad);
    await rejects(loadModel(dir), /tensor 'model\.norm\.weight' has dtype I32; expected F32, F16 or BF16/);
  });

  test('a shard that is missing, or a tensor in another shard than the index says', async () => {
    const dir = tempCopy('llama');
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
    const names = Object.keys(index.weight_map);
    const shards = [...new Set(Object.values(index.weight_map as Record<string, string>))].sort();
    // a tensor that shares its shard with others, listed in another shard
    const count = (shard: string) => names.filter((n) => index.weight_map[n] === shard).length;
    const home = shards.find((s) => count(s) >= 2)!;
    const other = shards.find((s) => s !== home)!;
    const moved = names.find((n) => index.weight_map[n] === home)!;
    fs.writeFileSync(indexFile, JSON.stringify({ ...index, weight_map: { ...index.weight_map, [moved]: other } }));
    await rejects(loadModel(dir), new RegExp(`tensor '${moved.replace(/\./g, '\\.')}' is here, but the index puts it in "${other}"`), home);
    // a shard's only tensor listed elsewhere: that shard is no longer read, and the tensor is missing where the index says
    const lone = shards.find((s) => count(s) === 1);
    if (lone) {
      const name = names.find((n) => index.weight_map[n] === lone)!;
      const elsewhere = shards.find((s) => s !== lone)!;
      fs.writeFileSync(indexFile, JSON.stringify({ ...index, weight_map: { ...index.weight_map, [name]: elsewhere } }));
      await rejects(loadModel(dir), /not found \(the index says it is here\)|is here, but the index puts it in/, elsewhere);
    }
    fs.writeFileSync(indexFile, JSON.stringify(index));
    fs.rmSync(path.join(dir, shards[1]));
    await rejects(loadModel(dir), /file not found \(listed in model\.safetensors\.index\.json\)/, shards[1]);
  });

  test('no weights at all, a PyTorch .bin, no tokenizer, a broken config.json', async () => {
    const dir = tempCopy('qwen2');
    fs.rmSync(path.join(dir, 'model.safetensors'));
    await rejects(loadModel(dir), /model\.safetensors: file not found/);
    fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), 'x');
    await rejects(loadModel(dir), /PyTorch pickle this loader does not read/);
    const dir2 = tempCopy('qwen2');
    fs.rmSync(path.join(dir2, 'tokenizer.json'));
    await rejects(loadModel(dir2), /tokenizer\.json: file not found/);
    fs.writeFileSync(path.join(dir2, 'config.json'), '{"model_type": "qwen2", ');
    await rejects(loadModel(dir2), /config\.json: not valid JSON/);
    await rejects(loadModel(path.join(dir2, 'nope')), /not a folder/);
  });
});

describe('loadModel on a sparsek run folder, and its argument checks', () => {
  test('a run written without the architecture fields loads as the native model; an unknown key is refused', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparsek-run-'));
    temps.push(dir);
    const c = tinyConfig({ vocabSize: 256, attention: 'dense' });
    const model = Gpt.cpu(c);
    fillParams(model.params, 9);
    await saveRun(dir, {
      model: c, train: DEFAULT_TRAIN, params: model.params, m: null, v: null, step: 0, rng: [1, 2, 3, 4], elapsedSeconds: 0,
      tokenizer: new ByteTokenizer(),
    }, []);
    const written = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    assert.ok(!('norm' in written.model) && !('tieEmbeddings' in written.model), 'an old-style config');
    const loaded = await loadModel(dir);
    assert.equal(loaded.source, 'sparsek-run');
    assert.deepEqual(loaded.tokenizer.encode('hi'), [104, 105]);
    const ids = [3, 1, 4, 1, 5, 9, 2];
    model.forward(ids, 1, ids.length);
    assert.deepEqual(await loaded.logits(ids), model.logits.slice(0, ids.length * c.vocabSize));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...written, model: { ...written.model, flashAttention: true } }));
    await rejects(loadModel(dir), /invalid model config: model config key 'flashAttention'/, 'config.json');
  });

  test('bad devices and bad ids', async () => {
    // @ts-expect-error: a device name that does not exist
    await assert.rejects(loadModel(path.join(FIXTURES, 'gpt2'), { device: 'tpu' }), DeviceError);
    const m = await loadModel(path.join(FIXTURES, 'gpt2'));
    await assert.rejects(m.logits([]), ArgumentError);
    await assert.rejects(m.logits([1, m.config.vocabSize]), (e: Error) => e instanceof ArgumentError && /ids\[1\]/.test(e.message));
    await assert.rejects(m.logits([1, 2.5]), ArgumentError);
    // GPT-2's learned positions end at n_positions (64 here)
    await assert.rejects(m.logits(new Array(m.config.context + 1).fill(1)), (e: Error) => e instanceof ArgumentError && /at most context/.test(e.message));
    const one = await m.logits([7]);
    assert.equal(one.length, m.config.vocabSize);
    assert.ok(headSize(m.config) > 0);
  });
});

const avail = cudaAvailability();
describe('loadModel on CUDA: the same references', { skip: avail.available ? false : `no CUDA device: ${avail.reason}` }, () => {
  for (const family of FAMILIES) {
    test(`${family}: within ${RTOL} of transformers and of the CPU`, async () => {
      const ref = reference(family);
      const gpu = await loadModel(path.join(FIXTURES, family), { device: 'cuda' });
      const cpu = await loadModel(path.join(FIXTURES, family));
      const V = gpu.config.vocabSize;
      try {
        for (const s of ref.sequences) {
          const got = await gpu.logits(s.ids);
          const err = worstRowError(got, refLogits(s), V);
          const vsCpu = worstRowError(got, await cpu.logits(s.ids), V);
          console.log(`cuda ${family} ${s.name}: vs transformers ${err.toExponential(2)}, vs cpu ${vsCpu.toExponential(2)}`);
          assert.ok(err <= RTOL, `${family} ${s.name}: ${err.toExponential(2)}`);
        }
      } finally {
        gpu.dispose();
      }
    });
  }
});
