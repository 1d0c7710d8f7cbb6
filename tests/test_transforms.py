import torch

from pointdet.data.transforms import (
    Letterbox,
    PCALighting,
    RandomScaleCrop,
    Sample,
    crop,
    horizontal_flip,
    resize,
    sanitize,
    train_transforms,
)
from pointdet.structures import Instances


def _sample():
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    masks = torch.zeros(1, 40, 60, dtype=torch.uint8)
    masks[0, 10:20, 5:25] = 1
    image[:, 10:20, 5:25] = 255
    keypoints = torch.tensor([[[15.0, 10.0, 2.0], [25.0, 15.0, 2.0], [15.0, 20.0, 2.0], [5.0, 15.0, 2.0]]])
    return Sample(
        image, Instances(torch.tensor([[5.0, 10.0, 25.0, 20.0]]), torch.tensor([1]), keypoints, masks), 7, (40, 60)
    )


def _mask_box(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_flip_moves_everything_and_swaps_left_right():
    flipped = horizontal_flip(_sample(), flip_pairs=[(3, 1)])  # left <-> right
    inst = flipped.instances
    assert inst.boxes.tolist() == [[35.0, 10.0, 55.0, 20.0]]
    assert _mask_box(inst.masks[0]) == [35, 10, 55, 20]
    assert _mask_box(flipped.image[0] > 0) == [35, 10, 55, 20]
    # x -> 60 - x, then the 'right' (index 1) and 'left' (index 3) entries swap, so 'right' is still rightmost.
    assert inst.keypoints[0, :, 0].tolist() == [45.0, 55.0, 45.0, 35.0]


def test_flip_twice_is_identity():
    sample = _sample()
    twice = horizontal_flip(horizontal_flip(sample, [(3, 1)]), [(3, 1)])
    assert torch.equal(twice.image, sample.image)
    for name in ("boxes", "keypoints", "masks"):
        assert torch.equal(getattr(twice.instances, name), getattr(sample.instances, name))


def test_resize_and_crop_move_boxes_masks_keypoints_together():
    sample = crop(resize(_sample(), 80, 120), top=10, left=4, height=50, width=70)
    inst = sample.instances
    assert inst.boxes.tolist() == [[6.0, 10.0, 46.0, 30.0]]
    assert _mask_box(inst.masks[0]) == [6, 10, 46, 30]
    assert inst.keypoints[0, 1, :2].tolist() == [46.0, 20.0]


def test_sanitize_drops_boxes_outside_and_hides_keypoints():
    sample = sanitize(crop(_sample(), top=0, left=22, height=40, width=30))
    assert sample.instances.boxes.tolist() == [[0.0, 10.0, 3.0, 20.0]]
    assert sample.instances.keypoints[0, :, 2].tolist() == [0.0, 2.0, 0.0, 0.0]
    gone = sanitize(crop(_sample(), top=0, left=30, height=40, width=30))
    assert len(gone.instances) == 0 and gone.instances.masks.shape == (0, 40, 30)


def test_letterbox_records_scale_and_pads():
    boxed = Letterbox(120)(_sample())
    assert boxed.image.shape == (3, 120, 120) and boxed.scale == 2.0
    assert boxed.instances.boxes.tolist() == [[10.0, 20.0, 50.0, 40.0]]
    assert boxed.image[:, 80:].sum() == 0  # padding at the bottom


def test_random_scale_crop_output_size_and_seeded_determinism():
    transform = train_transforms(64, (0.6, 1.0, 1.3), 0.5, 0.4, [(3, 1)])
    outputs = []
    for _ in range(2):
        torch.manual_seed(11)
        outputs.append(transform(_sample()))
    assert outputs[0].image.shape == (3, 64, 64)
    assert torch.equal(outputs[0].image, outputs[1].image)
    assert torch.equal(outputs[0].instances.boxes, outputs[1].instances.boxes)
    crop_only = RandomScaleCrop(64, (1.0,))(_sample())
    assert crop_only.image.shape == (3, 64, 64)


def test_pca_lighting_adds_the_reference_colour_shift():
    sample = _sample()
    sample = type(sample)(torch.full((3, 4, 4), 100, dtype=torch.uint8), sample.instances)
    torch.manual_seed(0)
    alpha = torch.randn(3) * 0.1
    eigenvalues = torch.tensor([0.2141788, 0.01817699, 0.00341571])
    eigenvectors_bgr = torch.tensor(
        [
            [-0.58752847, -0.69563484, 0.41340352],
            [-0.5832747, 0.00994535, -0.81221408],
            [-0.56089297, 0.71832671, 0.41158938],
        ]
    )
    shift_bgr = eigenvectors_bgr @ (eigenvalues * alpha) * 255
    torch.manual_seed(0)
    lit = PCALighting(0.1)(sample)
    expected_rgb = (100 + shift_bgr.flip(0)).round()
    assert lit.image[:, 0, 0].tolist() == expected_rgb.tolist()
    assert torch.equal(PCALighting(0.0)(sample).image, sample.image)
