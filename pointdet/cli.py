"""Command line: ``pointdet train|eval|predict|export|benchmark|presets``; ``pointdet COMMAND --help`` for more."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import math
import re
import shutil
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

from pointdet.benchmark import add_arguments as add_benchmark_arguments
from pointdet.cli_data import add_data_commands
from pointdet.configs import (
    DEFAULT_PRESET,
    PRESETS,
    EvalConfig,
    ExperimentConfig,
    apply_eval_overrides,
    apply_overrides,
    config_from_checkpoint,
    get_preset,
)
from pointdet.configs.presets import atss_multiscale_eval
from pointdet.errors import ConfigError, PointdetError


def _scales(text: str) -> tuple[float, ...]:
    """``0.5,1,1.5``: one or more positive scale factors."""
    try:
        scales = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers (e.g. 0.75,1,1.25)") from None
    if not all(scale > 0 and math.isfinite(scale) for scale in scales):
        raise argparse.ArgumentTypeError(f"{text!r}: scales are positive factors of the input size (e.g. 0.75,1,1.25)")
    return scales


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 1 or more")
    return value


def _box_ranges(text: str) -> tuple[tuple[float, float], ...]:
    """``96:inf,64:inf,0:256``: one ``LOW:HIGH`` box-size range per test scale."""
    pairs = []
    for item in text.split(","):
        low, _, high = item.partition(":")
        try:
            pairs.append((float(low), float(high)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not LOW:HIGH (e.g. 96:inf or 0:256)") from None
    return tuple(pairs)


def cmd_train(args: argparse.Namespace) -> None:
    if args.preset is not None and "=" in args.preset:  # `train key=value ...`: the first override took its slot
        args.overrides.insert(0, args.preset)
        args.preset = None
    from pointdet.distributed import is_main_process
    from pointdet.engine.checkpoint import checkpoint_file, load_checkpoint
    from pointdet.engine.trainer import Trainer
    from pointdet.evaluation import format_metrics

    if args.resume is not None:
        resume = checkpoint_file(args.resume if args.resume != "latest" else _latest_run(args.preset))
        config = config_from_checkpoint(load_checkpoint(resume))
        _refuse_another_preset(args.preset, config, resume)
        print(f"resuming {resume}")
    else:
        resume, config = None, get_preset(args.preset or DEFAULT_PRESET)
    config = apply_overrides(config, args.overrides)
    started = time.time()
    trainer = Trainer(config, resume=resume)
    if is_main_process():
        print(f"run folder: {trainer.run_dir}")
    try:
        metrics = trainer.train()
    except KeyboardInterrupt:  # the trainer said where it stopped and how to continue
        raise SystemExit(130) from None
    if is_main_process():
        print(f"\nfinished in {time.time() - started:.0f} s — run folder: {trainer.run_dir}")
        print(f"metrics on {trainer.val_set.annotation_file}:\n{format_metrics(metrics)}")
        _report_skipped_images(trainer)


def _report_skipped_images(trainer) -> None:
    """Remind of the images a run did without: left out when the data were opened, or failing to decode."""
    for name, dataset in (("training", trainer.train_set), ("validation", trainer.val_set)):
        left_out = getattr(dataset, "left_out", [])
        if left_out:
            print(f"{len(left_out)} {name} image(s) were left out (data.skip_bad_images=true), e.g. {left_out[0]}")
    datasets = [getattr(getattr(trainer, name, None), "dataset", None) for name in ("loader", "val_loader")]
    failures = sum(dataset.decode_failures.value for dataset in datasets if hasattr(dataset, "decode_failures"))
    if failures:
        print(f"{failures} image read(s) failed to decode and were skipped (the warnings above name the files)")


def _refuse_another_preset(preset: str | None, config: ExperimentConfig, resume: str | Path) -> None:
    """``train PRESET --resume RUN`` where RUN was trained from another preset: the run's own config is what resumes,
    so the preset named would be ignored.

    Raises:
        ConfigError: the preset's config name is not the run's.
    """
    if preset is not None and get_preset(preset).name != config.name:
        raise ConfigError(
            f"--resume {resume} continues that run with its own config ({config.name}); the preset {preset} named "
            "here would be ignored: drop it (key=value overrides still apply), or train it without --resume"
        )


def _latest_run(preset: str | None) -> Path:
    name = preset or DEFAULT_PRESET
    runs = sorted(Path("runs").glob(f"{name}-*/last.pt"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"--resume: no runs/{name}-*/last.pt found; pass the run folder: --resume runs/NAME")
    return runs[-1].parent


def cmd_eval(args: argparse.Namespace) -> None:
    import pointdet
    from pointdet.engine.checkpoint import checkpoint_file, load_checkpoint
    from pointdet.engine.data import eval_loader, load_val_dataset
    from pointdet.engine.evaluate import describe_subset, evaluate_model, match_categories
    from pointdet.engine.plots import write_plots
    from pointdet.models.build import build_postprocess

    weights = checkpoint_file(args.weights)
    state = load_checkpoint(weights)
    config = apply_eval_overrides(config_from_checkpoint(state), args.overrides)
    settings = _eval_settings(config, args)
    _check_eval_outputs(args, kitti=config.model.task == "mono3d")
    predictor = pointdet.load(weights, device="cpu" if config.device == "cpu" else None)
    _refuse_3d_test_augmentation(config.model.task, bool(args.flip) or args.atss_ms_test, args.scales)
    dataset = load_val_dataset(config.data)
    subset = describe_subset(predictor.class_names, match_categories(predictor.class_names, dataset))
    if subset:
        print(f"{dataset.annotation_file}: {subset}")
    data = config.data
    loader = eval_loader(dataset, data, config.eval.batch_size, data.num_workers)
    # Decode-time options (e.g. `model.snap_joints=false`: pose "-reg") need no retraining: rebuild the post-processor.
    flip_pairs = [tuple(pair) for pair in state.get("flip_pairs", [])]
    num_joints = len(state.get("keypoint_names", []))
    predictor.model.postprocess = build_postprocess(
        config.model, predictor.model.feature_shapes, flip_pairs, num_joints
    )
    evaluation = evaluate_model(
        predictor.model,
        loader,
        dataset,
        settings,
        backend=args.backend,
        results=args.results,
        class_names=predictor.class_names,
    )
    mode = "flip" if settings.flip else "plain"
    mode += f", scales {','.join(map(str, settings.scales))}" if len(settings.scales) > 1 else ""
    mode += ", per-scale box ranges" if settings.scale_box_ranges else ""
    print(f"metrics of {weights} on {dataset.annotation_file} ({mode}):\n{evaluation.describe()}")
    if args.plots is not None:
        written = write_plots(args.plots, evaluation)
        coco = evaluation.confusion is not None
        none = "none (see the warnings above)" if coco else "none (they are drawn for COCO box evaluations)"
        print(f"plots: {', '.join(str(path) for path in written) or none}")


def _check_eval_outputs(args: argparse.Namespace, kitti: bool) -> None:
    """``--results`` (a file; KITTI: a folder) and ``--plots`` (a folder) can be written: checked before the evaluation.

    Raises:
        OutputPathError: one of them cannot be written.
    """
    from pointdet.engine.output_paths import writable_file, writable_folder

    if args.results is not None:
        (writable_folder if kitti else writable_file)(args.results, "--results")
    if args.plots is not None:
        writable_folder(args.plots, "--plots")


def _eval_settings(config: ExperimentConfig, args: argparse.Namespace) -> EvalConfig:
    """``config.eval`` with the command line's test settings: ``--atss-ms-test``, else ``--scales`` (the run's
    ``eval.scale_box_ranges`` belong to its own scales: with ``--scales`` only ``--scale-box-ranges`` apply), ``--flip``
    and ``--confusion-threshold``.

    Raises:
        ConfigError: ranges that are not one ``0 <= low < high`` pair per scale.
    """
    settings = config.eval
    if args.atss_ms_test:
        if args.scales is not None or args.scale_box_ranges is not None:
            raise SystemExit(
                "eval: --atss-ms-test sets the scales and their box ranges; drop --scales/--scale-box-ranges"
            )
        if config.data.test_resize != "keep_ratio":
            raise SystemExit(
                "eval: --atss-ms-test gives its shorter sides as factors of data.test_min_size (data.test_resize="
                f"keep_ratio); this run tests with data.test_resize={config.data.test_resize}: give --scales and "
                "--scale-box-ranges instead"
            )
        settings = atss_multiscale_eval(settings, config.data.test_min_size)
    elif args.scales is not None:
        settings = replace(settings, scales=tuple(args.scales), scale_box_ranges=args.scale_box_ranges or ())
    elif args.scale_box_ranges is not None:
        settings = replace(settings, scale_box_ranges=args.scale_box_ranges)
    if args.flip is not None:
        settings = replace(settings, flip=args.flip)
    if args.confusion_threshold is not None:
        settings = replace(settings, confusion_threshold=args.confusion_threshold)
    return settings


def _refuse_3d_test_augmentation(task: str, flip: bool, scales: tuple[float, ...] | None) -> None:
    if task == "mono3d" and (flip or tuple(scales or (1.0,)) != (1.0,)):
        raise SystemExit("--flip and --scales are not defined for monocular 3D (the paper uses no test augmentation)")


def _camera_for(image: Path, calib: str | None):
    """The (3, 4) camera of ``image``: ``--calib``, else the KITTI layout's ``../calib/<name>.txt``, else None."""
    from pointdet.data.kitti import read_calibration

    if calib is not None:
        return read_calibration(calib)
    beside = image.parent.parent / "calib" / f"{image.stem}.txt"
    return read_calibration(beside) if beside.is_file() else None


