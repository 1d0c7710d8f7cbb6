"""End-to-end inference of a CenterNet preset, eager ``model.predict`` beside the compiled network + decode
(``engine.compiled.CompiledPredict``: ``reduce-overhead`` = CUDA graphs on CUDA), uint8 batch on the device in,
decoded detections out, with the largest score difference between the two.

    python benchmarks/compiled_predict.py [--preset centernet_r18] [--device cuda] [--size 512] [--batches 1,32]
        [--precisions fp16]

One JSON line per measurement. Random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import json

import torch

from pointdet.benchmark import PRECISIONS, _autocast, _images, _record, time_per_call
from pointdet.configs import get_preset
from pointdet.engine.compiled import CompiledPredict
from pointdet.models.build import build_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="centernet_r18")
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--precisions", default="fp16", help=f"comma-separated, of {','.join(PRECISIONS)}")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    model = build_model(get_preset(args.preset).model, num_classes=80, with_backbone_weights=False)
    model = model.to(device).eval()
    compiled = CompiledPredict(model, "reduce-overhead" if device.type == "cuda" else None)
    for precision in args.precisions.split(","):
        for batch in (int(b) for b in args.batches.split(",") if b):
            images = _images(batch, args.size, device)
            with torch.no_grad(), _autocast(device, precision):
                eager_scores = torch.stack([d.scores for d in model.predict(images)])
                compiled_scores = torch.stack([d.scores for d in compiled(images)])
                difference = (eager_scores - compiled_scores).abs().max().item()
                for label, fn in (("eager", model.predict), ("compiled", compiled)):
                    seconds = time_per_call(lambda fn=fn, images=images: fn(images), device, args.warmup, args.iters)
                    record = _record("inference", f"{args.preset}_{label}", device, seconds, batch, size=args.size)
                    print(json.dumps({**record, "precision": precision, "max_score_difference": difference}))


if __name__ == "__main__":
    main()
