"""The inferencers of mmpretrain, mmdet and mmseg run ADDP configs with checkpoints made here.

Each checkpoint has a classifier bias that favours one class, so the inferencer's answer shows
that the weights were read from the file, not only that it ran.
"""
import os
import os.path as osp

import numpy as np
import pytest
import torch

from helpers.checkout import REPO_ROOT as ROOT
from helpers.inferencers import build_initialised, save_for_inferencer
CLS_CFG = osp.join(ROOT, 'configs', 'tests', 'vit-tiny24-p16_addp-pre_1xb4-2e_demo-64px.py')
DET_CFG = osp.join(ROOT, 'configs', 'tests', 'mask-rcnn_addp-vit-tiny_simple-fpn_test_coco.py')
SEG_CFG = osp.join(ROOT, 'configs', 'tests', 'upernet_addp-vit-tiny_test_ade20k-64x64.py')


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def photo():
    from skimage import data
    return np.ascontiguousarray(data.chelsea()[:, :, ::-1])  # BGR, as the inferencers read arrays


def _save(model, path, dataset_meta):
    torch.manual_seed(0)
    return save_for_inferencer(model, path, dataset_meta)


def test_image_classification_inferencer(photo, tmp_path):
    from mmpretrain.apis import ImageClassificationInferencer
    model = build_initialised(CLS_CFG)
    with torch.no_grad():
        model.head.fc.bias.zero_()
        model.head.fc.bias[2] = 20.
    ckpt = _save(model, str(tmp_path / 'cls.pth'), dict(classes=['a', 'b', 'c', 'd']))
    inferencer = ImageClassificationInferencer(CLS_CFG, pretrained=ckpt, device='cpu')
    res = inferencer(photo)[0]
    assert res['pred_label'] == 2 and res['pred_class'] == 'c'
    assert len(res['pred_scores']) == 4 and abs(float(np.sum(res['pred_scores'])) - 1) < 1e-5
    assert res['pred_score'] > 0.99


def test_feature_extractor(photo, tmp_path):
    from mmpretrain.apis import FeatureExtractor
    model = build_initialised(CLS_CFG)
    ckpt = _save(model, str(tmp_path / 'cls.pth'), dict(classes=['a', 'b', 'c', 'd']))
    feats = FeatureExtractor(CLS_CFG, pretrained=ckpt, device='cpu')(photo)[0]
    feat = feats[-1] if isinstance(feats, (list, tuple)) else feats
    assert tuple(feat.shape) == (24, )  # avg-pooled tokens of the 24-wide encoder
    # the same as the encoder of the saved weights on the same 64x64 crop
    from mmpretrain.datasets.transforms import CenterCrop, ResizeEdge
    img = CenterCrop(crop_size=64)(ResizeEdge(scale=64, edge='short', backend='pillow',
                                              interpolation='bicubic')(dict(img=photo)))['img']
    x = torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1)[None].float()  # RGB
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model.eval().backbone((x - mean) / std)[-1][0]
    assert torch.allclose(feat, ref, atol=1e-5)
    other = build_initialised(CLS_CFG)
    with torch.no_grad():
        other.backbone.pos_embed.add_(torch.randn_like(other.backbone.pos_embed))
    ckpt2 = _save(other, str(tmp_path / 'cls2.pth'), dict(classes=['a', 'b', 'c', 'd']))
    feats2 = FeatureExtractor(CLS_CFG, pretrained=ckpt2, device='cpu')(photo)[0]
    feat2 = feats2[-1] if isinstance(feats2, (list, tuple)) else feats2
    assert not torch.allclose(feat, feat2, atol=1e-3)


def test_det_inferencer(photo, tmp_path):
    from mmdet.apis import DetInferencer
    model = build_initialised(DET_CFG)
    fc_cls = model.roi_head.bbox_head.fc_cls
    with torch.no_grad():
        fc_cls.bias.zero_()
        fc_cls.bias[1] = 20.  # 'disk'
    ckpt = _save(model, str(tmp_path / 'det.pth'),
                 dict(classes=('box', 'disk'), palette=[(220, 20, 60), (0, 0, 230)]))
    inferencer = DetInferencer(DET_CFG, weights=ckpt, device='cpu', show_progress=False)
    out_dir = str(tmp_path / 'vis')
    src = str(tmp_path / 'cat.png')
    from PIL import Image
    Image.fromarray(photo[:, :, ::-1]).save(src)
    res = inferencer(src, out_dir=out_dir, no_save_pred=False)
    pred = res['predictions'][0]
    assert len(pred['scores']) > 0
    top = int(np.argmax(pred['scores']))
    assert pred['labels'][top] == 1 and pred['scores'][top] > 0.99
    assert len(pred['bboxes'][top]) == 4 and len(pred['masks']) == len(pred['scores'])
    assert os.listdir(osp.join(out_dir, 'vis')) == ['cat.png']
    assert os.listdir(osp.join(out_dir, 'preds')) == ['cat.json']


def test_mmseg_inferencer(photo, tmp_path):
    from mmseg.apis import MMSegInferencer
    from mmseg.datasets import ADE20KDataset
    model = build_initialised(SEG_CFG)
    with torch.no_grad():
        model.decode_head.conv_seg.bias.zero_()
        model.decode_head.conv_seg.bias[7] = 50.
    meta = dict(classes=ADE20KDataset.METAINFO['classes'], palette=ADE20KDataset.METAINFO['palette'])
    ckpt = _save(model, str(tmp_path / 'seg.pth'), meta)
    inferencer = MMSegInferencer(SEG_CFG, weights=ckpt, device='cpu')
    out_dir = str(tmp_path / 'vis')
    res = inferencer(photo, out_dir=out_dir)
    pred = np.asarray(res['predictions'])
    assert pred.shape == photo.shape[:2]
    assert (pred == 7).all()
    assert os.listdir(osp.join(out_dir, 'vis'))