def cmd_predict(args: argparse.Namespace) -> None:
    import pointdet
    from pointdet.engine.inference import check_box_ranges
    from pointdet.engine.predict_files import (
        IMAGE_SUFFIXES,
        VIDEO_SUFFIXES,
        PredictOutputError,
        collect_inputs,
        prepare_output_folder,
    )
    from pointdet.engine.video import import_av

    try:
        check_box_ranges(args.scale_box_ranges, len(args.scales))
    except ValueError as error:
        raise SystemExit(f"predict: --scale-box-ranges: {error}") from None
    out = Path(args.out)
    inputs, skipped, below_out = collect_inputs(args.images, out)
    for line in skipped:
        print(f"predict: skipped {line}", file=sys.stderr)
    if below_out:
        print(
            f"predict: left out {below_out} file(s) below the output folder {out} (outputs, not inputs)",
            file=sys.stderr,
        )
    if not inputs:
        raise SystemExit(
            f"predict: no readable images ({', '.join(sorted(IMAGE_SUFFIXES))}) or videos "
            f"({', '.join(sorted(VIDEO_SUFFIXES))}) in {args.images}"
            + (f"; {len(skipped)} input(s) skipped" if skipped else "")
        )
    videos = [item for item in inputs if item.is_video]
    images = [item for item in inputs if not item.is_video]
    if videos:
        import_av()  # before the model loads: a missing PyAV is one sentence, not a traceback
    predictor = pointdet.load(args.weights)
    mono3d = predictor.calibration is not None
    _refuse_3d_test_augmentation("mono3d" if mono3d else "", args.flip, args.scales)
    if mono3d and videos:
        raise SystemExit("predict: videos are for 2D, pose and mask models; a monocular 3D model reads images")
    try:
        prepare_output_folder(out, inputs, mono3d, args.overwrite)
    except PredictOutputError as error:
        raise SystemExit(f"predict: {error}") from None
    processed = _predict_images(predictor, images, out, args, skipped, mono3d) if images else 0
    frames = _predict_videos(predictor, videos, out, args, skipped)
    if skipped:
        done = f"{processed} image(s)" + (f" and {frames} video frame(s)" if videos else "")
        raise SystemExit(f"predict: {len(skipped)} input(s) skipped (listed above), {done} processed")


