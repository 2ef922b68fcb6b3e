"""The compiled mmcv ops that mmdet needs run on the CPU with correct values."""
import torch
from mmcv.ops import RoIAlign, batched_nms, nms


def test_nms_hand_checked():
    boxes = torch.tensor([[0., 0., 10., 10.],     # kept (best score)
                          [1., 1., 11., 11.],     # IoU 81/119 = 0.68 with box 0 -> dropped
                          [20., 20., 30., 30.],   # disjoint -> kept
                          [0., 0., 10., 4.]])     # IoU 40/100 = 0.4 with box 0 -> kept
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2, 3]
    assert torch.allclose(dets[:, 4], torch.tensor([0.9, 0.7, 0.6]))
    assert torch.equal(dets[:, :4], boxes[[0, 2, 3]])
    # a stricter threshold also removes box 3
    _, keep = nms(boxes, scores, iou_threshold=0.3)
    assert keep.tolist() == [0, 2]


def test_batched_nms_keeps_other_classes():
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = batched_nms(boxes, scores, torch.tensor([0, 1, 0]),
                          dict(type='nms', iou_threshold=0.5))
    assert sorted(keep.tolist()) == [0, 1, 2]
    _, keep = batched_nms(boxes, scores, torch.tensor([0, 0, 0]),
                          dict(type='nms', iou_threshold=0.5))
    assert sorted(keep.tolist()) == [0, 2]


def test_roi_align_on_a_ramp():
    # f[y, x] = 4y + x is linear, so bilinear sampling is exact: with aligned=True
    # the 2x2 bin centres of the box (0,0)-(4,4) sit at pixel coordinates 0.5 and 2.5.
    feat = (4 * torch.arange(4.).view(4, 1) + torch.arange(4.).view(1, 4)).view(1, 1, 4, 4)
    feat.requires_grad_(True)
    rois = torch.tensor([[0., 0., 0., 4., 4.]])
    op = RoIAlign(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    out = op(feat, rois)
    assert torch.allclose(out.view(-1), torch.tensor([2.5, 4.5, 10.5, 12.5]))
    out.sum().backward()
    # four samples, each spread bilinearly over its 2x2 neighbourhood with weight 1/4
    assert torch.allclose(feat.grad.sum(), torch.tensor(4.0))
    assert torch.allclose(feat.grad[0, 0, :2, :2], torch.full((2, 2), 0.25))
