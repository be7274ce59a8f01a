"""PyTorch CPU counterpart of `benches/loss.rs` (the tensor part), for side-by-side figures.

Same computation: log-softmax + gather of completion tokens for B = 8 groups of 1 + 7
sequences, T = 256, V = 4096, float32, then the Plackett-Luce APO loss against fixed
reference log-probs, forward and backward. Prints one JSON line.

    python3 crates/apo-loss/benches/loss_torch.py [--iters N] [--threads K]
"""

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    groups, per_group, t, v = 8, 8, 256, 4096
    rows = groups * per_group
    logits_data = torch.randn(rows, t, v) * 2.0
    targets = (torch.arange(rows * t) * 7919 % v).reshape(rows, t)
    pos = torch.arange(t).unsqueeze(0)
    row = torch.arange(rows).unsqueeze(1)
    mask = (pos >= 32) & (pos < 32 + 160 + (row * 5) % 64)
    reference = torch.randn(groups, per_group) * 20.0 - 300.0
    beta = 0.1

    times = []
    for i in range(args.iters + 1):
        logits = logits_data.clone().requires_grad_(True)
        start = time.perf_counter()
        logp = torch.log_softmax(logits, dim=-1)
        picked = logp.gather(2, targets.unsqueeze(2)).squeeze(2)
        seq = (picked * mask).sum(dim=1).reshape(groups, per_group)
        scores = beta * (seq - reference)
        loss = (torch.logsumexp(scores, dim=1) - scores[:, 0]).mean()
        loss.backward()
        _ = logits.grad.sum().item()
        elapsed = (time.perf_counter() - start) * 1e3
        if i > 0:
            times.append(elapsed)
    print(json.dumps({
        "bench": "loss-torch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tensor_step_ms_median": round(statistics.median(times), 1),
        "tensor_step_ms_mean": round(statistics.fmean(times), 1),
        "tensor_iters": args.iters,
    }))


if __name__ == "__main__":
    main()
