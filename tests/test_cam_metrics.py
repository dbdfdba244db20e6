"""Specs of mcmikd.cam_metrics on hand-made maps with known answers, and of the Grad-CAM wrappers on a tiny net.

Boxes are (x0, y0, x1, y1) with exclusive ends: (1, 2, 4, 5) covers columns 1..3 and rows 2..4.
"""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from mcmikd.cam_metrics import (
    area_above,
    box_from_map,
    box_iou,
    context_mass,
    gradcam_maps,
    measure,
    pointing_hit,
    spatial_entropy,
)


def rect_map(box, size=(8, 8), value=1.0) -> torch.Tensor:
    """A (H, W) map that is `value` inside `box` and 0 elsewhere."""
    cam = torch.zeros(size)
    x0, y0, x1, y1 = box
    cam[y0:y1, x0:x1] = value
    return cam


# --------------------------------------------------------------------------- box_from_map


def test_a_single_rectangle_gives_exactly_its_own_box():
    assert box_from_map(rect_map((1, 2, 4, 5))) == (1, 2, 4, 5)
    assert box_from_map(rect_map((0, 0, 8, 8))) == (0, 0, 8, 8)
    assert box_from_map(rect_map((7, 7, 8, 8))) == (7, 7, 8, 8)  # one corner pixel


def test_of_two_blobs_the_larger_one_gives_the_box_even_when_the_smaller_holds_the_maximum():
    cam = rect_map((0, 0, 2, 2), size=(10, 10))  # 4 pixels
    cam[5:9, 4:9] = 0.8  # 20 pixels, above 0.2 * max
    assert box_from_map(cam) == (4, 5, 9, 9)


def test_among_equally_large_blobs_the_one_holding_the_maximum_wins_else_the_first():
    cam = rect_map((0, 0, 2, 2), size=(8, 8)) + rect_map((5, 5, 7, 7), size=(8, 8))
    assert box_from_map(cam) == (0, 0, 2, 2)  # same values: first in row-major order
    cam[6, 6] = 2.0
    assert box_from_map(cam) == (5, 5, 7, 7)  # the maximum decides


def test_regions_are_eight_connected():
    cam = torch.zeros(6, 6)
    cam[1, 1] = cam[2, 2] = cam[3, 3] = 1.0  # a diagonal touches only at corners
    cam[5, 0] = 1.0
    assert box_from_map(cam) == (1, 1, 4, 4)


def test_a_faint_blob_below_the_threshold_is_ignored_and_joins_when_the_threshold_drops():
    cam = rect_map((0, 0, 3, 3), size=(8, 8))  # 9 pixels at 1.0
    cam[4:8, 4:8] = 0.1  # 16 pixels, larger but faint
    assert box_from_map(cam, threshold=0.2) == (0, 0, 3, 3)
    assert box_from_map(cam, threshold=0.1) == (4, 4, 8, 8)  # value >= threshold * max counts
    assert box_from_map(cam, threshold=1.0) == (0, 0, 3, 3)


def test_an_all_zero_map_gives_the_whole_image_box():
    assert box_from_map(torch.zeros(5, 7)) == (0, 0, 7, 5)


def test_unscaled_maps_and_numpy_arrays_are_accepted():
    assert box_from_map(rect_map((2, 1, 5, 3), value=37.5).numpy()) == (2, 1, 5, 3)


# --------------------------------------------------------------------------- box_iou


def test_iou_of_known_boxes():
    assert box_iou((0, 0, 4, 4), (0, 0, 4, 4)) == 1.0
    assert box_iou((0, 0, 4, 4), (2, 0, 6, 4)) == pytest.approx(8 / 24)  # half of each box overlaps
    assert box_iou((0, 0, 4, 4), (0, 0, 2, 4)) == pytest.approx(0.5)  # one box holds the other, half its area
    assert box_iou((0, 0, 4, 4), (4, 0, 8, 4)) == 0.0  # touching edges: exclusive ends, disjoint
    assert box_iou((0, 0, 2, 2), (5, 5, 7, 7)) == 0.0
    assert box_iou(torch.tensor([0, 0, 4, 4]), [2, 2, 4, 4]) == pytest.approx(4 / 16)


# --------------------------------------------------------------------------- pointing, context, area, entropy


def test_pointing_hits_when_the_maximum_is_inside_the_box_and_misses_otherwise():
    cam = torch.zeros(8, 8)
    cam[3, 5] = 1.0  # row 3, column 5
    assert pointing_hit(cam, (5, 3, 6, 4))
    assert pointing_hit(cam, (0, 0, 8, 8))
    assert not pointing_hit(cam, (0, 0, 5, 8))  # column 5 is the exclusive end
    assert not pointing_hit(cam, (0, 4, 8, 8))


