"""``pointdet benchmark``: throughput of presets and their peers, measured in one run, as JSON lines.

For every preset: end-to-end inference images/s (uint8 batch on the device in, decoded ``Detections`` out,
synchronised) at each batch size and precision, one training step's images/s at the preset's batch (data on the
device, forward, loss, backward, optimizer) and the peak device memory. In the same run, the peers a user would
pick instead — torchvision's FCOS, RetinaNet and Faster R-CNN (ResNet-50-FPN) end to end at the same input size —
and the bare ResNet-18 features (the ceiling of any ResNet-18 detector), plus the data pipeline alone (decoded and
augmented training images/s with N loader workers) and the COCO evaluation of 5,000 detections beside plain pycocotools.
Random weights everywhere: speed does not depend on them and nothing is read from the network (presets whose
backbone starts from ImageNet weights are built without them).

The host report (``--host-size``, 64 by default) gives, per preset, what one predict call (batch 1) and one training
step (batch 2) cost the host on the CPU at a tiny input, where compute is negligible: the aten operators they
dispatch (``pointdet.launches``; on a GPU each computing one is a kernel launch) and their milliseconds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import date

import torch
import torchvision
from torch import nn

from pointdet.configs import get_preset
from pointdet.engine.train_step import TrainStep
from pointdet.launches import HostCost, host_cost
from pointdet.models.build import build_model
from pointdet.structures import Instances

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PEERS = ("fcos_resnet50_fpn", "retinanet_resnet50_fpn", "fasterrcnn_resnet50_fpn")


def significant(rate: float, digits: int = 4) -> float:
    """``rate`` to ``digits`` significant figures: a slow CPU rate (0.004 images/s) must not print as 0."""
    return float(f"{rate:.{digits}g}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of ``fn`` over ``iters`` synchronised calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def _record(kind: str, model: str, device: torch.device, seconds: float, batch: int, **extra) -> dict:
    return {
        "kind": kind,
        "model": model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "date": date.today().isoformat(),
        "batch": batch,
        **extra,
        "ms_per_batch": round(1000 * seconds, 3),
        "images_per_s": significant(batch / seconds),
        "peak_memory_mb": _peak_memory_mb(device),
    }


@dataclass(frozen=True)
class Settings:
    """What every measurement shares: square input side, batch sizes, precisions, device, warm-up and timed calls."""

    size: int
    batches: Sequence[int]
    precisions: Sequence[str]
    device: torch.device
    warmup: int
    iters: int


def _images(batch: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)


def sweep(
    kind: str, label: str, forward: Callable[[object], object], make_input: Callable[[int], object], settings: Settings
) -> Iterator[dict]:
    """Time ``forward(make_input(batch))`` under no_grad for every precision and batch size."""
    for precision in settings.precisions:
        for batch in settings.batches:
            inputs = make_input(batch)
            _reset_memory(settings.device)

            def call(inputs=inputs, precision=precision):
                with torch.no_grad(), _autocast(settings.device, precision):
                    return forward(inputs)

            seconds = time_per_call(call, settings.device, settings.warmup, settings.iters)
            yield _record(kind, label, settings.device, seconds, batch, size=settings.size, precision=precision)


def _boxes_for(batch: int, size: int, device: torch.device) -> list[Instances]:
    """Three fixed boxes (with box masks) per image, enough for every loss term to run."""
    unit = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.2, 0.9, 0.6], [0.2, 0.6, 0.7, 0.95]], device=device)
    masks = torch.zeros(3, size, size, dtype=torch.uint8, device=device)
    for i, (x1, y1, x2, y2) in enumerate((unit * size).long().tolist()):
        masks[i, y1:y2, x1:x2] = 1
    instance = Instances(unit * size, torch.tensor([0, 1, 2], device=device), torch.zeros(3, 0, 3, device=device))
    return [replace(instance, masks=masks)] * batch


def bench_preset(name: str, settings: Settings, train_batch: int | None = None) -> Iterator[dict]:
    """End-to-end inference records for every (batch, precision), then one training step at ``train_batch``
    (default: the preset's batch; bf16 autocast on CUDA, fp32 on CPU)."""
    config = get_preset(name)
    device, size = settings.device, settings.size
    model = _random_model(name, device)
    yield from sweep("inference", name, model.predict, lambda b: _images(b, size, device), settings)
    batch = train_batch or config.optim.batch_size
    precision = "bf16" if device.type == "cuda" else "fp32"
    step = training_step(model, batch, size, torch.bfloat16 if precision == "bf16" else None)
    _reset_memory(device)
    seconds = time_per_call(step, device, settings.warmup, settings.iters)
    yield _record("train", name, device, seconds, batch, size=size, precision=precision)


def _random_model(name: str, device: torch.device) -> nn.Module:
    """The preset's network with random weights (no ImageNet file read or downloaded), in eval mode."""
    return build_model(get_preset(name).model, num_classes=80, with_backbone_weights=False).to(device).eval()


def training_step(model: nn.Module, batch: int, size: int, amp_dtype: torch.dtype | None) -> Callable[[], None]:
    """One training step of ``model`` (put in train mode) on a fixed batch of ``batch`` random ``size`` images with
    three boxes each: forward and loss, backward, Adam step."""
    model.train()
    device = next(model.parameters()).device
    images, instances = _images(batch, size, device), _boxes_for(batch, size, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    train_step = TrainStep(model, amp_dtype)

    def step() -> None:
        loss = sum(train_step(images, instances).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bench_host(name: str, size: int, warmup: int = 1, iters: int = 3) -> dict:
    """The host report of preset ``name`` on the CPU at ``size`` px (module docstring): aten operators and median
    host ms (least of ``iters``) of one predict call (batch 1, eval, no grad) and one fp32 training step (batch 2)."""
    cpu = torch.device("cpu")
    model = _random_model(name, cpu)
    images = _images(1, size, cpu)

    def predict() -> None:
        with torch.no_grad():
            model.predict(images)

    costs: dict[str, HostCost] = {"predict": host_cost(predict, warmup, iters)}
    costs["train"] = host_cost(training_step(model, 2, size, None), warmup, iters)
    figures = {
        f"{call}_{figure}": value
        for call, cost in costs.items()
        for figure, value in (("ops", cost.ops.operators), ("views", cost.ops.views), ("host_ms", cost.host_ms))
    }
    return {
        "kind": "host",
        "model": name,
        "device": "cpu",
        "torch": torch.__version__,
        "date": date.today().isoformat(),
        "size": size,
        "predict_batch": 1,
        "train_batch": 2,
        **figures,
    }


def bench_peer(name: str, settings: Settings) -> Iterator[dict]:
    """torchvision detectors end to end (their normalisation, resize to ``size``, decode and NMS included)."""
    size, device = settings.size, settings.device
    builder = getattr(torchvision.models.detection, name)
    model = builder(weights=None, weights_backbone=None, num_classes=91, min_size=size, max_size=size)
    model = model.to(device).eval()

    def make_input(batch: int) -> list[torch.Tensor]:
        return list(_images(batch, size, device).float() / 255)

    yield from sweep("inference", f"torchvision_{name}", model, make_input, settings)


def bench_backbone(settings: Settings) -> Iterator[dict]:
    """Bare torchvision ResNet-18 features (C5, no head): the ceiling of a ResNet-18 detector."""
    resnet = torchvision.models.resnet18(weights=None)
    features = nn.Sequential(*list(resnet.children())[:-2]).to(settings.device).eval()

    def make_input(batch: int) -> torch.Tensor:
        return torch.randn(batch, 3, settings.size, settings.size, device=settings.device)

    yield from sweep("backbone", "resnet18_features", features, make_input, settings)


def bench_data(
    preset: str,
    size: int,
    workers: int,
    batches: int,
    train_json: str | None = None,
    train_images: str | None = None,
    device: torch.device | None = None,
) -> dict:
    """Decoded + augmented training images/s of the preset's pipeline on a COCO dataset, by default the generated
    shapes: on the CPU side, or with ``device`` JPEGs decoded and augmented on it (``data.decode_on_device``)."""
    from pointdet.engine.data import load_datasets, train_loader

    config = get_preset(preset)
    data = replace(config.data, input_size=size, num_workers=workers, train_json=train_json, train_images=train_images)
    config = replace(config, data=replace(data, decode_on_device=device is not None))
    polygons = getattr(config.model, "needs_polygons", False)  # LSNet's extreme points
    dataset, _ = load_datasets(config.data, with_masks=config.model.needs_masks, with_polygons=polygons)
    loader, _ = train_loader(dataset, config, device or "cpu")
    if len(loader) < 2:
        raise ValueError(f"{dataset.annotation_file}: too few images for two training batches of {loader.batch_size}")
    iterator = iter(loader)
    next(iterator)  # workers started, first batch decoded
    start = time.perf_counter()
    count = 0
    for _ in range(min(batches, len(loader) - 1)):
        count += len(next(iterator).images)
    synchronize(device or torch.device("cpu"))
    seconds = time.perf_counter() - start
    return {
        "kind": "data",
        "model": preset,
        "workers": workers,
        "decode_on": "cpu" if device is None else str(device),
        "size": size,
        "date": date.today().isoformat(),
        "images_per_s": significant(count / seconds),
    }


def bench_coco_eval(num_images: int = 50, per_image: int = 100, repeats: int = 3) -> Iterator[dict]:
    """COCO box evaluation of ``num_images x per_image`` detections (jittered ground truth of the shapes val
    split): plain pycocotools calls beside ``evaluate_coco`` with each backend, best of ``repeats``."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from pointdet.data.shapes import generate_shapes
    from pointdet.evaluation import evaluate_coco

    annotation_file = generate_shapes(num_train=1, num_val=num_images, seed=1).val_json
    document = json.loads(annotation_file.read_text())
    generator = torch.Generator().manual_seed(0)
    results = []
    for image in document["images"]:
        truths = [a for a in document["annotations"] if a["image_id"] == image["id"]]
        for i in range(per_image):
            truth = truths[i % len(truths)]
            jitter = (torch.randn(4, generator=generator) * 2).tolist()
            box = [v + j for v, j in zip(truth["bbox"], jitter, strict=True)]
            score = float(torch.rand((), generator=generator))
            results.append({"image_id": image["id"], "category_id": truth["category_id"], "bbox": box, "score": score})

    def plain_pycocotools():
        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth = COCO(str(annotation_file))
            evaluator = COCOeval(ground_truth, ground_truth.loadRes([dict(r) for r in results]), "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()

    timed = {
        "pycocotools": plain_pycocotools,
        "pointdet_pycocotools": lambda: evaluate_coco(annotation_file, results, backend="pycocotools"),
        "pointdet_faster_coco_eval": lambda: evaluate_coco(annotation_file, results, backend="faster_coco_eval"),
    }
    for label, fn in timed.items():
        seconds = min(time_per_call(fn, torch.device("cpu"), 0, 1) for _ in range(repeats))
        yield {
            "kind": "coco_eval",
            "model": label,
            "detections": len(results),
            "images": num_images,
            "date": date.today().isoformat(),
            "seconds": round(seconds, 3),
        }


def run(args: argparse.Namespace) -> list[dict]:
    """Every measurement of ``args``, printed as a JSON line as soon as it is taken; returns them."""
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precisions = [p for p in args.precisions if device.type == "cuda" or p != "fp16"]  # no fp16 kernels on CPU
    settings = Settings(args.size, args.batches, precisions, device, args.warmup, args.iters)
    records: list[dict] = []

    def emit(record: dict) -> None:
        records.append(record)
        print(json.dumps(record), flush=True)

    for preset in args.presets:
        for record in bench_preset(preset, settings, args.train_batch):
            emit(record)
        if args.host_size:
            emit(bench_host(preset, args.host_size))
    for peer in args.peers:
        for record in bench_peer(peer, settings):
            emit(record)
    if args.backbone:
        for record in bench_backbone(settings):
            emit(record)
    data_files = (args.data_json, args.data_images)
    for workers in args.workers:
        emit(bench_data(args.data_preset, args.size, workers, args.data_batches, *data_files))
        if args.data_decode_on_device:
            emit(bench_data(args.data_preset, args.size, workers, args.data_batches, *data_files, device=device))
    if args.coco_eval_images:
        for record in bench_coco_eval(args.coco_eval_images):
            emit(record)
    return records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("presets", nargs="*", default=["centernet_r18"], help="presets to measure")
    parser.add_argument("--size", type=int, default=512, help="square input side")
    parser.add_argument("--batches", type=_ints, default=(1, 32), help="inference batch sizes, e.g. 1,8,32")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch (default: the preset's)")
    parser.add_argument("--precisions", type=_names, default=("fp32", "bf16", "fp16"), help="fp32,bf16,fp16")
    parser.add_argument("--peers", type=_names, default=PEERS, help="torchvision detectors ('' for none)")
    parser.add_argument("--workers", type=_ints, default=(4,), help="data-loader worker counts to measure")
    parser.add_argument("--data-preset", default="centernet_dla34_shapes", help="pipeline measured by --workers")
    parser.add_argument("--data-batches", type=int, default=20, help="batches timed per worker count")
    parser.add_argument("--data-json", default=None, help="COCO file of the pipeline measured (default: shapes)")
    parser.add_argument("--data-images", default=None, help="image folder of --data-json")
    parser.add_argument(
        "--data-decode-on-device",
        action="store_true",
        help="also measure the pipeline with data.decode_on_device (JPEG decode + augmentation on --device)",
    )
    parser.add_argument(
        "--coco-eval-images", type=int, default=50, help="COCO evaluation of 100 detections x N images (0: off)"
    )
    parser.add_argument(
        "--backbone",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the bare ResNet-18 features (--no-backbone: not)",
    )
    parser.add_argument(
        "--host-size",
        type=int,
        default=64,
        help="host report per preset: aten ops and host ms of one predict call and training step on the CPU at this "
        "input side (0: off)",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def _names(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.split(",") if v)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pointdet.benchmark", description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
