"""The PyTorch peer's 40-epoch ResNet-20 evaluated one view and two views (test-time flip).

For comparison only; PyTorch is never an Octet dependency. The recipe is the
peer reference's, ../shared/bench/torch_cifar_train.py (the 87.62% run): SGD
Nesterov 0.9, weight decay 5e-4, batch 128, one-cycle to --lr (pct_start
0.25), per-image random crop (pad 4) and flip, train-set mean/std, torch seed 0.
Its data loader and model are imported from that folder, so the two cannot
drift apart. After training it prints

    fp32_acc X            one forward per test image (what the reference prints)
    fp32_flip_tta_acc Y   logits of each image and its mirror image summed before the arg-max,
                          the same rule as `octet eval --tta flip`

The state after each epoch (model, optimizer, schedule, both RNGs) goes to
STATE (written atomically), and a run started again with the same STATE
continues from there. Delete STATE to start over.

usage: /usr/bin/python3 scripts/peer_flip_tta.py DATA_DIR [--epochs 40] [--lr 0.1] [--threads 2]
           [--bench ../shared/bench] [--state peer_flip_state.pt]
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", default=os.path.join(here, "..", "..", "shared", "bench"))
    ap.add_argument("--state", default="peer_flip_state.pt")
    a = ap.parse_args()
    sys.path.insert(0, a.bench)
    from torch_cifar_train import load  # noqa: E402 (the peer's own loader)
    from torch_resnet20 import ResNet  # noqa: E402 (the peer's own model)

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    xtr, ytr = load(a.data, "train")
    xte, yte = load(a.data, "test")
    mean = xtr.float().mean((0, 2, 3), keepdim=True) / 255
    std = xtr.float().std((0, 2, 3), keepdim=True) / 255

    def norm(x):
        return (x.float() / 255 - mean) / std

    def batches(bs):
        idx = torch.randperm(len(xtr))
        for i in range(0, len(idx) - bs + 1, bs):
            x = xtr[idx[i:i + bs]]
            flip = torch.rand(bs) < 0.5
            x[flip] = x[flip].flip(3)
            x = F.pad(x, (4, 4, 4, 4))
            off = np.random.randint(0, 9, (bs, 2))
            x = torch.stack([x[k, :, off[k, 1]:off[k, 1] + 32, off[k, 0]:off[k, 0] + 32] for k in range(bs)])
            yield norm(x), ytr[idx[i:i + bs]]

    def accuracy(m, views):
        m.eval()
        right = 0
        with torch.no_grad():
            for i in range(0, len(xte), 500):
                x = norm(xte[i:i + 500])
                logits = m(x) if views == 1 else m(x) + m(x.flip(3))
                right += (logits.argmax(1) == yte[i:i + 500]).sum().item()
        return 100.0 * right / len(xte)

    m = ResNet(3)
    bs = 128
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.epochs * (len(xtr) // bs), pct_start=0.25)
    start = 0
    if os.path.exists(a.state):
        st = torch.load(a.state)
        m.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["schedule"])
        torch.set_rng_state(st["torch_rng"])
        np.random.set_state(st["numpy_rng"])
        start = st["epochs_done"]
        print(f"resumed from {a.state} after epoch {start}", flush=True)
    t0 = time.time()
    for ep in range(start, a.epochs):
        m.train()
        for x, y in batches(bs):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
            sched.step()
        print(f"epoch {ep + 1} test_acc {accuracy(m, 1):.2f} elapsed_s {time.time() - t0:.0f}", flush=True)
        torch.save({"model": m.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                    "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "epochs_done": ep + 1},
                   a.state + ".tmp")
        os.replace(a.state + ".tmp", a.state)
    print(f"fp32_acc {accuracy(m, 1):.2f}")
    print(f"fp32_flip_tta_acc {accuracy(m, 2):.2f}", flush=True)


if __name__ == "__main__":
    main()
