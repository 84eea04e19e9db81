"""PyTorch peer for bench/train_gpu.sh: the same MLP, AdamW settings, global
batch, data and precision as `spotrun train --device cuda` on one GPU, in
eager mode. fp32 keeps TF32 off (as spotrun's fp32), tf32 turns it on for
matrix products, bf16 runs the model under torch.autocast with FP32 master
weights (as spotrun's bf16). Like spotrun, each batch is gathered on the
host in the epoch's random order and copied in from page-locked memory
without blocking; unlike spotrun, the loss is not read back every step.

Prints one line: samples_per_sec=<median over the epochs after the
warm-up> epochs=[per-epoch rates].

usage: torch_mlp_gpu.py DATASET_DIR EPOCHS WARMUP HIDDEN BATCH PRECISION
"""
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_mlp import build, load_dataset  # noqa: E402


def main():
    root, epochs, warmup, hidden, batch, precision = sys.argv[1:7]
    epochs, warmup, batch = int(epochs), int(warmup), int(batch)
    hidden = [int(h) for h in hidden.split(",")]
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.manual_seed(42)
    dev = torch.device("cuda")
    x, y = load_dataset(root)
    x = x.contiguous().pin_memory()
    y = y.to(torch.int64).contiguous().pin_memory()
    model = build(x.shape[1], hidden, 10).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=1e-4)
    # two page-locked batch buffers, each reused once its copy is done
    xb = [torch.empty((batch, x.shape[1]), pin_memory=True) for _ in range(2)]
    yb = [torch.empty((batch,), dtype=torch.int64, pin_memory=True)
          for _ in range(2)]
    copied = [torch.cuda.Event(), torch.cuda.Event()]
    steps = x.shape[0] // batch
    rates = []
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(epoch)
        perm = torch.randperm(x.shape[0], generator=g)
        loss_sum = torch.zeros((), device=dev)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(steps):
            k = s % 2
            copied[k].synchronize()
            idx = perm[s * batch:(s + 1) * batch]
            torch.index_select(x, 0, idx, out=xb[k])
            torch.index_select(y, 0, idx, out=yb[k])
            xd = xb[k].to(dev, non_blocking=True)
            yd = yb[k].to(dev, non_blocking=True)
            copied[k].record()
            opt.zero_grad(set_to_none=True)
            if precision == "bf16":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = F.cross_entropy(model(xd), yd)
            else:
                loss = F.cross_entropy(model(xd), yd)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
        torch.cuda.synchronize()
        rates.append(steps * batch / (time.perf_counter() - t0))
        if not torch.isfinite(loss_sum):
            raise SystemExit(f"epoch {epoch}: loss is not finite")
    timed = rates[warmup:] or rates
    print(f"samples_per_sec={statistics.median(timed):.0f} "
          f"epochs={json.dumps([round(r) for r in rates])}")


if __name__ == "__main__":
    main()
