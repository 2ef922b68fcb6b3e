"""Prepare the FID reference set: ImageNet val at 256x256 as PNGs.

Each image is resized so that its shorter side is 256 (torchvision ``Resize``,
default bilinear) and then centre cropped to 256x256 (``CenterCrop``), exactly
the reference ``util/prepare_imagenet_val.py`` transform. The PNGs are written
flat into OUT as ``00000.png, 00001.png, ...`` in sorted file order.

    python tools/dataset_converters/prepare_imagenet_val256.py data/imagenet/val data/imagenet_val256

Then precompute the statistics once::

    python tools/fid.py data/imagenet_val256 --save-stats data/imagenet_val256.npz \\
        --inception-weights weights-inception-2015-12-05-6726825d.pth
"""
import argparse
import os
import os.path as osp

from PIL import Image

EXTS = ('.jpeg', '.jpg', '.png', '.bmp', '.webp')


def resize_center_crop(img: Image.Image, size: int = 256) -> Image.Image:
    """``Resize(size)`` (shorter side, torchvision default bilinear + antialias) then
    ``CenterCrop(size)`` on a PIL image, exactly the reference transform."""
    from torchvision import transforms
    return transforms.CenterCrop(size)(transforms.Resize(size)(img.convert('RGB')))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description='ImageNet val -> 256x256 PNG reference set for FID')
    p.add_argument('src', help='ImageNet val folder (images, optionally in class sub-folders)')
    p.add_argument('out', help='output folder for the PNGs')
    p.add_argument('--size', type=int, default=256)
    args = p.parse_args(argv)
    if not osp.isdir(args.src):
        raise SystemExit(f'error: source folder not found: {args.src!r}')
    files = sorted(osp.join(r, f) for r, _, fs in os.walk(args.src) for f in fs if f.lower().endswith(EXTS))
    if not files:
        raise SystemExit(f'error: no images under {args.src!r}')
    os.makedirs(args.out, exist_ok=True)
    try:
        from tqdm import tqdm
        files_iter = tqdm(files, desc='val256', unit='img')
    except ImportError:  # pragma: no cover
        files_iter = files
    for i, path in enumerate(files_iter):
        with Image.open(path) as img:
            resize_center_crop(img, args.size).save(osp.join(args.out, f'{i:05d}.png'))
    print(f'wrote {len(files)} images to {args.out}')
    return len(files)


if __name__ == '__main__':
    main()
