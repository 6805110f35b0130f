#!/usr/bin/env python3
"""Makes the tiny Hugging Face checkpoints of test/fixtures/hf/<family>/ and their reference logits.

Issue 6 (loadModel for Hugging Face folders): our forward must match transformers to 1e-4 relative
in fp32. For each family this writes a folder as `save_pretrained` writes it (config.json,
model.safetensors or shards + model.safetensors.index.json, generation_config.json), a tiny byte-level
BPE tokenizer (tokenizer.json, tokenizer_config.json) trained here with the `tokenizers` library,
and reference.json: the logits transformers computes (eager attention, float32, CPU) for two fixed
token sequences, and what the tokenizer makes of a few texts.

  llama     GQA (4 query heads, 2 KV heads), untied head, rope_theta 500000, sharded (max_shard_size),
            a tokenizer whose post-processor adds a BOS token
  qwen2     q/k/v biases, tied head, rope_theta 1e6, saved in bfloat16: its reference logits are those
            of the bfloat16 weights cast to float32 (exact in float32, so 1e-4 still applies), and
            `fp32_original` holds the logits of the float32 model before rounding (loose tolerance)
  mistral   sliding_window 8 < the sequence lengths, one KV head (MQA), untied head
  gpt2      learned positions, LayerNorm, gelu_new, Conv1D weights, tied head
  gpt_neox  rotary_pct 0.25 (4 of 16 head features), parallel residual, exact gelu, untied embed_out

Weights are drawn with standard deviation 1/sqrt(fan_in) (token embeddings 1, GPT-2's position table
0.5, norm weights 1 + 0.1 z, biases 0.1 z) rather than with transformers' init, so that attention is
far from uniform and every bias and norm weight matters. Run on the GPU machine (CPU execution, float32, seeded):

    python3 scripts/make_hf_fixtures.py --out DIR [--archive FILE.tar.gz]

reference.json: format_version 1; logits are float32 little-endian, row-major (T, V), base64.
"""

import argparse
import base64
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import traceback

import numpy as np
import torch
import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

FORMAT_VERSION = 1
VOCAB = 320  # model vocabulary (the tokenizer uses at most 300 of the ids)
TOKENIZER_VOCAB = 300

CORPUS = """Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans: the state of our
union is strong. We gather tonight knowing that this generation of Americans has been tested by
crisis and proven worthy of our founders' faith. The nation is at peace, and our economy grows.
In the year ahead we will build new roads and bridges, open new markets for our farmers and
workers, and give every child a fair chance to learn. Government must be lean and honest; the
people must be free to speak, to trade and to worship as they choose. Let us work together, as
Republicans and Democrats, so that the promise of this country reaches every citizen, in every
state, in every town. The union of these states was formed to secure the blessings of liberty to
ourselves and our posterity, and that work is never finished. Thank you, God bless you, and may
God bless the United States of America."""

TOKENIZER_TEXTS = [
    "the state of the union",
    " Mr. Speaker, the nation is at peace.",
    "naïve café — 42 tokens!\nA new line\tand a tab",
    "Ünïcödé ≠ ASCII 🙂",
    "",
]

SEQ_B_TEXT = ("The union of these states was formed to secure the blessings of liberty; "
              "let us work together so that the promise of this country reaches every citizen.")


def log(*a):
    print(*a, flush=True)


def major_version():
    return int(transformers.__version__.split(".")[0])


def rope_kwargs(theta, partial=None, neox=False):
    """Rotary settings in the layout this transformers release expects."""
    if major_version() >= 5:
        rp = {"rope_type": "default", "rope_theta": float(theta)}
        if partial is not None:
            rp["partial_rotary_factor"] = float(partial)
        return {"rope_parameters": rp}
    if neox:
        return {"rotary_emb_base": theta, "rotary_pct": partial}
    return {"rope_theta": float(theta)}


def make_tokenizer(bos):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>"] + (["<s>"] if bos else [])
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB, min_frequency=2, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS.split("\n"), trainer=trainer)
    if bos:
        bos_id = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)])
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    return tok


def save_tokenizer(tok, folder, bos):
    tok.save(os.path.join(folder, "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1024,
    }
    if bos:
        cfg["bos_token"] = "<s>"
        cfg["add_bos_token"] = True
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def randomize(model, seed):
    """Matrices z / sqrt(fan_in), embeddings z, norm weights 1 + 0.1 z, biases 0.1 z (z standard normal)."""
    g = torch.Generator().manual_seed(seed)
    heads = {"lm_head.weight", "embed_out.weight"}
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if p.ndim == 1:
                p.copy_(0.1 * r if name.endswith("bias") else 1 + 0.1 * r)
            elif name in heads:
                p.copy_(r / p.shape[1] ** 0.5)
            elif "wpe" in name:
                p.copy_(0.5 * r)
            elif "embed" in name or "wte" in name:
                p.copy_(r)
            else:
                module = model.get_submodule(name.rsplit(".", 1)[0])
                fan_in = p.shape[0] if type(module).__name__ == "Conv1D" else p.shape[1]
                p.copy_(r / fan_in ** 0.5)


def load_fp32(folder):
    """The saved folder, loaded back by transformers in float32 with eager attention."""
    from transformers import AutoModelForCausalLM
    try:
        m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        m = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager")
    m.eval()
    for n, p in m.named_parameters():
        assert p.dtype == torch.float32, (n, p.dtype)
    return m


def logits_of(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long)).logits[0]
    return out.to(torch.float32).contiguous().numpy()


def encode_logits(ids, logits):
    arr = np.ascontiguousarray(logits, dtype="<f4")
    return {"ids": [int(i) for i in ids], "logits_shape": list(arr.shape),
            "logits_f32le_base64": base64.b64encode(arr.tobytes()).decode("ascii")}


