"""Per-class numbers and precision-recall curves read from COCOeval's own accumulated ``precision`` array.

COCOeval's ``eval["precision"]`` is ``(T, R, K, A, M)``: T IoU (or OKS) thresholds 0.5:0.05:0.95, R = 101 recall
points 0:0.01:1, K categories (sorted ids), A area ranges (index 0 = all) and M detection limits (last = the one
AP is reported at); ``-1`` marks a category without ground truth. AP is the mean of the entries above -1, so a
class's AP is the mean over its (T, R) slice and the area under each curve below (the mean over the 101 recall
points, COCO's interpolation) is the AP the evaluator reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IOU_RANGES = {"0.5": slice(0, 1), "0.5:0.95": slice(None)}  # threshold index ranges of the (T, ...) axis


def _slice(precision: np.ndarray) -> np.ndarray:
    """(T, R, K) precision over all areas at the largest detection limit; NaN where a class has no ground truth."""
    values = precision[:, :, :, 0, -1].astype(np.float64)
    values[values < 0] = np.nan
    return values


def per_class_ap(precision: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{name: {"AP": ..., "AP50": ...}}`` in [0, 1] for each of the K classes (-1 without ground truth)."""
    values = _slice(precision)
    if values.shape[2] != len(class_names):
        raise ValueError(f"precision holds {values.shape[2]} classes, {len(class_names)} names were given")
    table = {}
    for k, name in enumerate(class_names):
        ap, ap50 = values[:, :, k], values[0, :, k]
        table[name] = {
            "AP": -1.0 if np.isnan(ap).all() else float(np.nanmean(ap)),
            "AP50": -1.0 if np.isnan(ap50).all() else float(np.nanmean(ap50)),
        }
    return table


def pr_curves(precision: np.ndarray, iou: str) -> tuple[np.ndarray, np.ndarray]:
    """Precision at COCO's 101 recall points for IoU ``0.5`` or averaged over ``0.5:0.95``.

    Returns:
        per_class: (K, 101), NaN rows for classes without ground truth.
        all_classes: (101,) the mean over classes with ground truth (its mean is the evaluator's AP / AP50).
    """
    values = _slice(precision)[IOU_RANGES[iou]]  # (T', R, K)
    with np.errstate(invalid="ignore"):
        per_class = values.mean(axis=0).T  # NaN stays NaN for classes without ground truth
    present = ~np.isnan(per_class).all(axis=1)
    all_classes = per_class[present].mean(axis=0) if present.any() else np.zeros(per_class.shape[1])
    return per_class, all_classes


def format_per_class(table: dict[str, dict[str, float]], title: str = "per class", shown: int = 10) -> str:
    """AP / AP50 per class in percent, sorted by AP (best first); with more than ``2 * shown`` classes only the
    best and the worst ``shown`` are listed."""
    rows = sorted(table.items(), key=lambda item: item[1]["AP"], reverse=True)
    width = max([len(name) for name in table] + [5])
    lines = [f"{title}:", f"{'name':<{width}} | {'AP':>6} | {'AP50':>6}"]

    def line(name: str, values: dict[str, float]) -> str:
        cells = [f"{100 * values[key]:6.2f}" if values[key] >= 0 else f"{'-':>6}" for key in ("AP", "AP50")]
        return f"{name:<{width}} | {' | '.join(cells)}"

    if len(rows) > 2 * shown:
        lines += [line(*row) for row in rows[:shown]]
        lines.append(f"... {len(rows) - 2 * shown} classes between (all in metrics.json) ...")
        lines += [line(*row) for row in rows[-shown:]]
    else:
        lines += [line(*row) for row in rows]
    return "\n".join(lines)
