"""Soft-NMS before / after, side by side: the former per-image loop (a host sync per kept box) and the fixed-step
batched form the corner decoders use now, on the corner decoder's workload (per image ``2 x num_pairs``
flip-merged candidates of 80 classes, the top ``k`` kept).

    python benchmarks/soft_nms.py [--device cpu|cuda] [--batches 1,8] [--candidates 2000] [--k 100]

Prints one JSON line per measurement, then a table. Random boxes, Gaussian sigma 0.5, IoU threshold 0.5.
"""

from __future__ import annotations

import argparse
import json
from datetime import date

import torch

from pointdet.benchmark import time_per_call
from pointdet.ops.nms import batched_soft_nms, sequential_soft_nms


def candidates(batch: int, count: int, device: torch.device, seed: int = 0):
    """(B, N, 4) boxes in a 512-pixel image, (B, N) scores and labels (80 classes)."""
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, count, 2, generator=generator) * 400
    wh = 8 + torch.rand(batch, count, 2, generator=generator) * 150
    boxes = torch.cat([xy, xy + wh], dim=-1)
    scores = torch.rand(batch, count, generator=generator)
    labels = torch.randint(0, 80, (batch, count), generator=generator)
    return boxes.to(device), scores.to(device), labels.to(device)


def measure(batch: int, count: int, k: int, device: torch.device, warmup: int, iters: int) -> list[dict]:
    boxes, scores, labels = candidates(batch, count, device)

    def before():  # the former ``suppress``: the whole loop per image, then its first k
        for b in range(batch):
            keep, kept = sequential_soft_nms(boxes[b], scores[b], labels[b], 0.5, iou_threshold=0.5)
            keep[:k].cpu(), kept[:k].cpu()

    def after_all_steps():  # the batched form run to the end (N steps): the cost of the steps alone
        batched_soft_nms(boxes, scores, labels, sigma=0.5, iou_threshold=0.5).scores.cpu()

    def after():  # the decoder's call: k steps
        batched_soft_nms(boxes, scores, labels, sigma=0.5, iou_threshold=0.5, max_kept=k).scores.cpu()

    records = []
    for label, fn in (("sequential_loop", before), ("batched_all_steps", after_all_steps), ("batched_k_steps", after)):
        seconds = time_per_call(fn, device, warmup, iters)
        records.append(
            {
                "kind": "soft_nms",
                "model": label,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "torch": torch.__version__,
                "date": date.today().isoformat(),
                "batch": batch,
                "candidates": count,
                "k": k,
                "ms_per_batch": round(1000 * seconds, 3),
            }
        )
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batches", default="1,8", help="images per call, e.g. 1,8,32")
    parser.add_argument("--candidates", type=int, default=2000, help="boxes per image (2 x num_pairs)")
    parser.add_argument("--k", type=int, default=100, help="boxes kept per image")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for batch in (int(b) for b in args.batches.split(",") if b):
        for record in measure(batch, args.candidates, args.k, device, args.warmup, args.iters):
            print(json.dumps(record), flush=True)
            rows.append(record)
    header = ("batch", "sequential loop", "batched, N steps", "batched, k steps")
    print("\n{:>5}  {:>16}  {:>16}  {:>16}   (ms per batch)".format(*header))
    for start in range(0, len(rows), 3):
        before, full, after = (r["ms_per_batch"] for r in rows[start : start + 3])
        print(f"{rows[start]['batch']:>5}  {before:>16.1f}  {full:>16.1f}  {after:>16.1f}")


if __name__ == "__main__":
    main()
