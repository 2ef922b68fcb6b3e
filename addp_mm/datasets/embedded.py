"""The embedded default dataset: random crops of the real photos that ship
inside scikit-image (``skimage/data``), so every stage of the suite runs with
no download.

Each photo is one class, which makes "which photo does this crop come from" a
real, labelled transfer task. The folder that :func:`build_embedded_photos`
writes is an ordinary mmpretrain ``CustomDataset`` tree::

    root/train/<photo>/<photo>_<k>.png
    root/val/<photo>/<photo>_<k>.png
    root/meta/{train,val}.txt      # "<split>/<photo>/<file> <label>" lines
"""
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS
from PIL import Image

#: Photos bundled in the scikit-image wheel (file names under ``skimage/data``).
EMBEDDED_PHOTOS: Dict[str, str] = {
    'astronaut': 'astronaut.png',
    'brick': 'brick.png',
    'camera': 'camera.png',
    'chelsea': 'chelsea.png',
    'coffee': 'coffee.png',
    'coins': 'coins.png',
    'grass': 'grass.png',
    'gravel': 'gravel.png',
    'hubble': 'hubble_deep_field.jpg',
    'ihc': 'ihc.png',
    'motorcycle': 'motorcycle_left.png',
    'retina': 'retina.jpg',
    'rocket': 'rocket.jpg',
    'moon': 'moon.png',
}


def load_photo(name: str) -> Image.Image:
    """Return one bundled photo as an RGB PIL image."""
    import skimage
    path = osp.join(osp.dirname(skimage.__file__), 'data', EMBEDDED_PHOTOS[name])
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} is missing: the embedded dataset needs scikit-image with its bundled '
            'data files (pip install -r requirements.txt).')
    return Image.open(path).convert('RGB')


def _random_crops(img: Image.Image, n: int, size: int, rng: np.random.Generator) -> List[Image.Image]:
    w, h = img.size
    short = min(w, h)
    crops = []
    for _ in range(n):
        # crop side between 1/4 and 3/4 of the short side, resized to `size`
        side = int(rng.uniform(0.25, 0.75) * short)
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        crop = img.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crops.append(crop)
    return crops


def build_embedded_photos(root: str,
                          crop_size: int = 64,
                          num_train: int = 24,
                          num_val: int = 8,
                          photos: Optional[Sequence[str]] = None,
                          seed: int = 0) -> str:
    """Write the embedded dataset to ``root`` (atomically) unless it exists.

    Args:
        root (str): Output folder.
        crop_size (int): Side of the square crops in pixels. Defaults to 64.
        num_train (int): Training crops per photo. Defaults to 24.
        num_val (int): Validation crops per photo. Defaults to 8.
        photos (Sequence[str], optional): Subset of :data:`EMBEDDED_PHOTOS`
            (all by default). Defaults to None.
        seed (int): Seed of the crop positions. Defaults to 0.

    Returns:
        str: ``root``.
    """
    if osp.isfile(osp.join(root, 'meta', 'val.txt')):
        return root
    names = sorted(photos or EMBEDDED_PHOTOS)
    unknown = set(names) - set(EMBEDDED_PHOTOS)
    if unknown:
        raise KeyError(f'unknown embedded photos {sorted(unknown)}; choose from {sorted(EMBEDDED_PHOTOS)}')
    rng = np.random.default_rng(seed)
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.embedded-', dir=parent)
    lines = {'train': [], 'val': []}
    for label, name in enumerate(names):
        img = load_photo(name)
        for split, n in (('train', num_train), ('val', num_val)):
            os.makedirs(osp.join(tmp, split, name), exist_ok=True)
            for k, crop in enumerate(_random_crops(img, n, crop_size, rng)):
                rel = f'{split}/{name}/{name}_{k:03d}.png'
                crop.save(osp.join(tmp, rel))
                lines[split].append(f'{rel} {label}')
    os.makedirs(osp.join(tmp, 'meta'))
    for split, ls in lines.items():
        with open(osp.join(tmp, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(ls) + '\n')
    try:
        os.rename(tmp, root)
    except OSError:  # another process won the race, or root exists but is incomplete
        shutil.rmtree(tmp, ignore_errors=True)
        if not osp.isfile(osp.join(root, 'meta', 'val.txt')):
            raise
    return root


@DATASETS.register_module()
class ADDPEmbeddedPhotos(CustomDataset):
    """Crops of scikit-image's bundled photos, labelled by photo.

    The folder is generated on first use (no download), then read as a normal
    :class:`mmpretrain.datasets.CustomDataset` through its ``meta/<split>.txt``
    annotation file.

    Args:
        data_root (str): Where the crops live (created if missing).
        split (str): ``'train'`` or ``'val'``. Defaults to ``'train'``.
        crop_size (int): Crop side in pixels. Defaults to 64.
        num_train (int): Training crops per photo. Defaults to 24.
        num_val (int): Validation crops per photo. Defaults to 8.
        photos (Sequence[str], optional): Subset of photos. Defaults to None (all).
        seed (int): Crop seed. Defaults to 0.
        **kwargs: Passed to :class:`CustomDataset` (``pipeline``, ``test_mode``...).
    """

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 crop_size: int = 64,
                 num_train: int = 24,
                 num_val: int = 8,
                 photos: Optional[Sequence[str]] = None,
                 seed: int = 0,
                 **kwargs) -> None:
        if split not in ('train', 'val'):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        build_embedded_photos(data_root, crop_size, num_train, num_val, photos, seed)
        classes = sorted(photos or EMBEDDED_PHOTOS)
        super().__init__(data_root=data_root, ann_file=f'meta/{split}.txt', data_prefix='',
                         classes=classes, **kwargs)
