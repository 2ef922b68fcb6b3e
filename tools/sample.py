"""Generate images with a pretrained ADDP model (unconditional or inpainting).

A config (``configs/addp_gen/*.py`` or any ADDP pretraining config) and a
checkpoint (ours from ``tools/train.py``, or an official release converted with
``tools/model_converters/addp_to_mm.py``) in; PNGs, a grid and optionally
per-step strips out. No dataset is needed and nothing is downloaded.

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
sample), so the same seed gives the same images for any ``--batch-size``.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence

_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

GEN_PREFIXES = {
    'backbone.blocks.': 'the ADDP pixel encoder',
    'neck.decoder_blocks.': 'the ADDP token decoder',
    'neck.mlm_layer.': 'the ADDP output head',
    'tokenizer.decoder.': 'the VQGAN decoder',
    'tokenizer.quantize.embedding.weight': 'the VQGAN codebook',
}
#: parts of the ADDP model that generation never uses (may be absent from a file)
NOT_NEEDED_FOR_GENERATION = ('token_predictor.', )


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
    p.add_argument('--num', type=positive_int, default=16, help='number of images (default 16)')
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
    if name is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dev = torch.device(name)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise SampleError(f'--device {name} requested but CUDA is not available; use --device cpu')
    return dev


def build_model(cfg, sampler_overrides: dict):
    """Build ADDP from the config without touching the frozen-module files."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = cfg.model.copy()
    if model_cfg.get('type') not in ('ADDP', 'mmpretrain.ADDP'):
        raise SampleError(f'the config model is {model_cfg.get("type")!r}; sampling needs an ADDP '
                          'pretraining/generation config (configs/addp_gen/)')
    # weights come from the checkpoint; the frozen parts' own files are not needed
    model_cfg['require_frozen_checkpoints'] = False
    for part in ('tokenizer', 'token_predictor'):
        if isinstance(model_cfg.get(part), dict):
            model_cfg[part]['checkpoint'] = None
    sampler_cfg = dict(model_cfg.get('sampler') or cfg.get('sampler') or
                       dict(type='AlternatingDenoisingSampler'))
    sampler_cfg.update({k: v for k, v in sampler_overrides.items() if v is not None})
    model_cfg['sampler'] = sampler_cfg
    try:
        return MODELS.build(model_cfg)
    except ValueError as err:
        raise SampleError(f'invalid sampler/model settings: {err}')


def load_generation_weights(model: torch.nn.Module, path: str) -> None:
    """Load ``path`` strictly, with a clear error if it cannot generate."""
    from addp_mm.utils.checkpoint import CheckpointError, check_state_dict, load_external_state_dict
    try:
        sd = load_external_state_dict(path, keys=('state_dict', 'model'))
    except CheckpointError as err:
        raise SampleError(str(err))
    missing_parts = [desc for prefix, desc in GEN_PREFIXES.items()
                     if not any(k.startswith(prefix) for k in sd)]
    if missing_parts:
        if any(k.startswith(('decoder_blocks.', 'vqgan.')) for k in sd):
            hint = ('it is an official ADDP release: convert it first with '
                    'tools/model_converters/addp_to_mm.py SRC DST')
        elif any(k.startswith(('backbone.layers.', 'head.', 'layers.', 'fc_norm', 'decode_head.'))
                 for k in sd) or not any(k.startswith('neck.') for k in sd):
            hint = ('it looks like a classification/detection/segmentation backbone; generation '
                    'needs a full ADDP pretraining checkpoint (encoder + decoder + VQGAN)')
        else:
            hint = 'use a full ADDP pretraining checkpoint'
        raise SampleError(f'checkpoint {path!r} has no generation weights: missing '
                          f'{", ".join(missing_parts)}; {hint}.')
    own = model.state_dict()
    for k, v in own.items():  # parts generation never reads may be left out of the file
        if k.startswith(NOT_NEEDED_FOR_GENERATION) and k not in sd:
            sd[k] = v
    try:
        check_state_dict(model, sd, source=repr(path), ignore_unexpected=('data_preprocessor.', ))
    except CheckpointError as err:
        raise SampleError(str(err))
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True)


def save_png(img_u8: torch.Tensor, path: str) -> None:
    """uint8 ``[3, H, W]`` RGB -> PNG, written atomically (temporary name + rename)."""
    from PIL import Image

    from addp_mm.utils.outputs import atomic_write
    with atomic_write(path) as f:
        Image.fromarray(img_u8.permute(1, 2, 0).cpu().numpy()).save(f, format='PNG')


def make_grid(imgs: torch.Tensor, nrow: int, pad: int = 2) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> one uint8 ``[3, H', W']`` grid."""
    B, C, H, W = imgs.shape
    ncol = min(nrow, B)
    nrows = (B + ncol - 1) // ncol
    grid = imgs.new_zeros(C, nrows * (H + pad) + pad, ncol * (W + pad) + pad)
    for i in range(B):
        r, c = divmod(i, ncol)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        grid[:, top:top + H, left:left + W] = imgs[i]
    return grid


def step_strip(trajectory: List, index: int, grid_hw: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Per-step strip of one sample: x_t (grey when not decoded) above, mask (white) below."""
    from addp_mm.evaluation.fid import images_to_uint8
    H, W = size
    tiles_x, tiles_m = [], []
    for x, mask in trajectory:
        grey = torch.full((3, H, W), 128, dtype=torch.uint8)  # decode skipped (all masked)
        tiles_x.append(grey if x is None else images_to_uint8(x[index]))
        m = mask[index].reshape(1, 1, *grid_hw).float()
        m = torch.nn.functional.interpolate(m, size=(H, W), mode='nearest')[0]
        tiles_m.append((m * 255).to(torch.uint8).expand(3, H, W))
    return make_grid(torch.stack(tiles_x + tiles_m), nrow=len(trajectory))


