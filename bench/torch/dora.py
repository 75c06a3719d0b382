"""PyTorch baseline for bench/dora.mjs: one layer's forward + backward as LoRA, and as DoRA the way PEFT computes it
(B·A materialised, the row norm of W0 + s·B·A detached, base and low-rank results combined), median milliseconds,
for each setting (the input as data, or needing its gradient) and shape."""
import json
import sys
import time

import torch


def make_layer(n, k, m, r, input_gradient):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(m, k, generator=generator) / k**0.5
    return {
        "x": torch.randn(n, k, generator=generator, requires_grad=input_gradient),
        "weight": weight,
        "bias": torch.randn(m, generator=generator),
        "lora_a": (torch.randn(r, k, generator=generator) / k**0.5).requires_grad_(),
        "lora_b": (torch.randn(m, r, generator=generator) * 0.01).requires_grad_(),
        "magnitude": weight.norm(dim=1).detach().clone().requires_grad_(),
        "grad_output": torch.randn(n, m, generator=generator),
        "scale": 2.0,
    }


def lora_step(layer):
    base = torch.nn.functional.linear(layer["x"], layer["weight"], layer["bias"])
    y = base + layer["scale"] * (layer["x"] @ layer["lora_a"].T) @ layer["lora_b"].T
    y.backward(layer["grad_output"])


def dora_step(layer):
    x, weight, scale = layer["x"], layer["weight"], layer["scale"]
    lora_weight = layer["lora_b"] @ layer["lora_a"]
    weight_norm = (weight + scale * lora_weight.detach()).norm(p=2, dim=1).detach()
    mag_norm_scale = (layer["magnitude"] / weight_norm).view(1, -1)
    base_result = torch.nn.functional.linear(x, weight)
    lora_result = (x @ layer["lora_a"].T) @ layer["lora_b"].T
    result = base_result + layer["bias"]
    result = result + (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * scale
    result.backward(layer["grad_output"])


def median_ms(step, layer, seconds):
    for parameter in ("x", "lora_a", "lora_b", "magnitude"):
        layer[parameter].grad = None
    step(layer)
    samples = []
    deadline = time.perf_counter() + seconds
    while len(samples) < 5 or time.perf_counter() < deadline:
        for parameter in ("x", "lora_a", "lora_b", "magnitude"):
            layer[parameter].grad = None
        start = time.perf_counter()
        step(layer)
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return samples[len(samples) // 2]


def main():
    shapes = json.loads(sys.argv[1])
    settings = json.loads(sys.argv[2])
    torch.set_num_threads(int(sys.argv[3]))
    seconds = 0.3 if sys.argv[4] == "1" else 3.0
    results = []
    for setting, shape in ((setting, shape) for setting in settings for shape in shapes):
        layer = make_layer(shape["n"], shape["k"], shape["m"], shape["r"], setting["inputGradient"])
        results.append(
            {
                "version": torch.__version__,
                "loraMs": median_ms(lora_step, layer, seconds),
                "doraMs": median_ms(dora_step, layer, seconds),
            }
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
