"""PyTorch baseline for bench/bert.mjs: the same 2-layer BERT-base-sized encoder (post-LayerNorm, GELU, pooler and
classifier), forward + backward, with LoRA or PEFT-style DoRA on query and value, or full fine-tuning."""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F


class Adapted(torch.nn.Module):
    def __init__(self, base, r, alpha, dora):
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        base.bias.requires_grad_(False)
        self.lora_a = torch.nn.Parameter(torch.randn(r, base.in_features) / math.sqrt(base.in_features))
        self.lora_b = torch.nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = alpha / r
        self.magnitude = torch.nn.Parameter(base.weight.norm(dim=1).detach().clone()) if dora else None

    def forward(self, x):
        base = F.linear(x, self.base.weight)
        lora = (x @ self.lora_a.T) @ self.lora_b.T
        if self.magnitude is None:
            return base + self.base.bias + self.scale * lora
        weight_norm = (self.base.weight + self.scale * (self.lora_b @ self.lora_a).detach()).norm(dim=1).detach()
        gain = (self.magnitude / weight_norm).view(1, -1)
        return base + self.base.bias + (gain - 1) * base + gain * lora * self.scale


class Layer(torch.nn.Module):
    def __init__(self, hidden, heads, intermediate):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (torch.nn.Linear(hidden, hidden) for _ in range(3))
        self.attention_out = torch.nn.Linear(hidden, hidden)
        self.norm1 = torch.nn.LayerNorm(hidden, eps=1e-12)
        self.up = torch.nn.Linear(hidden, intermediate)
        self.down = torch.nn.Linear(intermediate, hidden)
        self.norm2 = torch.nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = torch.nn.Dropout(0.1)

    def forward(self, x):
        batch, seq, hidden = x.shape
        split = lambda t: t.view(batch, seq, self.heads, hidden // self.heads).transpose(1, 2)
        scores = split(self.query(x)) @ split(self.key(x)).transpose(-1, -2) / math.sqrt(hidden // self.heads)
        context = (self.dropout(scores.softmax(-1)) @ split(self.value(x))).transpose(1, 2).reshape(batch, seq, hidden)
        x = self.norm1(x + self.dropout(self.attention_out(context)))
        return self.norm2(x + self.dropout(self.down(F.gelu(self.up(x)))))


class Model(torch.nn.Module):
    def __init__(self, s):
        super().__init__()
        self.words = torch.nn.Embedding(s["vocab"], s["hidden"])
        self.positions = torch.nn.Embedding(512, s["hidden"])
        self.types = torch.nn.Embedding(2, s["hidden"])
        self.norm = torch.nn.LayerNorm(s["hidden"], eps=1e-12)
        self.layers = torch.nn.ModuleList(Layer(s["hidden"], s["heads"], s["intermediate"]) for _ in range(s["layers"]))
        self.pooler = torch.nn.Linear(s["hidden"], s["hidden"])
        self.classifier = torch.nn.Linear(s["hidden"], 2)
        self.dropout = torch.nn.Dropout(0.1)

    def forward(self, ids, labels):
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        x = self.dropout(self.norm(self.words(ids) + self.positions(positions) + self.types(torch.zeros_like(ids))))
        for layer in self.layers:
            x = layer(x)
        logits = self.classifier(self.dropout(torch.tanh(self.pooler(x[:, 0]))))
        return F.cross_entropy(logits, labels)


def build(s, method):
    model = Model(s)
    if method != "full":
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for layer in model.layers:
            layer.query = Adapted(layer.query, s["r"], 16, method != "lora")
            layer.value = Adapted(layer.value, s["r"], 16, method != "lora")
        for parameter in model.classifier.parameters():
            parameter.requires_grad_(True)
    return model


def main():
    s = json.loads(sys.argv[1])
    seconds = 0.5 if sys.argv[2] == "1" else 6.0
    # An optional third argument names the device (bench/gpu/node-step.mjs times the same step on 'cuda').
    device = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cpu")
    # A fourth argument, "high", rounds float32 products to TF32 on the GPU (torch.set_float32_matmul_precision); a
    # fifth, "autocast", runs forward under torch.autocast in bfloat16 (weights float32, products in bfloat16).
    torch.set_float32_matmul_precision(sys.argv[4] if len(sys.argv) > 4 else "highest")
    autocast = len(sys.argv) > 5 and sys.argv[5] == "autocast"

    def loss_of(model):
        if not autocast:
            return model(ids, labels)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return model(ids, labels)

    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    torch.set_num_threads(2)
    torch.manual_seed(0)
    ids = torch.randint(1000, 21000, (s["batch"], s["seq"]), device=device)
    labels = torch.arange(s["batch"], device=device) % 2
    results = []
    for method in ("lora", "dora") if autocast else ("lora", "dora", "full"):
        model = build(s, method).to(device)
        for _ in range(3):  # warm-up: kernel selection and the allocator's first blocks
            loss_of(model).backward()
        samples = []
        deadline = time.perf_counter() + seconds
        while len(samples) < 3 or time.perf_counter() < deadline:
            model.zero_grad(set_to_none=True)
            sync()
            start = time.perf_counter()
            loss_of(model).backward()
            sync()
            samples.append((time.perf_counter() - start) * 1e3)
        samples.sort()
        results.append({"version": torch.__version__, "method": method, "msPerStep": samples[len(samples) // 2]})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
