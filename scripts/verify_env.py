"""Check that the installed stack imports and that mmcv's compiled ops run."""
import sys


def main() -> int:
    import mmcv
    import mmdet
    import mmengine
    import mmpretrain
    import mmseg
    import torch
    from mmcv.ops import nms

    import mmdet.models  # noqa: F401  (needs mmcv._ext)
    import mmseg.models  # noqa: F401
    import mmpretrain.models  # noqa: F401
    import addp_mm  # noqa: F401

    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    if keep.tolist() != [0, 2]:
        print(f'mmcv.ops.nms returned {keep.tolist()}, expected [0, 2]', file=sys.stderr)
        return 1
    print(f'torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, '
          f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}: OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())
