#!/usr/bin/env python3
"""PyTorch half of `make bench-gpu`.

Times one LoRA training step (forward, backward, gradient-norm clipping at
1.0, AdamW on the LoRA parameters only) of a LLaMA-family decoder on the
GPU in eager mode, float32, with the shapes of fedtune's
BenchmarkLoRAStepGPU. The model is scripts/bench_train_torch.py's
hand-written decoder (RMSNorm, rotate-half rotary embeddings, grouped-query
attention, SwiGLU, untied head, LoRA on q_proj and v_proj), moved to CUDA.

TF32 is switched off for matmuls so that PyTorch does the float32 arithmetic
fedtune's cuBLAS calls do. --attention picks the attention: "matmul" (the
default: q·kᵀ, masked softmax, ·v as separate kernels, what fedtune does) or
"sdpa" (torch's fused scaled_dot_product_attention, for reference).
Prints one line:

    torch_tok_per_s <tokens per second> step_ms <milliseconds per step> ...
"""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train_torch as cpu  # noqa: E402  (the same model definition)


class SDPAAttention(cpu.Attention):
    """Attention through torch's fused causal kernel (same weights, same result)."""

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        q = q * cos + cpu.rotate_half(q) * sin
        k = k * cos + cpu.rotate_half(k) * sin
        rep = self.h // self.kv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.h * self.hd))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--inter", type=int, default=2816)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="time at least this long")
    p.add_argument("--min-steps", type=int, default=10)
    p.add_argument("--attention", choices=("matmul", "sdpa"), default="matmul")
    p.add_argument("--device", default="cuda", help="torch device (cpu only to try the script out)")
    a = p.parse_args()

    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("bench_train_gpu_torch: torch sees no CUDA GPU", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    torch.manual_seed(1)
    if a.attention == "sdpa":
        if not hasattr(F, "scaled_dot_product_attention"):
            print(f"bench_train_gpu_torch: torch {torch.__version__} has no scaled_dot_product_attention (2.0+)",
                  file=sys.stderr)
            return 2
        cpu.Attention.forward = SDPAAttention.forward
    model = cpu.Llama(a)
    for prm in model.parameters():
        prm.requires_grad_(False)
    for layer in model.layers:
        layer.self_attn.q_proj = cpu.LoRALinear(layer.self_attn.q_proj, a.rank, a.alpha)
        layer.self_attn.v_proj = cpu.LoRALinear(layer.self_attn.v_proj, a.rank, a.alpha)
    model = model.to(dev)
    lora = [prm for n, prm in model.named_parameters() if "lora_" in n]
    opt = torch.optim.AdamW(lora, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq + 1), device=dev)
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def step():
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, a.vocab), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora, 1.0)
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    sync()
    steps, start = 0, time.perf_counter()
    while steps < a.min_steps or time.perf_counter() - start < a.seconds:
        loss = step()
        loss.item()  # fedtune reads each step's loss back too
        steps += 1
    sync()
    elapsed = time.perf_counter() - start
    if not math.isfinite(loss.item()):
        print(f"bench_train_gpu_torch: loss is {loss.item()}", file=sys.stderr)
        return 1
    print(f"torch_tok_per_s {steps * a.batch * a.seq / elapsed:.1f} step_ms {1000 * elapsed / steps:.2f} "
          f"attention {a.attention} gpu {name.replace(' ', '_')} torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
