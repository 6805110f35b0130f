// Export to a Hugging Face-style folder (SPEC.md section 7, `sparsek export`): model.safetensors
// with Llama's tensor names (ours are Llama's, src/model/params.ts; score_proj rides along),
// config.json with model_type llama plus a "sparsek" block { attention, k, window, scoreSlope },
// and the tokenizer. src/io/hf.ts reads the folder back. Only the Llama block is exported: other
// families (GPT-2, NeoX, Qwen2's q/k/v-only biases) are refused with an ArgumentError naming them.

import fs from 'node:fs';
import path from 'node:path';
import { ArgumentError } from '../core/errors.js';
import { ModelConfig, arch, headSize, isLlamaBlock } from '../model/config.js';
import type { Params } from '../model/params.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { saveTokenizer } from '../tokenizer/index.js';
import { writeFileAtomic } from './atomic.js';
import { HfTokenizer } from './hf.js';
import { SafeTensor, writeSafetensors } from './safetensors.js';

/** The Hugging Face config.json object of a Llama-block model. */
export function llamaConfigJson(c: ModelConfig): Record<string, unknown> {
  const a = arch(c);
  if (!isLlamaBlock(c)) {
    const family = a.positions === 'learned' ? 'gpt2-style (LayerNorm, learned positions)' : a.parallelResidual || a.norm === 'layer' ? 'gpt_neox-style (LayerNorm, parallel residual, partial rotary)' : `${a.norm} norm, ${a.mlp} MLP`;
    throw new ArgumentError('model architecture', 'a Llama-family model (RMSNorm, SwiGLU, full rotary) to export', family);
  }
  if (a.qkvBias !== a.outBias) throw new ArgumentError('model architecture', 'q, k, v and o biases all present or all absent (Llama attention_bias)', 'qwen2-style q/k/v biases');
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: c.vocabSize,
    hidden_size: c.dim,
    intermediate_size: c.ffnDim,
    num_hidden_layers: c.layers,
    num_attention_heads: c.heads,
    num_key_value_heads: c.kvHeads,
    head_dim: headSize(c),
    max_position_embeddings: c.context,
    hidden_act: 'silu',
    rms_norm_eps: c.normEps,
    rope_theta: c.ropeTheta,
    attention_bias: a.qkvBias,
    mlp_bias: a.mlpBias,
    tie_word_embeddings: a.tieEmbeddings,
    torch_dtype: 'float32',
    sparsek: { attention: c.attention, k: c.k, window: c.window, scoreSlope: c.scoreSlope },
  };
}

/**
 * Writes dir/config.json, dir/model.safetensors, dir/tokenizer.json (+ tokenizer_config.json).
 * @example
 *   const run = await loadRun('runs/demo'); await exportHf('out/hf', run.model, run.params, run.tokenizer);
 */
export async function exportHf(dir: string, config: ModelConfig, params: Params, tokenizer: Tokenizer | null): Promise<void> {
  const cfg = llamaConfigJson(config);
  fs.mkdirSync(dir, { recursive: true });
  const tensors: Record<string, SafeTensor> = {};
  params.specs.forEach((s, i) => {
    tensors[s.name] = { dtype: 'F32', shape: s.shape, data: params.views[i] };
  });
  await writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  if (tokenizer) {
    await saveTokenizer(path.join(dir, 'tokenizer.json'), tokenizer);
    if (tokenizer instanceof HfTokenizer) await writeFileAtomic(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizer.config, null, 2) + '\n');
  }
  await writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
}
