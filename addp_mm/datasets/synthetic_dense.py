"""Small procedurally generated detection / segmentation datasets made from
the real photos bundled with scikit-image (no download).

Scenes are built from real textures and real object masks:

* **backgrounds** ("stuff"): random crops of the ``grass``, ``gravel`` and
  ``brick`` photos; a segmentation scene splits the canvas into two of them
  along a random smooth boundary;
* **objects** ("things") pasted with their real masks:

  - ``coin``: the 24 coins of ``coins.png``, segmented with the watershed
    recipe of scikit-image's tutorial (Sobel elevation map, markers from two
    grey-level thresholds, holes filled, connected components), pasted with
    their own grey pixels;
  - ``horse``: the silhouette of ``horse.png`` filled with a random crop of a
    photo (``chelsea``, ``coffee``, ``astronaut`` or ``rocket``), randomly
    flipped.

  Later objects occlude earlier ones; every instance mask is the visible part.

:func:`build_synthetic_coco` writes an mmdet ``CocoDataset`` tree::

    root/train/*.png, root/val/*.png
    root/annotations/instances_{train,val}.json   # bbox + RLE masks, classes ('coin', 'horse')

:func:`build_synthetic_ade` writes an mmseg ADE20k-style tree::

    root/images/{training,validation}/*.jpg
    root/annotations/{training,validation}/*.png  # 0 = other (ignored with reduce_zero_label),
                                                  # 1..5 = grass, gravel, brick, coin, horse

Both are deterministic given ``seed`` and written atomically (a finished
tree is reused).
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from .embedded import load_photo

__all__ = ['DET_CLASSES', 'SEG_CLASSES', 'real_object_masks', 'build_synthetic_coco',
           'build_synthetic_ade']

DET_CLASSES: Tuple[str, ...] = ('coin', 'horse')
STUFF_PHOTOS: Tuple[str, ...] = ('grass', 'gravel', 'brick')
SEG_CLASSES: Tuple[str, ...] = STUFF_PHOTOS + DET_CLASSES
FILL_PHOTOS: Tuple[str, ...] = ('chelsea', 'coffee', 'astronaut', 'rocket')

_Obj = Tuple[str, np.ndarray, np.ndarray]  # (class, RGB uint8 [h,w,3], mask bool [h,w])


def _skimage_file(name: str) -> str:
    import skimage
    path = osp.join(osp.dirname(skimage.__file__), 'data', name)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} is missing: the synthetic dense datasets need '
                                'scikit-image with its bundled data files.')
    return path


def _segment_coins() -> List[_Obj]:
    from scipy import ndimage as ndi
    from skimage.filters import sobel
    from skimage.measure import label, regionprops
    from skimage.segmentation import watershed
    coins = np.asarray(Image.open(_skimage_file('coins.png')).convert('L'))
    markers = np.zeros_like(coins, dtype=np.int32)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    seg = watershed(sobel(coins.astype(np.float64) / 255.), markers) == 2
    seg = ndi.binary_fill_holes(seg)
    objs = []
    for region in regionprops(label(seg)):
        if region.area < 400:  # noise
            continue
        r0, c0, r1, c1 = region.bbox
        mask = region.image
        crop = coins[r0:r1, c0:c1]
        objs.append(('coin', np.repeat(crop[..., None], 3, axis=2), mask.copy()))
    return objs


def _horse_mask() -> np.ndarray:
    horse = np.asarray(Image.open(_skimage_file('horse.png')).convert('L')) < 128  # black = horse
    ys, xs = np.nonzero(horse)
    return horse[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def real_object_masks() -> Dict[str, list]:
    """The real object sources: ``{'coin': [(rgb, mask), ...], 'horse': mask}``."""
    return dict(coin=[(rgb, m) for _, rgb, m in _segment_coins()], horse=_horse_mask())


def _resize(arr: np.ndarray, size: Tuple[int, int], nearest: bool = False) -> np.ndarray:
    img = Image.fromarray(arr.astype(np.uint8) * (255 if arr.dtype == bool else 1))
    out = np.asarray(img.resize((size[1], size[0]), Image.NEAREST if nearest else Image.BICUBIC))
    return out > 127 if arr.dtype == bool else out


def _texture(photos: Dict[str, np.ndarray], name: str, size: Tuple[int, int],
             rng: np.random.Generator) -> np.ndarray:
    img = photos[name]
    H, W = img.shape[:2]
    side = int(rng.uniform(0.3, 0.7) * min(H, W))
    y0, x0 = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
    return _resize(img[y0:y0 + side, x0:x0 + side], size)


class _SceneMaker:
    """Paste real objects onto real textures."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.sources = real_object_masks()
        names = set(STUFF_PHOTOS) | set(FILL_PHOTOS)
        self.photos = {n: np.asarray(load_photo(n)) for n in names}

    def _object(self, cls: str, size: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        if cls == 'coin':
            rgb, mask = self.sources['coin'][int(rng.integers(len(self.sources['coin'])))]
        else:
            mask = self.sources['horse']
            rgb = _texture(self.photos, FILL_PHOTOS[int(rng.integers(len(FILL_PHOTOS)))],
                           mask.shape, rng)
        h, w = mask.shape
        scale = size / max(h, w)
        hw = (max(4, int(round(h * scale))), max(4, int(round(w * scale))))
        rgb, mask = _resize(rgb, hw), _resize(mask, hw, nearest=True)
        if rng.random() < 0.5:
            rgb, mask = rgb[:, ::-1], mask[:, ::-1]
        return rgb, mask

    def scene(self, size: Tuple[int, int], num_objects: Tuple[int, int], obj_size: Tuple[float, float],
              two_stuff: bool) -> Tuple[np.ndarray, np.ndarray, List[Tuple[str, np.ndarray]]]:
        """Returns ``(image [H,W,3] uint8, stuff label map [H,W] (0-based into
        STUFF_PHOTOS), instances [(class, visible mask [H,W])])``."""
        rng = self.rng
        H, W = size
        stuff = rng.choice(len(STUFF_PHOTOS), size=2, replace=False)
        img = _texture(self.photos, STUFF_PHOTOS[stuff[0]], size, rng).copy()
        stuff_map = np.full(size, stuff[0], dtype=np.uint8)
        if two_stuff:  # a smooth random boundary: y < a + b*x + c*sin(...)
            yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
            a, b = rng.uniform(0.3, 0.7) * H, rng.uniform(-0.5, 0.5)
            c, f, p = rng.uniform(0.03, 0.12) * H, rng.uniform(1, 3) * 2 * np.pi / W, rng.uniform(0, 6.3)
            region = yy > a + b * (xx - W / 2) + c * np.sin(f * xx + p)
            if rng.random() < 0.5:
                region = region.T if H == W else region[::-1]
            other = _texture(self.photos, STUFF_PHOTOS[stuff[1]], size, rng)
            img[region] = other[region]
            stuff_map[region] = stuff[1]
        instances: List[Tuple[str, np.ndarray]] = []
        n = int(rng.integers(num_objects[0], num_objects[1] + 1))
        for _ in range(n):
            cls = DET_CLASSES[int(rng.integers(len(DET_CLASSES)))]
            side = int(rng.uniform(*obj_size) * min(H, W))
            rgb, mask = self._object(cls, side)
            h, w = mask.shape
            if h > H or w > W:
                continue
            y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
            full = np.zeros(size, dtype=bool)
            full[y0:y0 + h, x0:x0 + w] = mask
            img[full] = rgb[mask]
            instances = [(c, m & ~full) for c, m in instances]  # occlusion
            instances.append((cls, full))
        instances = [(c, m) for c, m in instances if m.sum() >= 16]
        return img, stuff_map, instances


def _atomic_build(root: str, done_file: str, write) -> str:
    if osp.isfile(osp.join(root, done_file)):
        return root
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.synthetic-', dir=parent)
    try:
        write(tmp)
        if osp.isdir(root):  # an incomplete earlier attempt
            shutil.rmtree(root)
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not osp.isfile(osp.join(root, done_file)):
            raise
    return root


def build_synthetic_coco(root: str, image_size: int = 128, num_train: int = 64, num_val: int = 16,
                         num_objects: Sequence[int] = (1, 3),
                         obj_size: Sequence[float] = (0.25, 0.55), seed: int = 0) -> str:
    """Write a COCO-format instance-segmentation dataset (see module doc).

    Args:
        root (str): Output folder (reused when complete).
        image_size (int): Square image side. Defaults to 128.
        num_train (int): Training images. Defaults to 64.
        num_val (int): Validation images. Defaults to 16.
        num_objects (Sequence[int]): Min/max pasted objects per image.
            Defaults to ``(1, 3)``.
        obj_size (Sequence[float]): Min/max object size (longer side) as a
            fraction of the image. Defaults to ``(0.25, 0.55)``.
        seed (int): Defaults to 0.

    Returns:
        str: ``root``.
    """
    from pycocotools import mask as mask_utils

    def write(tmp: str) -> None:
        maker = _SceneMaker(seed)
        os.makedirs(osp.join(tmp, 'annotations'))
        categories = [dict(id=i + 1, name=c, supercategory='object') for i, c in enumerate(DET_CLASSES)]
        ann_id = 1
        for split, n in (('train', num_train), ('val', num_val)):
            os.makedirs(osp.join(tmp, split))
            images, anns = [], []
            for i in range(n):
                img, _, instances = maker.scene((image_size, image_size), tuple(num_objects),
                                                tuple(obj_size), two_stuff=False)
                name = f'{split}_{i:05d}.png'
                Image.fromarray(img).save(osp.join(tmp, split, name))
                image_id = len(images) + 1
                images.append(dict(id=image_id, file_name=name, height=image_size, width=image_size))
                for cls, m in instances:
                    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                    rle['counts'] = rle['counts'].decode('ascii')
                    anns.append(dict(id=ann_id, image_id=image_id,
                                     category_id=DET_CLASSES.index(cls) + 1, bbox=[x, y, w, h],
                                     area=float(m.sum()), segmentation=rle, iscrowd=0))
                    ann_id += 1
            with open(osp.join(tmp, 'annotations', f'instances_{split}.json'), 'w') as f:
                json.dump(dict(images=images, annotations=anns, categories=categories), f)

    return _atomic_build(root, osp.join('annotations', 'instances_val.json'), write)


def build_synthetic_ade(root: str, image_size: int = 64, num_train: int = 64, num_val: int = 16,
                        num_objects: Sequence[int] = (1, 2),
                        obj_size: Sequence[float] = (0.3, 0.6), seed: int = 0) -> str:
    """Write an ADE20k-format semantic-segmentation dataset (see module doc).

    Label PNGs: 0 = other (never used, ignored with ``reduce_zero_label``),
    ``1 + SEG_CLASSES.index(c)`` for class ``c``.

    Args:
        root (str): Output folder (reused when complete).
        image_size (int): Square image side. Defaults to 64.
        num_train (int): Training images. Defaults to 64.
        num_val (int): Validation images. Defaults to 16.
        num_objects (Sequence[int]): Min/max pasted objects. Defaults to ``(1, 2)``.
        obj_size (Sequence[float]): Object size range (fraction of the image).
            Defaults to ``(0.3, 0.6)``.
        seed (int): Defaults to 0.

    Returns:
        str: ``root``.
    """

    def write(tmp: str) -> None:
        maker = _SceneMaker(seed + 1)
        for split, n in (('training', num_train), ('validation', num_val)):
            os.makedirs(osp.join(tmp, 'images', split))
            os.makedirs(osp.join(tmp, 'annotations', split))
            for i in range(n):
                img, stuff_map, instances = maker.scene((image_size, image_size), tuple(num_objects),
                                                        tuple(obj_size), two_stuff=True)
                label = stuff_map.astype(np.uint8) + 1
                for cls, m in instances:
                    label[m] = SEG_CLASSES.index(cls) + 1
                name = f'ADE_{split}_{i:08d}'
                Image.fromarray(img).save(osp.join(tmp, 'images', split, name + '.jpg'), quality=95)
                Image.fromarray(label).save(osp.join(tmp, 'annotations', split, name + '.png'))

    return _atomic_build(root, osp.join('annotations', 'validation', f'ADE_validation_{num_val - 1:08d}.png'),
                         write)
