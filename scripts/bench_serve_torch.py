#!/usr/bin/python3
"""PyTorch half of `make bench-serve`.

Generates greedily with a plain LLaMA-family decoder (RMSNorm, rotary
embeddings (rotate-half), grouped-query attention, SwiGLU MLP, LM head tied
to the embeddings; random weights, FP32) on the CPU with a KV cache: the
batch's prompts are prefilled together in one forward pass, whose last
position gives the first token, then every step decodes one token per
sequence against the cached keys and values. Prints one line:

    torch_tok_per_s <generated tokens / wall second, prefill included>
    ttft_p50_ms <ms> ttft_p99_ms <ms> (time from the start of the prefill to
    the first token, over every sequence of every timed run)
    torch_tok_per_cpu_s <generated tokens / second of the process's CPU time>
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.h, self.kv, self.hd = a.heads, a.kv_heads, a.hidden // a.heads
        self.q_proj = nn.Linear(a.hidden, self.h * self.hd, bias=False)
        self.k_proj = nn.Linear(a.hidden, self.kv * self.hd, bias=False)
        self.v_proj = nn.Linear(a.hidden, self.kv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.h * self.hd, a.hidden, bias=False)

    def forward(self, x, cos, sin, cache, pos):
        """x: [B, T, hidden] at positions pos..pos+T-1; cache: (K, V), each
        [B, kv_heads, max_len, head_dim], written at those positions."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        kc, vc = cache
        kc[:, :, pos:pos + t] = k
        vc[:, :, pos:pos + t] = v
        k, v = kc[:, :, :pos + t], vc[:, :, :pos + t]
        rep = self.h // self.kv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.hd))
        if t > 1:  # prefill: causal; a decode step (t == 1) sees every cached key
            s = s + torch.full((t, t), float("-inf")).triu(1)
        o = s.softmax(-1) @ v
        return self.o_proj(o.transpose(1, 2).reshape(b, t, self.h * self.hd))


class MLP(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.gate_proj = nn.Linear(a.hidden, a.inter, bias=False)
        self.up_proj = nn.Linear(a.hidden, a.inter, bias=False)
        self.down_proj = nn.Linear(a.inter, a.hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.input_layernorm = RMSNorm(a.hidden, a.eps)
        self.self_attn = Attention(a)
        self.post_attention_layernorm = RMSNorm(a.hidden, a.eps)
        self.mlp = MLP(a)

    def forward(self, x, cos, sin, cache, pos):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a
        self.embed_tokens = nn.Embedding(a.vocab, a.hidden)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.layers = nn.ModuleList(Layer(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.hidden, a.eps)
        hd = a.hidden // a.heads
        inv = 1.0 / (a.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        f = torch.outer(torch.arange(a.max_len, dtype=torch.float32), inv)
        emb = torch.cat((f, f), dim=-1)
        self.cos, self.sin = emb.cos(), emb.sin()

    def forward(self, ids, caches, pos):
        """Logits of the last position of ids ([B, T]) at positions pos.."""
        t = ids.shape[1]
        cos, sin = self.cos[pos:pos + t], self.sin[pos:pos + t]
        x = self.embed_tokens(ids)
        for layer, cache in zip(self.layers, caches):
            x = layer(x, cos, sin, cache, pos)
        x = self.norm(x[:, -1])
        return x @ self.embed_tokens.weight.t()  # tied LM head


def generate(m, prompts, new_tokens):
    """Greedy generation; returns (seconds to the first token, total seconds)."""
    a = m.a
    b, p = prompts.shape
    hd = a.hidden // a.heads
    caches = [(torch.empty(b, a.kv_heads, a.max_len, hd), torch.empty(b, a.kv_heads, a.max_len, hd))
              for _ in range(a.layers)]
    start = time.perf_counter()
    tok = m(prompts, caches, 0).argmax(-1, keepdim=True)
    first = time.perf_counter() - start
    for i in range(1, new_tokens):
        tok = m(tok, caches, p + i - 1).argmax(-1, keepdim=True)
    return first, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--inter", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--rope-theta", type=float, default=100000.0)
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--runs", type=int, default=1, help="timed generations (after one short warm-up)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    a.max_len = a.prompt + a.new
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    with torch.inference_mode():
        m = Model(a).eval()
        prompts = lambda seed: torch.randint(0, a.vocab, (a.batch, a.prompt),
                                             generator=torch.Generator().manual_seed(seed))
        generate(m, prompts(0), 4)  # warm-up: allocator, kernels
        ttft, tokens, secs, cpu = [], 0, 0.0, 0.0
        for r in range(a.runs):
            cpu0 = time.process_time()
            first, total = generate(m, prompts(r + 1), a.new)
            cpu += time.process_time() - cpu0
            ttft += [first] * a.batch
            tokens += a.batch * a.new
            secs += total
    ttft.sort()
    pct = lambda p: ttft[min(len(ttft) - 1, int(p * len(ttft)))] * 1e3
    print(f"torch_tok_per_s {tokens / secs:.1f} ttft_p50_ms {pct(0.5):.1f} ttft_p99_ms {pct(0.99):.1f}"
          f" torch_tok_per_cpu_s {tokens / cpu:.1f}")


if __name__ == "__main__":
    main()
