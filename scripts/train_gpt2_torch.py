#!/usr/bin/env python3
"""The PyTorch peer for sparsek's GPU training benchmark (bench/RESULTS.md, issue 4).

A straightforward nanoGPT-style model with the same architecture as sparsek's (RMSNorm pre-norm,
rotary positions in the Hugging Face rotate_half convention, SwiGLU MLP, tied embeddings, grouped
KV heads) and dense causal attention through torch's scaled_dot_product_attention (the flash
backend on Hopper). It trains on random tokens: the benchmark measures speed, not learning.
Prints one JSON line per configuration: tokens/s of forward + backward + AdamW, median of timed steps.

Usage: python3 scripts/train_gpt2_torch.py --T 4096 --B 1 --layers 12 --dim 768 --heads 12 --dtype fp32 bf16
"""
import argparse, json, math, time
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--T", type=int, default=4096)
p.add_argument("--B", type=int, default=1)
p.add_argument("--layers", type=int, default=12)
p.add_argument("--dim", type=int, default=768)
p.add_argument("--heads", type=int, default=12)
p.add_argument("--kv-heads", type=int, default=12)
p.add_argument("--ffn", type=int, default=2048)
p.add_argument("--vocab", type=int, default=4096)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--dtype", nargs="+", default=["fp32", "bf16"])
p.add_argument("--compile", action="store_true")
a = p.parse_args()
dev = "cuda"


class Rope:
    def __init__(self, T, hs, theta=10000.0):
        inv = theta ** (-torch.arange(0, hs, 2, dtype=torch.float32, device=dev) / hs)
        ang = torch.outer(torch.arange(T, dtype=torch.float32, device=dev), inv)
        self.cos = torch.cat([ang.cos(), ang.cos()], -1)
        self.sin = torch.cat([ang.sin(), ang.sin()], -1)

    def __call__(self, x):  # x: (B, H, T, hs)
        h = x.shape[-1] // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], -1)
        return x * self.cos.to(x.dtype) + rot * self.sin.to(x.dtype)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        C, hs = a.dim, a.dim // a.heads
        self.ln1, self.ln2 = nn.RMSNorm(C, eps=1e-5), nn.RMSNorm(C, eps=1e-5)
        self.q = nn.Linear(C, a.heads * hs, bias=False)
        self.kv = nn.Linear(C, 2 * a.kv_heads * hs, bias=False)
        self.o = nn.Linear(a.heads * hs, C, bias=False)
        self.gate_up = nn.Linear(C, 2 * a.ffn, bias=False)
        self.down = nn.Linear(a.ffn, C, bias=False)

    def forward(self, x, rope):
        B, T, C = x.shape
        hs = C // a.heads
        h = self.ln1(x)
        q = self.q(h).view(B, T, a.heads, hs).transpose(1, 2)
        k, v = self.kv(h).view(B, T, 2, a.kv_heads, hs).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True, enable_gqa=a.kv_heads != a.heads)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, C))
        g, u = self.gate_up(self.ln2(x)).chunk(2, -1)
        return x + self.down(F.silu(g) * u)


class Gpt(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(a.vocab, a.dim)
        self.blocks = nn.ModuleList([Block() for _ in range(a.layers)])
        self.lnf = nn.RMSNorm(a.dim, eps=1e-5)
        self.rope = Rope(a.T, a.dim // a.heads)

    def forward(self, ids, targets):
        x = self.wte(ids)
        for b in self.blocks:
            x = b(x, self.rope)
        logits = self.lnf(x) @ self.wte.weight.T
        return F.cross_entropy(logits.float().view(-1, a.vocab), targets.view(-1))


torch.backends.cuda.matmul.allow_tf32 = False  # true fp32, as sparsek's fp32 path
torch.backends.cudnn.allow_tf32 = False
for dtype in a.dtype:
    torch.manual_seed(0)
    model = Gpt().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    step_fn = torch.compile(model) if a.compile else model
    ids = torch.randint(0, a.vocab, (a.B, a.T), device=dev)
    tgt = torch.randint(0, a.vocab, (a.B, a.T), device=dev)
    times = []
    for s in range(a.steps + 3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = step_fn(ids, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if s >= 3:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"peer": "pytorch-sdpa", "dtype": dtype, "compile": a.compile, "T": a.T, "B": a.B,
                      "params": n_params, "ms_per_step": round(med * 1e3, 2), "tokens_per_s": round(a.B * a.T / med),
                      "device": torch.cuda.get_device_name(), "torch": torch.__version__}))
    del model, opt
    torch.cuda.empty_cache()
