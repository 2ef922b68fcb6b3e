"""Generate images with a pretrained ADDP model (unconditional or inpainting).

A config (``configs/addp_gen/*.py`` or any ADDP pretraining config) and a
checkpoint (ours from ``tools/train.py``, or an official release converted with
``tools/model_converters/addp_to_mm.py``) in; PNGs, a grid and optionally
per-step strips out. No dataset is needed (a checkpoint URL is downloaded). This is a
command line over ``addp_mm.apis.ADDPGenerator`` (same images for the same seed).

Examples::

    python tools/sample.py configs/addp_gen/addp_vit-base-p16_iterdec-cosine-20step_in1k-256px.py \\
        checkpoints/addp-vit-base-16_mm.pth --num 64 --batch-size 16 --out-dir samples/

    # per-step strips of x_t and the mask, 256 linear steps, static temperature
    python tools/sample.py CFG CKPT --num 4 --steps 256 --schedule linear --save-steps

    # inpainting: regenerate a pixel box (top left bottom right) of each image
    python tools/sample.py CFG CKPT --inpaint a.png b.png --region 64 64 192 192

    # FID/IS of the samples right away (Inception weights from a local file)
    python tools/sample.py CFG CKPT --num 50000 --inception-weights weights-inception.pth \\
        --fid-ref data/imagenet_val256/

Sample ``i`` is drawn with the seed ``--seed + i`` (one ``torch.Generator`` per
sample), so the same seed gives the same images for any ``--batch-size``. The files are
written into ``<out-dir>.partial`` and moved into ``--out-dir`` when sampling
ends, so a failed run adds nothing to the folder.
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import torch  # noqa: E402


class SampleError(SystemExit):
    """Exit with a one-line actionable message."""

    def __init__(self, msg: str) -> None:
        super().__init__(f'error: {msg}')


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}')
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {value}')
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Sample images from a pretrained ADDP model')
    p.add_argument('config', help='generation (or ADDP pretraining) config')
    p.add_argument('checkpoint', help='ADDP checkpoint (ours, or an official one converted with '
                   'tools/model_converters/addp_to_mm.py)')
    p.add_argument('--num', type=positive_int, default=None,
                   help='number of unconditional samples (default 16); with --inpaint each '
                   'image is inpainted once: repeat a path for more inpaintings of it')
    p.add_argument('--batch-size', type=positive_int, default=16, help='images per batch (default 16)')
    p.add_argument('--steps', type=positive_int, default=None,
                   help='sampling steps (config default; the release uses 20, or 256 linear)')
    p.add_argument('--schedule', choices=['cosine', 'linear'], default=None, help='mask schedule')
    p.add_argument('--choice-temperature', type=float, default=None,
                   help='Gumbel temperature of re-masking (release: 6.0)')
    p.add_argument('--temperature-strategy', choices=['linear', 'static'], default=None,
                   help='anneal the choice temperature linearly to 0 (release) or keep it static')
    p.add_argument('--token-temperature', type=float, default=None, help='token sampling temperature')
    p.add_argument('--top-p', type=float, default=None, help='nucleus sampling threshold (1 = off)')
    p.add_argument('--seed', type=int, default=0, help='base seed; image i uses seed + i (default 0)')
    p.add_argument('--device', default=None, help="'cuda', 'cuda:1', 'cpu' (default: cuda if available)")
    p.add_argument('--out-dir', default='work_dirs/samples', help='output folder')
    p.add_argument('--save-steps', action='store_true',
                   help='also write a per-step strip (x_t above, mask below) for every image')
    p.add_argument('--grid-max', type=positive_int, default=64, help='images in grid.png (default 64)')
    p.add_argument('--inpaint', nargs='+', metavar='IMAGE', default=None,
                   help='images to inpaint (resized: shorter side, then centre crop to the model size)')
    p.add_argument('--region', nargs=4, type=int, metavar=('TOP', 'LEFT', 'BOTTOM', 'RIGHT'),
                   help='pixel box to regenerate with --inpaint (model-size coordinates)')
    p.add_argument('--inception-weights', default=None,
                   help='torch-fidelity Inception-v3 weights file: compute IS (and FID with --fid-ref)')
    p.add_argument('--fid-ref', default=None, help='reference image folder or .npz statistics for FID')
    return p.parse_args(argv)


def resolve_device(name: Optional[str]) -> torch.device:
    if name is not None and torch.device(name).type == 'cuda' and not torch.cuda.is_available():
        raise SampleError(f'--device {name} requested but CUDA is not available; use --device cpu')
    from addp_mm.apis.generator import resolve_device as device_of
    return device_of(name)


def build_model(cfg, sampler_overrides: dict):
    """Build ADDP from the config without touching the frozen-module files."""
    from addp_mm.apis.generator import build_generation_model
    try:
        return build_generation_model(cfg, sampler_overrides)
    except ValueError as err:
        raise SampleError(str(err))


def load_generation_weights(model: torch.nn.Module, path: str) -> None:
    """Load ``path`` strictly, with a clear error if it cannot generate."""
    from addp_mm.apis import generator
    try:
        generator.load_generation_weights(model, path)
    except generator.GenerationWeightsError as err:
        raise SampleError(str(err))


def check_options(args: argparse.Namespace) -> None:
    """Refuse options that conflict or would do nothing, in one line each."""
    if args.inpaint and not args.region:
        raise SampleError('--inpaint needs --region TOP LEFT BOTTOM RIGHT')
    if args.region and not args.inpaint:
        raise SampleError('--region only applies to inpainting: add --inpaint IMAGE [IMAGE ...] '
                          'or drop --region')
    if args.inpaint and args.num is not None:
        raise SampleError('--num counts unconditional samples; --inpaint writes one image per '
                          'input: drop --num and repeat an image path for several inpaintings '
                          'of it (image i uses seed + i)')
    if args.num is None:
        args.num = 16


def check_inpaint_images(paths: Sequence[str]) -> None:
    """Read every ``--inpaint`` image now, so a bad one fails before any work."""
    from addp_mm.apis.image_io import read_image_file
    for p in paths:
        try:
            read_image_file(p)
        except FileNotFoundError:
            raise SampleError(f'--inpaint image not found: {p!r}')
        except ValueError as err:
            raise SampleError(f'--inpaint: {err}')


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    check_options(args)
    if args.fid_ref and not args.inception_weights:
        raise SampleError('--fid-ref needs --inception-weights (the Inception-v3 weights file)')
    if args.inception_weights and not osp.isfile(args.inception_weights):
        from addp_mm.evaluation.fid import INCEPTION_WEIGHTS_HELP
        raise SampleError(f'Inception weights file not found: {args.inception_weights!r}. '
                          f'{INCEPTION_WEIGHTS_HELP}')
    if args.fid_ref and not (osp.isdir(args.fid_ref) or osp.isfile(args.fid_ref)):
        raise SampleError(f'--fid-ref {args.fid_ref!r} does not exist')
    if not osp.isfile(args.config):
        raise SampleError(f'config file not found: {args.config!r}')
    from addp_mm.utils.downloads import is_remote
    if not is_remote(args.checkpoint) and not osp.isfile(args.checkpoint):  # a URL downloads
        raise SampleError(f'checkpoint not found: {args.checkpoint!r}')
    if args.inpaint:
        check_inpaint_images(args.inpaint)
    device = resolve_device(args.device)
    from addp_mm.apis.generator import check_out_dir
    try:  # before any work: the output folder must be usable
        check_out_dir(args.out_dir, args.save_steps)
    except (ValueError, OSError) as err:
        raise SampleError(str(err))

    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    overrides = dict(
        num_steps=args.steps, schedule=args.schedule, choice_temperature=args.choice_temperature,
        temperature_strategy=args.temperature_strategy, token_temperature=args.token_temperature,
        top_p=args.top_p, seed=args.seed)
    model = build_model(cfg, overrides)
    load_generation_weights(model, args.checkpoint)
    from addp_mm.apis import ADDPGenerator
    try:
        gen = ADDPGenerator.from_model(model, cfg, device, sampler=overrides)
    except ValueError as err:
        raise SampleError(str(err))
    size = gen.image_size
    boxes = None
    if args.inpaint:
        top, left, bottom, right = args.region
        if not (0 <= top < bottom <= size and 0 <= left < right <= size):
            raise SampleError(f'--region {args.region} must satisfy 0 <= TOP < BOTTOM <= {size} and '
                              f'0 <= LEFT < RIGHT <= {size}')
        boxes = [tuple(args.region)]

    extractor = None
    feats, logits = [], []
    if args.inception_weights:
        from addp_mm.evaluation.fid import FeatureExtractor, build_inception
        extractor = FeatureExtractor(build_inception(args.inception_weights, device), device)

    def on_batch(res: dict) -> None:
        if extractor is not None:
            f, lg = extractor(res['images'])
            feats.append(f)
            logits.append(lg)

    from addp_mm.utils.outputs import publish_dir, staged_dirs
    # written into <out-dir>.partial (removed if the run fails), then moved into place
    with staged_dirs(args.out_dir) as (staging, ):
        try:
            out = gen(args.inpaint, num_images=None if args.inpaint else args.num,
                      seed=args.seed, boxes=boxes, batch_size=args.batch_size,
                      return_steps=args.save_steps, out_dir=staging, grid_max=args.grid_max,
                      keep_images=False, on_batch=on_batch, show_progress=True)
        except ValueError as err:
            raise SampleError(str(err))
        publish_dir(staging, args.out_dir)
    total = out['num_images']
    print(f'wrote {total} images and grid.png to {args.out_dir}')

    if extractor is not None:
        from addp_mm.evaluation.fid import compute_fid_is
        res = compute_fid_is((torch.cat(feats), torch.cat(logits)), args.fid_ref, extractor,
                             batch_size=args.batch_size, progress=True, isc_splits=min(10, total))
        print('metrics: ' + ', '.join(f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}'
                                      for k, v in res.items()))


if __name__ == '__main__':
    main()