def test_pointing_ties_go_to_the_first_maximum_in_row_major_order():
    cam = rect_map((2, 2, 4, 4))
    assert pointing_hit(cam, (2, 2, 3, 3))
    assert not pointing_hit(cam, (3, 3, 4, 4))


def test_context_mass_is_the_share_of_mass_outside_the_box():
    cam = torch.ones(4, 4)
    assert context_mass(cam, (0, 0, 2, 4)) == pytest.approx(0.5)  # half the map inside the box
    assert context_mass(cam, (0, 0, 4, 4)) == 0.0
    assert context_mass(rect_map((0, 0, 2, 2), size=(4, 4)), (2, 2, 4, 4)) == 1.0
    assert context_mass(cam, (-3, -3, 2, 4)) == pytest.approx(0.5)  # parts outside the image are ignored
    assert math.isnan(context_mass(torch.zeros(4, 4), (0, 0, 2, 2)))


def test_area_above_threshold():
    assert area_above(torch.ones(4, 4)) == 1.0
    one_hot = torch.zeros(4, 4)
    one_hot[1, 2] = 3.0
    assert area_above(one_hot) == pytest.approx(1 / 16)
    ramp = torch.arange(1.0, 5.0).repeat(2, 1)  # values 1..4: >= 0.5 * 4 keeps 2, 3, 4
    assert area_above(ramp) == pytest.approx(6 / 8)
    assert area_above(torch.zeros(4, 4)) == 0.0


def test_spatial_entropy_is_one_for_uniform_and_zero_for_one_hot_maps():
    assert spatial_entropy(torch.full((4, 4), 2.5)) == pytest.approx(1.0)
    one_hot = torch.zeros(4, 4)
    one_hot[0, 3] = 1.0
    assert spatial_entropy(one_hot) == 0.0
    two = torch.zeros(4, 4)
    two[0, 0] = two[3, 3] = 1.0
    assert spatial_entropy(two) == pytest.approx(math.log(2) / math.log(16))
    assert math.isnan(spatial_entropy(torch.zeros(4, 4)))


# --------------------------------------------------------------------------- measure


def test_measure_scores_localization_at_each_swept_threshold():
    cam = torch.zeros(1, 10, 10)
    cam[0, 2:6, 2:6] = 1.0
    cam[0, 0:10, 0:10] += 0.3  # a floor: at 0.2 of the max the box is the whole image, at 0.5 the square
    out = measure(cam, [(2, 2, 6, 6)], sweep=(0.2, 0.5))
    assert out["localized@0.2"] == [False] and out["localized@0.5"] == [True]


def test_measure_on_a_batch_of_two():
    maps = torch.stack([rect_map((1, 1, 5, 5)), torch.zeros(8, 8)])
    maps[1, 6, 0] = 1.0  # one hot pixel far from its box
    boxes = torch.tensor([[1, 1, 5, 5], [4, 4, 8, 8]])
    out = measure(maps, boxes)
    assert out["box"] == [[1, 1, 5, 5], [0, 6, 1, 7]]
    assert out["iou"] == [1.0, 0.0]
    assert out["localized"] == [True, False]
    assert out["pointing"] == [True, False]
    assert out["context"] == [0.0, 1.0]
    assert out["area"] == pytest.approx([16 / 64, 1 / 64])
    assert out["entropy"] == pytest.approx([math.log(16) / math.log(64), 0.0])
    assert json.loads(json.dumps(out)) == out  # plain Python values
    assert measure(maps.numpy(), [(1, 1, 5, 5), (4, 4, 8, 8)]) == out


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_a_threshold_outside_zero_one_is_rejected(threshold):
    with pytest.raises(ValueError, match="threshold"):
        box_from_map(torch.ones(4, 4), threshold=threshold)
    with pytest.raises(ValueError, match="threshold"):
        area_above(torch.ones(4, 4), threshold=threshold)


@pytest.mark.parametrize("cam", [torch.ones(1, 4, 4), torch.ones(4), -torch.ones(4, 4),
                                 torch.tensor([[0.0, float("nan")]]), torch.tensor([[0.0, float("inf")]])])
def test_maps_that_are_not_2d_or_not_finite_non_negative_are_rejected(cam):
    for fn in (box_from_map, area_above, spatial_entropy):
        with pytest.raises(ValueError):
            fn(cam)
    with pytest.raises(ValueError):
        pointing_hit(cam, (0, 0, 1, 1))


@pytest.mark.parametrize("box", [(0, 0, 4), (3, 0, 1, 4), (0, 4, 4, 2), (0.5, 0, 2, 2)])
def test_malformed_boxes_are_rejected(box):
    with pytest.raises(ValueError):
        box_iou(box, (0, 0, 2, 2))
    with pytest.raises(ValueError):
        context_mass(torch.ones(4, 4), box)


