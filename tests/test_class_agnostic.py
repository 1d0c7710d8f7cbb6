"""Class-agnostic box AP: the same detections scored with every class merged, to tell wrong classes from wrong boxes."""

import copy

import pytest

from pointdet.engine.evaluate import Evaluation
from pointdet.evaluation import merge_classes, run_coco_evaluation

GROUND_TRUTH = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 50, 40, 20], "area": 800, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [5, 60, 20, 30], "area": 600, "iscrowd": 0},
    ],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
}


def _detection(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_right_boxes_with_swapped_classes_score_zero_and_full_marks_merged():
    swapped = [
        _detection(1, 7, [10, 10, 30, 30], 0.9),
        _detection(1, 3, [50, 50, 40, 20], 0.8),
        _detection(2, 3, [5, 60, 20, 30], 0.7),
    ]
    ground_truth, before = copy.deepcopy(GROUND_TRUTH), copy.deepcopy(swapped)
    assert run_coco_evaluation(GROUND_TRUTH, swapped).metrics["AP"] == 0.0
    merged = run_coco_evaluation(*merge_classes(GROUND_TRUTH, swapped)).metrics
    assert merged["AP"] == pytest.approx(1.0) and merged["AP50"] == pytest.approx(1.0)
    assert ground_truth == GROUND_TRUTH and swapped == before  # the inputs are left as they were


def test_merged_ap_counts_two_classes_on_one_object_as_a_duplicate():
    # The cat boxed as a dog at 0.95 and as a cat at 0.5, the dogs as dogs at 0.9. Per class the dog at 0.95 is a
    # false positive ranked first (dog AP 2/3); merged it is the hit and the cat box at 0.5 the
    # duplicate, ranked after every object was found, so it costs nothing.
    detections = [
        _detection(1, 3, [10, 10, 30, 30], 0.5),
        _detection(1, 7, [10, 10, 30, 30], 0.95),
        _detection(1, 7, [50, 50, 40, 20], 0.9),
        _detection(2, 7, [5, 60, 20, 30], 0.9),
    ]
    ground_truth, results = merge_classes(GROUND_TRUTH, detections)
    assert ground_truth["categories"] == [{"id": 3, "name": "object"}]
    assert {annotation["category_id"] for annotation in ground_truth["annotations"]} == {3}
    assert run_coco_evaluation(ground_truth, results).metrics["AP"] == pytest.approx(1.0)
    cat, dog = 1.0, 2 / 3  # dog: precision 0, 1/2, 2/3 at recall 0, 1/2, 1; interpolated, 2/3 at every recall
    assert run_coco_evaluation(GROUND_TRUTH, detections).metrics["AP"] == pytest.approx((cat + dog) / 2)


@pytest.mark.parametrize("merged", [None, {"AP": 0.114, "AP50": 0.341, "AP75": 0.044}])
def test_the_description_shows_the_merged_line_only_for_several_classes(merged):
    text = Evaluation({"AP": 0.043, "AP50": 0.101, "AP75": 0.029}, class_agnostic=merged).describe()
    line = "class-agnostic box AP 11.40 | AP50 34.10 | AP75 4.40"
    assert (line in text) == (merged is not None)
