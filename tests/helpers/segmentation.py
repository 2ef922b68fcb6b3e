"""Helpers for the segmentation tests: a tiny ADE20k-format dataset written
from real photos; checkpoint fabrication and tool runners are shared with the
detection tests (tests/helpers/detection.py)."""
import os
import os.path as osp
from typing import List

import numpy as np

from helpers.detection import (REPO, _photo, make_encoder_sd, read_train_losses,  # noqa: F401
                              run_test, run_train, save_official, save_ours,
                              single_thread)


def write_tiny_ade(root: str, hw=(96, 128), n_train: int = 4, n_val: int = 2, seed: int = 0) -> str:
    """Write ``images/{training,validation}/*.jpg`` and ``annotations/.../*.png``.

    Label PNGs use ADE20k's convention: 0 = "other" (ignored after
    ``reduce_zero_label``), 1..150 = classes. Each photo gets a pasted
    rectangle (label 2, 'building') and disk (label 3, 'sky'); the rest of the
    image is label 1 ('wall') except a 4-px border band labelled 0.
    """
    from PIL import Image, ImageDraw
    rng = np.random.RandomState(seed)
    names = ('astronaut', 'coffee', 'chelsea', 'rocket', 'cat', 'immunohistochemistry')
    H, W = hw
    k = 0
    for split, n in (('training', n_train), ('validation', n_val)):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for i in range(n):
            photo = Image.fromarray(_photo(names[k % len(names)], max(hw))).crop((0, 0, W, H))
            k += 1
            label = Image.new('L', (W, H), 1)
            dimg, dlab = ImageDraw.Draw(photo), ImageDraw.Draw(label)
            w, h = rng.randint(W // 4, W // 2), rng.randint(H // 4, H // 2)
            x0, y0 = rng.randint(0, W - w), rng.randint(0, H - h)
            color = tuple(int(c) for c in rng.randint(0, 256, size=3))
            dimg.rectangle([x0, y0, x0 + w, y0 + h], fill=color)
            dlab.rectangle([x0, y0, x0 + w, y0 + h], fill=2)
            r = rng.randint(H // 8, H // 4)
            cx, cy = rng.randint(r, W - r), rng.randint(r, H - r)
            color = tuple(int(c) for c in rng.randint(0, 256, size=3))
            dimg.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
            dlab.ellipse([cx - r, cy - r, cx + r, cy + r], fill=3)
            lab = np.array(label)
            lab[:4] = 0
            photo.save(osp.join(root, 'images', split, f'ADE_{split}_{i:08d}.jpg'), quality=95)
            Image.fromarray(lab).save(osp.join(root, 'annotations', split, f'ADE_{split}_{i:08d}.png'))
    return root


def ade_cfg_options(root: str) -> List[str]:
    root = root.rstrip('/') + '/'
    return [f'{dl}.dataset.data_root={root}'
            for dl in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