def _predict_videos(predictor, videos: list, out: Path, args: argparse.Namespace, skipped: list[str]) -> int:
    """Each video (a ``PredictInput``) through ``engine.video.predict_video``; problems go to ``skipped``. Returns the
    frames done."""
    from pointdet.engine.video import VideoError, predict_video

    frames = 0
    for item in videos:
        path = item.path
        try:
            result = predict_video(
                predictor,
                path,
                out,
                args.batch_size,
                args.score_threshold,
                args.flip,
                tuple(args.scales),
                box_ranges=args.scale_box_ranges,
                name=item.name,
            )
        except VideoError as error:
            skipped.append(str(error))
            print(f"predict: skipped {error}", file=sys.stderr)
            continue
        frames += result.frames
        rate = result.frames / max(result.seconds, 1e-9)
        print(
            f"{path}: {result.frames} frame(s) in {result.seconds:.2f} s ({rate:.1f} frames/s on {predictor.device}); "
            f"wrote {result.video} and {result.lines}"
        )
        if result.problem:
            skipped.append(f"{path}: {result.problem}")
            print(f"predict: {path}: {result.problem}", file=sys.stderr)
    return frames


def _predict_images(
    predictor, files: list, out: Path, args: argparse.Namespace, skipped: list[str], mono3d: bool
) -> int:
    """Drawn images and ``detections.json`` (KITTI label files for monocular 3D) for ``files`` (``PredictInput``s, each
    written to its own name); unreadable images go to ``skipped``. Returns the images done."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from pointdet.data.images import ImageReadError, read_image
    from pointdet.data.kitti import write_label_file
    from pointdet.engine.predict_files import DETECTIONS_FILE, writable_path
    from pointdet.engine.visualize import draw_detections, draw_mono3d
    from pointdet.evaluation import detections_to_kitti, prediction_records

    records, started, warned = [], time.time(), False
    processed = 0
    for start in tqdm(range(0, len(files), args.batch_size), desc="predict", unit="batch"):
        chunk, images = [], []
        for number, item in enumerate(files[start : start + args.batch_size], start):
            try:
                images.append(read_image(item.path))
                chunk.append((number, item))
            except ImageReadError as error:  # unreadable, cut off, a decompression bomb: the rest still run
                skipped.append(str(error))
                tqdm.write(f"predict: skipped {error}", file=sys.stderr)
        if not images:
            continue
        processed += len(images)
        detections = predictor.predict(
            images, flip=args.flip, scales=args.scales, batch_size=args.batch_size, box_ranges=args.scale_box_ranges
        )
        for (number, item), image, dets in zip(chunk, images, detections, strict=True):
            path, (drawn_file, *label_file) = item.path, item.output_files(out, mono3d)
            if mono3d:
                camera = _camera_for(path, args.calib)
                if camera is None:
                    camera = np.asarray(predictor.calibration)
                    if not warned:
                        print(f"no --calib and no ../calib/{path.stem}.txt: using the training camera")
                        warned = True
                objects = detections_to_kitti(dets, camera, predictor.class_names)
                write_label_file(writable_path(label_file[0]), objects)
                drawn = draw_mono3d(image, dets, torch.from_numpy(camera), predictor.class_names, args.score_threshold)
                drawn.save(writable_path(drawn_file), quality=92)
                continue
            draw_detections(image, dets, predictor.class_names, args.score_threshold, predictor.skeleton).save(
                writable_path(drawn_file), quality=92
            )
            records += [
                {**record, "file_name": str(path)}
                for record in prediction_records(
                    dets, number, predictor.category_ids, predictor.class_names, tuple(image.shape[-2:])
                )
            ]
    elapsed = time.time() - started
    if mono3d:
        written = f"drawn images (3D boxes + bird's-eye view) and KITTI result files in {out}, {out / 'labels'}"
    else:
        writable_path(out / DETECTIONS_FILE).write_text(json.dumps(records))
        written = f"drawn images and detections.json (COCO results format) in {out}"
    per_image = 1000 * elapsed / max(processed, 1)
    print(f"{processed} image(s) in {elapsed:.2f} s ({per_image:.1f} ms/image on {predictor.device}); {written}")
    return processed


def cmd_export(args: argparse.Namespace) -> None:
    import pointdet
    from pointdet.engine.output_paths import writable_file
    from pointdet.export import export_onnx

    writable_file(args.out, "--out")
    predictor = pointdet.load(args.weights, device="cpu")
    height = predictor.input_height or predictor.input_size
    try:
        names = export_onnx(predictor.model, args.out, height, predictor.input_size, args.k)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    candidates = getattr(predictor.model.postprocess, "export_k", None)  # decoders whose NMS the caller runs
    k = args.k or candidates or 100
    what = "pre-NMS candidates: apply class-wise NMS as the README shows" if candidates else "detections"
    print(
        f"wrote {args.out}: input 'images' (B, 3, H, W) uint8 RGB, any batch and H, W multiples of 32 "
        f"(trained at {height}x{predictor.input_size}); outputs {', '.join(names)} (top {k} {what} per image, "
        "pixels of the input)"
    )


def cmd_benchmark(args: argparse.Namespace) -> None:
    from pointdet.benchmark import run

    run(args)


def cmd_convert(args: argparse.Namespace) -> None:
    from pointdet.convert.sources import Request, convert_official

    request = Request(args.file, args.out, args.arch, args.task, args.classes, args.input_size)
    written = convert_official(args.framework, request)
    print(f"wrote {written}: use it with `pointdet eval/predict/export --weights {args.out}` or pointdet.load()")


def cmd_presets(_: argparse.Namespace) -> None:
    width = max(len(name) for name in PRESETS) + 2
    columns = max(shutil.get_terminal_size((120, 24)).columns, width + 40)
    for name, fn in PRESETS.items():
        text = _first_sentence(fn.__doc__ or "") + (" (default)" if name == DEFAULT_PRESET else "")
        lines = textwrap.wrap(text, columns - width, break_on_hyphens=False, break_long_words=False) or [""]
        print(f"{name:<{width}}{lines[0]}", *(" " * width + line for line in lines[1:]), sep="\n")


def _what_preset_trains(name: str) -> str:
    """A preset docstring's opening words, before its first colon ("RepPoints v2 on the shipped raccoon photos")."""
    return _first_sentence(PRESETS[name].__doc__ or name).split(":")[0].rstrip(".")