def family_specs():
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, MistralConfig, Qwen2Config
    common = dict(vocab_size=VOCAB, bos_token_id=None, eos_token_id=0, pad_token_id=None)
    return [
        dict(name="llama", seed=11, bos=True, shard="40KB", bf16=False, config=LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False, attention_dropout=0.0,
            **rope_kwargs(500000.0), **common)),
        dict(name="qwen2", seed=12, bos=False, shard=None, bf16=True, config=Qwen2Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
            attention_dropout=0.0, **rope_kwargs(1000000.0), **common)),
        dict(name="mistral", seed=13, bos=False, shard=None, bf16=False, config=MistralConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
            max_position_embeddings=128, sliding_window=8, rms_norm_eps=1e-5, tie_word_embeddings=False,
            attention_dropout=0.0, **rope_kwargs(10000.0), **common)),
        dict(name="gpt2", seed=14, bos=False, shard=None, bf16=False, config=GPT2Config(
            n_positions=64, n_embd=32, n_layer=2, n_head=4, activation_function="gelu_new", layer_norm_epsilon=1e-5,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)),
        dict(name="gpt_neox", seed=15, bos=False, shard=None, bf16=False, config=GPTNeoXConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=128, use_parallel_residual=True, hidden_act="gelu", layer_norm_eps=1e-5,
            tie_word_embeddings=False, attention_dropout=0.0, hidden_dropout=0.0,
            **rope_kwargs(10000.0, partial=0.25, neox=True), **common)),
    ]


def make_family(spec, out, tmp):
    from transformers import AutoModelForCausalLM
    name = spec["name"]
    folder = os.path.join(out, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    torch.manual_seed(spec["seed"])
    config = spec["config"]
    try:
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    except TypeError:
        model = AutoModelForCausalLM.from_config(config)
    model = model.to(torch.float32)
    randomize(model, spec["seed"])
    model.eval()

    tok = make_tokenizer(spec["bos"])
    gen = torch.Generator().manual_seed(spec["seed"] + 1000)
    seq_a = torch.randint(0, VOCAB, (17,), generator=gen).tolist()
    seq_b = tok.encode(SEQ_B_TEXT).ids[:40]
    assert len(seq_b) == 40, len(seq_b)

    fp32_original = None
    if spec["bf16"]:
        plain = os.path.join(tmp, name + "-fp32")
        model.save_pretrained(plain, safe_serialization=True)
        fp32_original = encode_logits(seq_a, logits_of(load_fp32(plain), seq_a))
        model = model.to(torch.bfloat16)
    kwargs = {"safe_serialization": True}
    if spec["shard"]:
        kwargs["max_shard_size"] = spec["shard"]
    model.save_pretrained(folder, **kwargs)
    save_tokenizer(tok, folder, spec["bos"])

    ref_model = load_fp32(folder)
    if getattr(ref_model.config, "tie_word_embeddings", False):
        assert ref_model.get_output_embeddings().weight.data_ptr() == ref_model.get_input_embeddings().weight.data_ptr(), "head not tied"
    sequences = [dict(name="random17", **encode_logits(seq_a, logits_of(ref_model, seq_a))),
                 dict(name="text40", **encode_logits(seq_b, logits_of(ref_model, seq_b)))]
    ref = {
        "format_version": FORMAT_VERSION,
        "generator": "scripts/make_hf_fixtures.py",
        "model_type": config.model_type,
        "saved_dtype": "bfloat16" if spec["bf16"] else "float32",
        "sharded": bool(spec["shard"]),
        "attn_implementation": "eager",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "tokenizers": tokenizers.__version__, "python": platform.python_version()},
        "sequences": sequences,
        "tokenizer": [{"text": t, "ids": tok.encode(t).ids, "decoded": tok.decode(tok.encode(t).ids, skip_special_tokens=False)}
                      for t in TOKENIZER_TEXTS],
    }
    if fp32_original is not None:
        ref["fp32_original"] = dict(name="random17", note="logits of the float32 model before its weights were rounded to bfloat16", **fp32_original)
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    files = sorted(os.listdir(folder))
    log(f"{name}: {files}, {sum(os.path.getsize(os.path.join(folder, x)) for x in files)} bytes")
    log(f"{name}: config.json = {open(os.path.join(folder, 'config.json')).read()}")
    from safetensors import safe_open
    for fn in files:
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(folder, fn), "pt") as st:
                log(f"{name}: {fn}: " + ", ".join(f"{k}{list(st.get_slice(k).get_shape())}:{st.get_slice(k).get_dtype()}" for k in st.keys()))
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder to write <family>/ folders into")
    ap.add_argument("--archive", help="also write the whole tree as this .tar.gz")
    ap.add_argument("--only", nargs="*", help="families to make (default: all)")
    args = ap.parse_args()
    log(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
    torch.set_num_threads(1)  # deterministic reductions
    os.makedirs(args.out, exist_ok=True)
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in family_specs():
            if args.only and spec["name"] not in args.only:
                continue
            try:
                make_family(spec, args.out, tmp)
            except Exception:
                failed.append(spec["name"])
                log(f"{spec['name']}: FAILED\n{traceback.format_exc()}")
    if args.archive:
        os.makedirs(os.path.dirname(os.path.abspath(args.archive)), exist_ok=True)
        with tarfile.open(args.archive, "w:gz") as tar:
            tar.add(args.out, arcname="hf")
        log(f"archive {args.archive}: {os.path.getsize(args.archive)} bytes")
    if failed:
        log(f"failed: {failed}")
        sys.exit(1)


if __name__ == "__main__":
    main()
