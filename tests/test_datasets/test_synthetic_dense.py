"""The COCO/ADE-format scene generators of the demo (real textures, real masks)."""
import json
import os.path as osp

import numpy as np
from PIL import Image

from addp_mm.datasets.synthetic_dense import (DET_CLASSES, SEG_CLASSES, build_synthetic_ade,
                                              build_synthetic_coco, real_object_masks)


def test_real_object_masks():
    src = real_object_masks()
    assert len(src['coin']) == 24  # the 24 coins of skimage's coins.png
    for rgb, mask in src['coin']:
        assert rgb.shape[:2] == mask.shape and mask.dtype == bool
        assert 0.5 < mask.mean() < 0.95  # a roundish blob in its bounding box
    horse = src['horse']
    assert horse.dtype == bool and 0.2 < horse.mean() < 0.8


def test_coco_dataset(tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    root = build_synthetic_coco(str(tmp_path / 'coco'), image_size=64, num_train=6, num_val=3,
                                seed=1)
    assert build_synthetic_coco(root) == root  # reused when complete
    ann_file = osp.join(root, 'annotations', 'instances_train.json')
    coco = COCO(ann_file)
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(DET_CLASSES)
    assert len(coco.getImgIds()) == 6
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 6  # at least one object per image
    for ann in anns:
        m = coco.annToMask(ann).astype(bool)
        assert m.sum() == ann['area'] >= 16
        ys, xs = np.nonzero(m)
        x, y, w, h = ann['bbox']
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert mask_utils.area(ann['segmentation']) == ann['area']
    # the same scenes for the same seed
    again = build_synthetic_coco(str(tmp_path / 'coco2'), image_size=64, num_train=6, num_val=3,
                                 seed=1)
    with open(ann_file) as f1, open(osp.join(again, 'annotations', 'instances_train.json')) as f2:
        assert json.load(f1) == json.load(f2)
    img = np.asarray(Image.open(osp.join(root, 'train', coco.loadImgs(1)[0]['file_name'])))
    assert img.shape == (64, 64, 3) and img.std() > 10  # real texture, not flat


def test_ade_dataset(tmp_path):
    root = build_synthetic_ade(str(tmp_path / 'ade'), image_size=48, num_train=5, num_val=2)
    labels = []
    for split, n in (('training', 5), ('validation', 2)):
        for i in range(n):
            name = f'ADE_{split}_{i:08d}'
            img = np.asarray(Image.open(osp.join(root, 'images', split, name + '.jpg')))
            lab = np.asarray(Image.open(osp.join(root, 'annotations', split, name + '.png')))
            assert img.shape == (48, 48, 3) and lab.shape == (48, 48)
            labels.append(lab)
    values = np.unique(np.stack(labels))
    # 0 ("other") is never used; 1..5 = grass, gravel, brick, coin, horse
    assert values.min() >= 1 and values.max() <= len(SEG_CLASSES)
    assert any((lab >= 4).any() for lab in labels)  # pasted objects present
    assert all(len(np.unique(lab[lab <= 3])) >= 1 for lab in labels)
