"""PyTorch peer for bench/train_cpu.sh: the same MLP, optimizer, global batch
and data as `spotrun train`, single process or DDP (gloo) over N processes.
Reads the spotrun shards with numpy (docs/formats.md). Prints one line:
samples_per_sec=<median over the timed epochs>.

usage: torch_mlp.py DATASET_DIR PROCS THREADS EPOCHS HIDDEN BATCH
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def load_dataset(root):
    """All records of a spotrun dataset as (x float32 [n, d], y int64 [n])."""
    index = json.load(open(os.path.join(root, "index.json")))
    xs, ys = [], []
    for shard in index["shards"]:
        raw = open(os.path.join(root, shard["name"]), "rb").read()
        head = np.frombuffer(raw, dtype="<u4", count=16)
        n = int(np.frombuffer(raw, dtype="<u8", count=1, offset=16)[0])
        meta_len = int(head[3])
        data_off = int(np.frombuffer(raw, dtype="<u8", count=1, offset=32)[0])
        meta = json.loads(raw[64:64 + meta_len])
        rec = np.dtype([(f["name"], np.dtype(f["dtype"]).newbyteorder("<"),
                         tuple(f["shape"])) for f in meta["fields"]])
        r = np.frombuffer(raw, dtype=rec, count=n, offset=data_off)
        scale = next(f.get("scale", 1.0) for f in meta["fields"] if f["name"] == "x")
        xs.append(r["x"].reshape(n, -1).astype(np.float32) * np.float32(scale))
        ys.append(r["y"].astype(np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def build(d_in, hidden, classes):
    layers, prev = [], d_in
    for h in hidden:
        layers += [torch.nn.Linear(prev, h), torch.nn.ReLU()]
        prev = h
    layers.append(torch.nn.Linear(prev, classes))
    return torch.nn.Sequential(*layers)


def worker(rank, procs, root, threads, epochs, hidden, batch, port, out):
    torch.set_num_threads(threads)
    torch.manual_seed(42)
    if procs > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=procs)
    x, y = load_dataset(root)
    model = build(x.shape[1], hidden, 10)
    if procs > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    local = batch // procs
    steps = x.shape[0] // batch
    rates = []
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(epoch)
        perm = torch.randperm(x.shape[0], generator=g)
        t0 = time.perf_counter()
        for s in range(steps):
            idx = perm[s * batch + rank * local: s * batch + (rank + 1) * local]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        rates.append(steps * batch / (time.perf_counter() - t0))
    if rank == 0:
        with open(out, "w") as f:
            f.write(json.dumps(rates))
    if procs > 1:
        dist.destroy_process_group()


def main():
    root, procs, threads, epochs, hidden, batch = sys.argv[1:7]
    procs, threads, epochs, batch = int(procs), int(threads), int(epochs), int(batch)
    hidden = [int(h) for h in hidden.split(",")]
    out = f"/tmp/torch_mlp_{os.getpid()}.json"
    port = 29500 + os.getpid() % 1000
    if procs == 1:
        worker(0, 1, root, threads, epochs, hidden, batch, port, out)
    else:
        mp.spawn(worker, args=(procs, root, threads, epochs, hidden, batch, port, out),
                 nprocs=procs)
    rates = json.load(open(out))
    os.unlink(out)
    print(f"samples_per_sec={statistics.median(rates[1:] or rates):.0f} "
          f"epochs={json.dumps([round(r) for r in rates])}")


if __name__ == "__main__":
    main()