def load_inpaint_images(paths: Sequence[str], size: int) -> torch.Tensor:
    from PIL import Image
    out = []
    for p in paths:
        if not osp.isfile(p):
            raise SampleError(f'--inpaint image not found: {p!r}')
        with Image.open(p) as im:
            im = im.convert('RGB')
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
            out.append(torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255.)
    return torch.stack(out)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.inpaint and not args.region:
        raise SampleError('--inpaint needs --region TOP LEFT BOTTOM RIGHT')
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
    if not osp.isfile(args.checkpoint):
        raise SampleError(f'checkpoint not found: {args.checkpoint!r}')
    from addp_mm.utils.outputs import OutputError, check_output_dir
    try:
        check_output_dir(args.out_dir, '--out-dir')
    except OutputError as err:
        raise SampleError(str(err))
    device = resolve_device(args.device)

    from mmengine.config import Config
    from tqdm import tqdm

    import addp_mm  # noqa: F401
    from addp_mm.evaluation.fid import images_to_uint8
    cfg = Config.fromfile(args.config)
    model = build_model(cfg, dict(
        num_steps=args.steps, schedule=args.schedule, choice_temperature=args.choice_temperature,
        temperature_strategy=args.temperature_strategy, token_temperature=args.token_temperature,
        top_p=args.top_p, seed=args.seed))
    load_generation_weights(model, args.checkpoint)
    model = model.to(device).eval()
    sampler = model.sampler
    N = sampler.get_num_tokens(model)
    side = int(round(N ** 0.5))
    if side * side != N:
        raise SampleError(f'{N} tokens is not a square grid')
    size = side * int(model.tokenizer.downsample_factor)

    os.makedirs(args.out_dir, exist_ok=True)
    if args.save_steps:
        os.makedirs(osp.join(args.out_dir, 'steps'), exist_ok=True)
    inpaint_imgs = region = None
    total = args.num
    if args.inpaint:
        inpaint_imgs = load_inpaint_images(args.inpaint, size)
        top, left, bottom, right = args.region
        if not (0 <= top < bottom <= size and 0 <= left < right <= size):
            raise SampleError(f'--region {args.region} must satisfy 0 <= TOP < BOTTOM <= {size} and '
                              f'0 <= LEFT < RIGHT <= {size}')
        region = torch.zeros(1, 1, size, size)
        region[..., top:bottom, left:right] = 1
        total = len(args.inpaint)

    extractor = None
    feats, logits = [], []
    if args.inception_weights:
        from addp_mm.evaluation.fid import FeatureExtractor, build_inception
        extractor = FeatureExtractor(build_inception(args.inception_weights, device), device)
    all_imgs = []
    bar = tqdm(total=total, desc='sampling', unit='img')
    for start in range(0, total, args.batch_size):
        idx = list(range(start, min(start + args.batch_size, total)))
        seeds = [args.seed + i for i in idx]
        if inpaint_imgs is None:
            out = sampler.sample(model, seeds=seeds, return_trajectory=args.save_steps)
        else:
            batch = inpaint_imgs[idx]
            out = sampler.inpaint(model, batch, region.expand(len(idx), -1, -1, -1), seeds=seeds,
                                  return_trajectory=args.save_steps)
        imgs = images_to_uint8(out['images']).cpu()
        for j, i in enumerate(idx):
            save_png(imgs[j], osp.join(args.out_dir, f'{i:06d}.png'))
            if args.save_steps:
                save_png(step_strip(out['trajectory'], j, (side, side), imgs.shape[-2:]),
                         osp.join(args.out_dir, 'steps', f'{i:06d}.png'))
        if extractor is not None:
            f, lg = extractor(imgs)
            feats.append(f)
            logits.append(lg)
        if len(all_imgs) < args.grid_max:
            all_imgs.extend(imgs[:args.grid_max - len(all_imgs)])
        bar.update(len(idx))
    bar.close()
    grid = make_grid(torch.stack(all_imgs), nrow=int(np.ceil(np.sqrt(len(all_imgs)))))
    save_png(grid, osp.join(args.out_dir, 'grid.png'))
    print(f'wrote {total} images and grid.png to {args.out_dir}')

    if extractor is not None:
        from addp_mm.evaluation.fid import compute_fid_is
        res = compute_fid_is((torch.cat(feats), torch.cat(logits)), args.fid_ref, extractor,
                             batch_size=args.batch_size, progress=True, isc_splits=min(10, total))
        print('metrics: ' + ', '.join(f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}'
                                      for k, v in res.items()))


if __name__ == '__main__':
    main()