def test_measure_rejects_a_wrong_number_of_boxes_or_a_non_batch():
    with pytest.raises(ValueError, match="boxes"):
        measure(torch.ones(2, 4, 4), [(0, 0, 2, 2)])
    with pytest.raises(ValueError, match="N, H, W"):
        measure(torch.ones(4, 4), [(0, 0, 2, 2)])


# --------------------------------------------------------------------------- gradcam_maps


class TinyNet(nn.Module):
    """conv → ReLU → conv named `features` → global average pool → linear."""

    def __init__(self, in_channels=2, width=4, classes=3, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.relu = nn.ReLU()
        self.features = nn.Conv2d(width, width, 3, padding=1, stride=stride)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(self.features(self.relu(self.conv(x))).mean(dim=(2, 3)))


def copying_net(stride=2) -> TinyNet:
    """Both convs copy channel c to channel c (centre tap 1), so `features` = ReLU(input) (subsampled by
    `stride`); class k's logit is the mean of channel k only."""
    net = TinyNet(in_channels=2, width=2, classes=2, stride=stride)
    with torch.no_grad():
        for conv in (net.conv, net.features):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0, 1, 1] = conv.weight[1, 1, 1, 1] = 1.0
        net.fc.weight.copy_(torch.eye(2))
        net.fc.bias.zero_()
    return net.eval()


def test_gradcam_maps_have_input_resolution_and_lie_in_zero_one():
    torch.manual_seed(0)
    net = TinyNet(stride=2).eval()
    images = torch.randn(5, 2, 12, 10)
    targets = torch.tensor([0, 1, 2, 0, 1])
    for method in ("gradcam", "gradcampp"):
        maps = gradcam_maps(net, images, "features", targets, method=method, chunk_size=2)
        assert maps.shape == (5, 12, 10) and maps.dtype == torch.float32 and maps.device.type == "cpu"
        assert maps.min() >= 0 and maps.max() <= 1


def test_gradcam_maps_restore_training_flags_grads_grad_mode_and_leave_no_hooks():
    torch.manual_seed(1)
    net = TinyNet()
    net.train()
    net.fc.eval()  # a mixed state must come back as it was
    before = {name: m.training for name, m in net.named_modules()}
    net.fc.weight.grad = torch.full_like(net.fc.weight, 7.0)
    images, targets = torch.randn(3, 2, 8, 8), torch.tensor([2, 0, 1])
    with torch.no_grad():
        maps = gradcam_maps(net, images, "features", targets, method="gradcampp")
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    assert maps.shape == (3, 8, 8)
    assert {name: m.training for name, m in net.named_modules()} == before
    assert not net.features._forward_hooks and not net.features._backward_hooks
    assert all(not m._forward_hooks for m in net.modules())
    assert torch.equal(net.fc.weight.grad, torch.full_like(net.fc.weight, 7.0))
    assert net.conv.weight.grad is None


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
@pytest.mark.parametrize("stride", [1, 2])
def test_gradcam_of_the_true_class_peaks_on_the_region_that_class_looks_at(method, stride):
    # channel 0 is bright in the top-left square, channel 1 in the bottom-right square; class k reads channel k
    top_left, bottom_right = (2, 2, 8, 8), (8, 8, 14, 14)
    image = torch.zeros(2, 16, 16)
    image[0, 2:8, 2:8] = 1.0
    image[1, 8:14, 8:14] = 1.0
    images = image.expand(2, -1, -1, -1).clone()
    net = copying_net(stride=stride)
    net.requires_grad_(False)  # a frozen teacher must work too
    maps = gradcam_maps(net, images, "features", torch.tensor([0, 1]), method=method)
    assert pointing_hit(maps[0], top_left) and pointing_hit(maps[1], bottom_right)
    out = measure(maps, [top_left, bottom_right])
    assert out["localized"] == [True, True]
    if stride == 1:  # no resizing: the map is the square itself
        assert out["box"] == [list(top_left), list(bottom_right)] and out["context"] == [0.0, 0.0]
    else:  # 8 x 8 features upsampled to 16 x 16: bilinear blur spills a little outside the square
        assert out["context"][0] < 0.2 and out["context"][1] < 0.2


def test_gradcam_maps_reject_an_unknown_method_or_layer():
    net = TinyNet().eval()
    images, targets = torch.zeros(1, 2, 8, 8), torch.tensor([0])
    with pytest.raises(ValueError, match="method"):
        gradcam_maps(net, images, "features", targets, method="eigencam")
    with pytest.raises(ValueError, match="nope"):
        gradcam_maps(net, images, "nope", targets)
    with pytest.raises(ValueError, match="targets"):
        gradcam_maps(net, images, "features", torch.tensor([0, 1]))
    assert not net.features._forward_hooks
    assert np.isfinite(gradcam_maps(net, images, "features", targets).numpy()).all()
