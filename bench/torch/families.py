"""PyTorch baseline for bench/families.mjs: DistilBERT-sized and ESM-2-8M-sized encoders written in plain PyTorch
(the layouts transformers uses: DistilBERT's post-LayerNorm blocks; ESM-2's pre-LayerNorm blocks with rotary queries
and keys), forward + backward of a sequence classifier with PEFT-style DoRA on query and value."""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bert import Adapted  # noqa: E402  (the same PEFT-style DoRA layer as the BERT baseline)


def rotate(x, base=10000.0):
    d = x.shape[-1]
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2).float() / d))
    angles = torch.outer(torch.arange(x.shape[-2]).float(), inv_freq)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), -1) * sin


class Layer(torch.nn.Module):
    def __init__(self, s, pre_norm):
        super().__init__()
        hidden = s["hidden"]
        self.heads, self.pre_norm = s["heads"], pre_norm
        self.query, self.key, self.value, self.out = (torch.nn.Linear(hidden, hidden) for _ in range(4))
        self.norm1 = torch.nn.LayerNorm(hidden, eps=1e-12)
        self.up = torch.nn.Linear(hidden, s["intermediate"])
        self.down = torch.nn.Linear(s["intermediate"], hidden)
        self.norm2 = torch.nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = torch.nn.Dropout(0.1)

    def attend(self, x):
        batch, seq, hidden = x.shape
        split = lambda t: t.view(batch, seq, self.heads, hidden // self.heads).transpose(1, 2)
        q, k = split(self.query(x)), split(self.key(x))
        if self.pre_norm:
            q, k = rotate(q), rotate(k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // self.heads)
        context = (self.dropout(scores.softmax(-1)) @ split(self.value(x))).transpose(1, 2).reshape(batch, seq, hidden)
        return self.out(context)

    def forward(self, x):
        if self.pre_norm:  # ESM-2
            x = x + self.dropout(self.attend(self.norm1(x)))
            return x + self.dropout(self.down(F.gelu(self.up(self.norm2(x)))))
        x = self.norm1(x + self.attend(x))  # DistilBERT
        return self.norm2(x + self.dropout(self.down(F.gelu(self.up(x)))))


class Model(torch.nn.Module):
    def __init__(self, s):
        super().__init__()
        self.esm = s["family"] == "esm"
        self.words = torch.nn.Embedding(s["vocab"], s["hidden"])
        self.positions = None if self.esm else torch.nn.Embedding(512, s["hidden"])
        self.norm = torch.nn.LayerNorm(s["hidden"], eps=1e-12)
        self.layers = torch.nn.ModuleList(Layer(s, self.esm) for _ in range(s["layers"]))
        self.head = torch.nn.Linear(s["hidden"], s["hidden"])
        self.classifier = torch.nn.Linear(s["hidden"], 2)

    def forward(self, ids, labels):
        x = self.words(ids)
        if not self.esm:
            x = self.norm(x + self.positions(torch.arange(ids.shape[1]).unsqueeze(0)))
        for layer in self.layers:
            x = layer(x)
        if self.esm:
            x = self.norm(x)
        return F.cross_entropy(self.classifier(torch.tanh(self.head(x[:, 0]))), labels)


def main():
    s = json.loads(sys.argv[1])
    seconds = 0.5 if sys.argv[2] == "1" else 6.0
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = Model(s)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for layer in model.layers:
        layer.query = Adapted(layer.query, s["r"], 16, True)
        layer.value = Adapted(layer.value, s["r"], 16, True)
    for parameter in model.classifier.parameters():
        parameter.requires_grad_(True)
    ids = torch.randint(4, s["vocab"], (s["batch"], s["seq"]))
    labels = torch.arange(s["batch"]) % 2
    samples = []
    deadline = time.perf_counter() + seconds
    while len(samples) < 3 or time.perf_counter() < deadline:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(ids, labels).backward()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    print(json.dumps({"version": torch.__version__, "msPerStep": samples[len(samples) // 2]}))


if __name__ == "__main__":
    main()