def _first_sentence(docstring: str) -> str:
    """The first sentence of a docstring's first paragraph, on one line, without reST's double backquotes."""
    paragraph = " ".join(inspect.cleandoc(docstring).split("\n\n")[0].split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph)[0].replace("``", "")


def _train_epilog() -> str:
    """The top-level config keys with their defaults and meanings (``ExperimentConfig``'s docstring); the sections."""
    doc = inspect.cleandoc(ExperimentConfig.__doc__ or "")
    described = dict(re.findall(r"^ {4}(\w+): (.*(?:\n {8}.*)*)", doc, re.M))
    lines = ["config keys (key=value overrides, e.g. max_steps=100 seed=1 device=cpu optim.epochs=10):"]
    for field in dataclasses.fields(ExperimentConfig):
        if field.default is not dataclasses.MISSING:
            meaning = " ".join(described.get(field.name, "").replace("``", "").split()).rstrip(".")
            shown = field.name != "name" and field.default is not None  # every preset sets its name
            default = f" [default: {field.default}]" if shown else ""
            lines.append(f"  {field.name:<20}{meaning}{default}")
    lines.append(
        "  data.KEY, model.KEY, optim.KEY, eval.KEY: the sections' keys; a run's config.yaml lists every key and value"
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pointdet", description="Point-based detection: train, evaluate, predict.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help=f"train a preset (default: {DEFAULT_PRESET}, {_what_preset_trains(DEFAULT_PRESET)})",
        epilog=_train_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "preset",
        nargs="?",
        default=None,
        help=f"preset name (default {DEFAULT_PRESET}); see `pointdet presets`. With --resume RUN: none, the run's own",
    )
    train.add_argument(
        "overrides", nargs="*", help="config overrides key=value, e.g. optim.epochs=10 data.train_json=a.json"
    )
    train.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="RUN",
        help="continue a run folder or last.pt (no value: the newest run of the preset)",
    )
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="COCO (box/keypoint) or KITTI metrics of a checkpoint")
    evaluate.add_argument("--weights", required=True, help="checkpoint (.pt) or run folder")
    evaluate.add_argument("overrides", nargs="*", help="e.g. data.val_json=val.json data.val_images=images/")
    evaluate.add_argument(
        "--flip", action=argparse.BooleanOptionalAction, default=None, help="flip test (default: the run's eval.flip)"
    )
    evaluate.add_argument(
        "--scales",
        type=_scales,
        default=None,
        help="test scales, e.g. 0.5,0.75,1,1.25,1.5 (default: the run's eval.scales)",
    )
    evaluate.add_argument(
        "--scale-box-ranges",
        type=_box_ranges,
        default=None,
        metavar="LOW:HIGH,...",
        help="valid box size sqrt(area) per test scale, in the pixels the network sees at that scale, e.g. "
        "96:inf,0:inf,0:256 (default: the run's eval.scale_box_ranges, unless --scales is given)",
    )
    evaluate.add_argument(
        "--atss-ms-test",
        action="store_true",
        help="the ATSS / LSNet multi-scale test: flip, shorter sides 400-1800 as factors of data.test_min_size, "
        "their box ranges, merged by the model's own merge (LSNet: box voting)",
    )
    evaluate.add_argument(
        "--backend",
        choices=["pycocotools", "faster_coco_eval"],
        default="pycocotools",
        help="COCO evaluator: pycocotools (default) or faster_coco_eval (the same numbers, faster on large sets)",
    )
    evaluate.add_argument(
        "--results", default=None, help="also write the COCO results JSON here (KITTI: a folder of result files)"
    )
    evaluate.add_argument(
        "--plots", default=None, metavar="DIR", help="draw precision-recall curves and confusion matrices into DIR"
    )
    evaluate.add_argument(
        "--confusion-threshold",
        type=float,
        default=None,
        help="score a detection needs to count in the confusion matrix (default: the run's eval.confusion_threshold)",
    )
    evaluate.set_defaults(func=cmd_eval)

    predict = sub.add_parser(
        "predict",
        help="detect objects in images, videos or folders; writes drawn images + detections.json (or KITTI files), "
        "annotated videos + one JSON line per frame",
    )
    predict.add_argument("images", nargs="+", help="image and video (mp4, mov, avi, mkv, webm) files and/or folders")
    predict.add_argument("--weights", required=True, help="checkpoint (.pt) or run folder")
    predict.add_argument(
        "--out",
        default="predictions",
        help="output folder (default: predictions); it may not hold the inputs. Folders given as inputs keep their "
        "sub-folders there; inputs that share a name get their suffix (a_jpg.jpg, a_png.jpg)",
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files an earlier predict wrote into --out (without it, predict refuses to replace them)",
    )
    predict.add_argument("--flip", action="store_true", help="also run the mirrored image and merge (flip test)")
    predict.add_argument(
        "--scales",
        type=_scales,
        default=(1.0,),
        help="test scales as factors of the model's input size, merged, e.g. 0.75,1,1.25 (default: 1)",
    )
    predict.add_argument(
        "--scale-box-ranges",
        type=_box_ranges,
        default=(),
        metavar="LOW:HIGH,...",
        help="valid box size sqrt(area) per test scale (pixels the network sees at that scale), e.g. 96:inf,0:256",
    )
    predict.add_argument(
        "--score-threshold", type=float, default=0.3, help="minimum score drawn (the JSON keeps all top-100)"
    )
    predict.add_argument(
        "--batch-size", type=_positive_int, default=8, help="images or video frames per model call (default: 8)"
    )
    predict.add_argument(
        "--calib",
        default=None,
        help="KITTI calibration file for monocular 3D models (default: ../calib/NAME.txt beside image_2/, "
        "else the training camera)",
    )
    predict.set_defaults(func=cmd_predict)

    export = sub.add_parser("export", help="write a trained model with its decoder as an ONNX graph")
    export.add_argument("--weights", required=True, help="checkpoint (.pt) or run folder")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="only ONNX for now")
    export.add_argument("--out", default="model.onnx", help="output file (default: model.onnx)")
    export.add_argument(
        "--k",
        type=_positive_int,
        default=None,
        help="detections per image (default: 100; RepPoints and LSNet: 1000 pre-NMS candidates)",
    )
    export.set_defaults(func=cmd_export)

    benchmark = sub.add_parser(
        "benchmark", help="throughput of presets beside torchvision peers and the bare backbone, as JSON lines"
    )
    add_benchmark_arguments(benchmark)
    benchmark.set_defaults(func=cmd_benchmark)

    convert = sub.add_parser("convert", help="an official model-zoo checkpoint as a pointdet checkpoint")
    convert.add_argument("file", help="the official checkpoint (.pth), read with weights_only=True")
    convert.add_argument(
        "--from",
        dest="framework",
        choices=["centernet", "centripetalnet", "mmdet", "cpm", "reppointsv2", "lsnet"],
        default="centernet",
        help="xingyizhou/CenterNet, KiveeDong/CentripetalNet, mmdetection v2/v3 CornerNet, CentripetalNet and Grid "
        "R-CNN, zhubinQAQ/CPM-R-CNN, Scalsol/RepPointsV2 (RepPoints v2, Dense RepPoints v2), or Duankaiwen/LSNet "
        "(detection, contours, pose, LSNet-CPV)",
    )
    convert.add_argument(
        "--arch",
        default=None,
        help="centernet: dla34, resdcn18/34/50/101, hg104; centripetalnet, mmdet: hourglass104, hourglass52; "
        "reppointsv2: resnet50, resnet101; lsnet: resnet50, resnet101, resnext101_64x4d, res2net101_v1d (default: "
        "read from the file)",
    )
    convert.add_argument("--task", choices=["det", "pose", "3d"], default=None, help="default: read from the file")
    convert.add_argument(
        "--classes", default=None, help="coco, voc, kitti, person or a file of names, one a line (default: the zoo's)"
    )
    convert.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="test input size (default: 384 for VOC, e.g. 512 for its _512 models)",
    )
    convert.add_argument("--out", required=True, help="run folder to write (its last.pt)")
    convert.set_defaults(func=cmd_convert)

    presets = sub.add_parser("presets", help="list the named presets")
    presets.set_defaults(func=cmd_presets)
    add_data_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except PointdetError as error:  # the user's input (data, config, checkpoint): the message says what and where
        raise SystemExit(f"{'config error' if isinstance(error, ConfigError) else 'error'}: {error}") from None
    except Exception as error:
        from pointdet.engine.output_paths import NO_SPACE, free_space, is_disk_full

        if not is_disk_full(error):
            raise  # a bug in pointdet: its traceback
        where = getattr(error, "filename", None)
        where = f" while writing {where} ({free_space(Path(where).parent)})" if where else ""
        raise SystemExit(f"error: the disk is full ({NO_SPACE}){where}") from None
