"""The pictures of a run folder: training curves, precision-recall curves and the confusion matrix (PNG files).

matplotlib draws off-screen (its Agg backend, no display needed). Drawing never stops a run: ``write_plots``
and ``write_training_curves`` report a failure as a warning and return.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pointdet.evaluation import pr_curves, row_normalised

logger = logging.getLogger(__name__)

TRAINING_CURVES = "training_curves.png"
PR_CURVES = {"0.5": "pr_curves_iou50.png", "0.5:0.95": "pr_curves_iou50-95.png"}
CONFUSION = "confusion_matrix.png"
CONFUSION_NORMALISED = "confusion_matrix_normalized.png"
VALIDATION_METRICS = ("AP", "AP50", "kp_AP", "kp_AP50", "segm_AP", "segm_AP50")
MAX_LEGEND = 20  # more classes: thin grey lines, the best and worst few named
ANNOTATED_CELLS = 30  # more classes: no numbers in the cells, the most confused pairs listed beside


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _safely(what: str, draw: Callable[[], None]) -> bool:
    """Run ``draw``; on any error log a warning naming ``what`` and return False (a run goes on)."""
    try:
        draw()
        return True
    except Exception as error:  # noqa: BLE001 - a picture must never stop training or evaluation
        logger.warning("could not draw %s (%s: %s); the run goes on", what, type(error).__name__, error)
        return False


def write_training_curves(folder: str | Path, loss_log: Sequence[dict], history: Sequence[dict]) -> bool:
    """``training_curves.png``: every loss term and the learning rate against steps (``loss_log`` entries
    ``{"step", "lr", <term>: value}``), the validation AP numbers against the steps they were measured at (``history``
    entries ``{"step", "metrics"}``). False if drawing failed (the warning says why)."""
    return _safely(TRAINING_CURVES, lambda: _draw_training_curves(Path(folder), loss_log, history))


def _draw_training_curves(folder: Path, loss_log: Sequence[dict], history: Sequence[dict]) -> None:
    plt = _pyplot()
    terms = [key for key in (loss_log[0] if loss_log else {}) if key not in ("step", "lr")]
    metrics = [name for name in VALIDATION_METRICS if history and name in history[-1]["metrics"]]
    panels = [*terms, "total loss", "learning rate"] if terms else []
    panels += ["validation"] if metrics else []
    if not panels:
        return
    folder.mkdir(parents=True, exist_ok=True)
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    steps = [entry["step"] for entry in loss_log]
    for ax, panel in zip(axes.flat, panels, strict=False):
        if panel == "validation":
            _draw_validation(ax, history, metrics, last_step=max(steps[-1:] + [entry["step"] for entry in history]))
        else:
            if panel == "total loss":
                values = [sum(entry[t] for t in terms) for entry in loss_log]
            else:
                values = [entry["lr" if panel == "learning rate" else panel] for entry in loss_log]
            ax.plot(steps, values, linewidth=1, marker="." if len(values) < 30 else None)
            ax.set(xlabel="step", title=panel)
            if panel != "learning rate" and min(values) > 0:
                ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(folder / TRAINING_CURVES, dpi=80)
    plt.close(figure)


def _draw_validation(ax, history: Sequence[dict], metrics: Sequence[str], last_step: int) -> None:
    """The validation numbers (%) against the step of each evaluation, on the loss panels' step axis; the axis runs
    from 0 to a little above the best value (at least 10 %), and a few points are labelled with their values."""
    steps = [entry["step"] for entry in history]
    top = 0.0
    for name in metrics:
        values = [100 * entry["metrics"].get(name, np.nan) for entry in history]
        ax.plot(steps, values, marker="o", label=name, clip_on=False)
        top = max([top, *(v for v in values if np.isfinite(v))])
        if len(values) <= 3:
            for step, value in zip(steps, values, strict=True):
                ax.annotate(f"{value:.1f}", (step, value), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set(xlabel="step", ylabel="%", title="validation", xlim=(0, max(last_step, 1) * 1.05))
    ax.set_ylim(0, min(100.0, max(10.0, 1.15 * top)))
    ax.legend(fontsize=7)


def write_plots(folder: str | Path, evaluation) -> list[Path]:
    """The precision-recall curves and confusion matrices of an ``engine.evaluate.Evaluation`` (COCO) into
    ``folder``; the files written (a failed picture is reported as a warning and left out)."""
    folder = Path(folder)
    written = []
    _safely("the plots folder", lambda: folder.mkdir(parents=True, exist_ok=True))
    if evaluation.box_precision is not None:
        for iou, name in PR_CURVES.items():
            if _safely(name, lambda iou=iou, name=name: _draw_pr_curves(folder / name, evaluation, iou)):
                written.append(folder / name)
    if evaluation.confusion is not None:
        for normalised, name in ((False, CONFUSION), (True, CONFUSION_NORMALISED)):
            draw = lambda n=normalised, name=name: _draw_confusion(folder / name, evaluation, n)  # noqa: E731
            if _safely(name, draw):
                written.append(folder / name)
    return written


def _draw_pr_curves(path: Path, evaluation, iou: str) -> None:
    plt = _pyplot()
    per_class, all_classes = pr_curves(evaluation.box_precision, iou)
    recall = np.linspace(0, 1, per_class.shape[1])
    names = evaluation.class_names
    figure, ax = plt.subplots(figsize=(6.4, 4.8))
    present = [k for k in range(len(names)) if not np.isnan(per_class[k]).all()]
    order = sorted(present, key=lambda k: -per_class[k].mean())
    named = order if len(order) <= MAX_LEGEND else order[:5] + order[-5:]
    for k in order:
        if k in named:
            ax.plot(recall, per_class[k], linewidth=1, label=f"{names[k]} {100 * per_class[k].mean():.1f}")
        else:
            ax.plot(recall, per_class[k], linewidth=0.5, color="0.75")
    ax.plot(recall, all_classes, linewidth=3, color="black", label=f"all classes {100 * all_classes.mean():.1f}")
    label = "IoU 0.5" if iou == "0.5" else "IoU 0.5:0.95 (mean over thresholds)"
    title = f"precision-recall, {label}"
    if len(order) > MAX_LEGEND:
        title += f"\n{len(order)} classes: best and worst 5 named, the others grey"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="AP (%)", title_fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _draw_confusion(path: Path, evaluation, normalised: bool) -> None:
    plt = _pyplot()
    counts = evaluation.confusion
    names = [*evaluation.class_names, "background"]
    values = row_normalised(counts) if normalised else counts
    many = len(names) > ANNOTATED_CELLS
    side = min(16.0, max(5.0, 0.2 * len(names) + 3))
    width = side + (4.0 if many else 0.0)
    figure, ax = plt.subplots(figsize=(width, side))
    shown = np.where(values > 0, values, np.nan)  # empty cells stay white
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalised else max(1, counts.max()))
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    font = max(4, min(9, int(400 / len(names))))
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=font)
    ax.set_yticks(range(len(names)), names, fontsize=font)
    ax.set(xlabel="predicted", ylabel="true")
    kind = "row-normalised" if normalised else "counts"
    ax.set_title(
        f"confusion matrix ({kind}), IoU {0.5}, score >= {evaluation.confusion_threshold:g}\n"
        "last row: false detections, last column: missed objects",
        fontsize=9,
    )
    if not many:
        for (row, column), value in np.ndenumerate(values):
            if counts[row, column]:
                text = f"{value:.2f}" if normalised else str(value)
                color = "white" if shown[row, column] > 0.6 * np.nanmax(shown) else "black"
                ax.text(column, row, text, ha="center", va="center", fontsize=font, color=color)
    else:
        figure.text(0.74, 0.5, _confused_pairs(counts, names), fontsize=8, family="monospace", va="center")
        figure.subplots_adjust(right=0.72)
    if not many:
        figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _confused_pairs(counts: np.ndarray, names: Sequence[str], shown: int = 25) -> str:
    """The ``shown`` largest off-diagonal cells as text lines ``true -> predicted  count``."""
    off = counts.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:shown]
    lines = ["most confused (true -> predicted):"]
    for row, column in zip(*np.unravel_index(order, off.shape), strict=True):
        if off[row, column]:
            lines.append(f"{off[row, column]:5d}  {names[row]} -> {names[column]}")
    return "\n".join(lines)
