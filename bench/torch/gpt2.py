"""PyTorch baseline for bench/causal-lm.mjs: a GPT-2 stack written in plain PyTorch the way transformers'
GPT2LMHeadModel computes it (Conv1D weights stored [in, out] and applied with addmm, pre-LayerNorm blocks, eager
causal attention, gelu_new, the LM head tied to the token embeddings, the causal-LM loss on labels shifted by one).

Two modes:
- train: forward + backward with DoRA on c_attn (PEFT's default target for gpt2), computed as PEFT's DoraLinearLayer
  does for a fan_in_fan_out Conv1D: the base result reused, the row norm of W0ᵀ + s·B·A detached, every base weight
  frozen, dropout on.
- generate: greedy decoding with a key/value cache, the loop transformers' generate runs: one pass over the prompt,
  then one pass per new token over the cached keys and values (grown with torch.cat), the argmax of the last logits.
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F


class Conv1D(torch.nn.Module):
    """transformers' Conv1D: weight [in, out], y = bias + x · weight."""

    def __init__(self, inputs, outputs):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(inputs, outputs) * 0.02)
        self.bias = torch.nn.Parameter(torch.zeros(outputs))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class DoraConv1D(torch.nn.Module):
    """PEFT's DoRA on a Conv1D (fan_in_fan_out): result = base(x) + (m/‖W‖ − 1)·(base(x) − bias) + m/‖W‖·s·B(A(x))."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        inputs, outputs = base.weight.shape
        self.lora_a = torch.nn.Parameter(torch.randn(r, inputs) / math.sqrt(inputs))
        self.lora_b = torch.nn.Parameter(torch.randn(outputs, r) * 0.01)
        self.scale = alpha / r
        self.magnitude = torch.nn.Parameter(base.weight.T.norm(dim=1).detach().clone())

    def forward(self, x):
        result = self.base(x)
        base_result = result - self.base.bias
        lora_result = (x @ self.lora_a.T) @ self.lora_b.T
        weight = self.base.weight.T + self.scale * (self.lora_b @ self.lora_a).detach()
        weight_norm = torch.linalg.norm(weight, dim=1).detach()
        gain = (self.magnitude / weight_norm).view(1, -1)
        return result + (gain - 1) * base_result + gain * lora_result * self.scale


class Block(torch.nn.Module):
    def __init__(self, s):
        super().__init__()
        hidden = s["hidden"]
        self.heads = s["heads"]
        self.ln_1 = torch.nn.LayerNorm(hidden, eps=1e-5)
        self.c_attn = Conv1D(hidden, 3 * hidden)
        self.attn_c_proj = Conv1D(hidden, hidden)
        self.ln_2 = torch.nn.LayerNorm(hidden, eps=1e-5)
        self.c_fc = Conv1D(hidden, 4 * hidden)
        self.mlp_c_proj = Conv1D(4 * hidden, hidden)
        self.attn_dropout = torch.nn.Dropout(0.1)
        self.resid_dropout = torch.nn.Dropout(0.1)
        self.mlp_dropout = torch.nn.Dropout(0.1)

    def attend(self, x, past):
        batch, seq, hidden = x.shape
        split = lambda t: t.view(batch, seq, self.heads, hidden // self.heads).transpose(1, 2)
        query, key, value = (split(part) for part in self.c_attn(x).split(hidden, dim=2))
        if past is not None:
            key, value = torch.cat((past[0], key), dim=2), torch.cat((past[1], value), dim=2)
        scores = query @ key.transpose(-1, -2) / math.sqrt(hidden // self.heads)
        if seq > 1:
            # Query i (at position length − seq + i) reads keys up to its own position.
            length = key.shape[2]
            causal = torch.ones(seq, length, dtype=torch.bool).triu(length - seq + 1)
            scores = scores.masked_fill(causal, torch.finfo(scores.dtype).min)
        context = self.attn_dropout(scores.softmax(-1)) @ value
        merged = context.transpose(1, 2).reshape(batch, seq, hidden)
        return self.resid_dropout(self.attn_c_proj(merged)), (key, value)

    def forward(self, x, past=None):
        attended, present = self.attend(self.ln_1(x), past)
        x = x + attended
        mlp = self.mlp_c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x + self.mlp_dropout(mlp), present


class GPT2(torch.nn.Module):
    def __init__(self, s):
        super().__init__()
        self.wte = torch.nn.Embedding(s["vocab"], s["hidden"])
        self.wpe = torch.nn.Embedding(s["positions"], s["hidden"])
        torch.nn.init.normal_(self.wte.weight, std=0.02)
        torch.nn.init.normal_(self.wpe.weight, std=0.02)
        self.drop = torch.nn.Dropout(0.1)
        self.h = torch.nn.ModuleList(Block(s) for _ in range(s["layers"]))
        self.ln_f = torch.nn.LayerNorm(s["hidden"], eps=1e-5)

    def forward(self, ids, past=None, last_only=False):
        start = 0 if past is None else past[0][0].shape[2]
        positions = torch.arange(start, start + ids.shape[1]).unsqueeze(0)
        x = self.drop(self.wte(ids) + self.wpe(positions))
        presents = []
        for index, block in enumerate(self.h):
            x, present = block(x, None if past is None else past[index])
            presents.append(present)
        x = self.ln_f(x)
        if last_only:
            x = x[:, -1:]
        # The LM head is the token embeddings' transpose (tied weights).
        return F.linear(x, self.wte.weight), presents


def causal_lm_loss(logits, labels):
    """transformers' ForCausalLMLoss: position t scored on labels[t + 1], the last position ignored."""
    shifted = F.pad(labels, (0, 1), value=-100)[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=-100)


def median_ms(run, seconds, minimum):
    run()
    samples = []
    deadline = time.perf_counter() + seconds
    while len(samples) < minimum or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return samples[len(samples) // 2], len(samples)


def train(s, cases, seconds):
    model = GPT2(s)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for block in model.h:
        block.c_attn = DoraConv1D(block.c_attn, s["r"], s["alpha"])
    model.train()
    results = []
    for case in cases:
        ids = torch.randint(0, s["vocab"], (case["batch"], case["seq"]))

        def step():
            model.zero_grad(set_to_none=True)
            logits, _ = model(ids)
            causal_lm_loss(logits, ids).backward()

        ms, samples = median_ms(step, seconds, 3)
        results.append({**case, "msPerStep": ms, "samples": samples})
    return results


def generate(s, cases, seconds):
    model = GPT2(s)
    model.eval()
    results = []
    for case in cases:
        prompt = torch.randint(0, s["vocab"], (case["batch"], case["prompt"]))

        def run():
            with torch.no_grad():
                logits, past = model(prompt, last_only=True)
                for _ in range(case["newTokens"] - 1):
                    token = logits[:, -1].argmax(-1, keepdim=True)
                    logits, past = model(token, past, last_only=True)
                logits[:, -1].argmax(-1)

        ms, samples = median_ms(run, seconds, 3)
        results.append({**case, "msPerRun": ms, "samples": samples})
    return results


def main():
    mode, s, cases = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    seconds = 0.5 if sys.argv[4] == "1" else 6.0
    torch.set_num_threads(int(sys.argv[5]))
    torch.manual_seed(0)
    results = (train if mode == "train" else generate)(s, cases, seconds)
    print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(), "results": results}))


if __name__ == "__main__":
    main()
