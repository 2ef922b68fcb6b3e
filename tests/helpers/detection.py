"""Shared helpers for the detection (and segmentation) tests: fabricated ADDP checkpoints, a tiny
COCO-format dataset written from real photos, and train/test runners."""
import json
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from helpers.checkout import REPO_ROOT as REPO
# On a machine with few cores, more than one intra-op thread per process makes
# small convolutions ~100x slower (spinning OpenMP threads); tools run with 1.
_TOOL_ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


def make_encoder_sd(embed_dims: int = 32, depth: int = 4, grid: int = 4, patch: int = 16,
                    mlp_ratio: float = 2., seed: int = 0, tokenizer_norm: bool = True,
                    final_norm: bool = True) -> Dict[str, torch.Tensor]:
    """Random ADDP encoder weights with the official timm key names."""
    g = torch.Generator().manual_seed(seed)
    D, H = embed_dims, int(embed_dims * mlp_ratio)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    sd = {'cls_token': r(1, 1, D), 'pos_embed': r(1, 1 + grid * grid, D),
          'patch_embed.proj.weight': r(D, 3, patch, patch) * 0.1, 'patch_embed.proj.bias': r(D)}
    for i in range(depth):
        p = f'blocks.{i}.'
        sd.update({p + 'norm1.weight': 1 + r(D), p + 'norm1.bias': r(D),
                   p + 'attn.qkv.weight': r(3 * D, D), p + 'attn.qkv.bias': r(3 * D),
                   p + 'attn.proj.weight': r(D, D), p + 'attn.proj.bias': r(D),
                   p + 'norm2.weight': 1 + r(D), p + 'norm2.bias': r(D),
                   p + 'mlp.fc1.weight': r(H, D), p + 'mlp.fc1.bias': r(H),
                   p + 'mlp.fc2.weight': r(D, H), p + 'mlp.fc2.bias': r(D)})
    if tokenizer_norm:
        sd.update({'tokenizer_norm.weight': 1 + r(D), 'tokenizer_norm.bias': r(D)})
    if final_norm:
        sd.update({'norm.weight': 1 + r(D), 'norm.bias': r(D)})
    return sd


def save_ours(sd: Dict[str, torch.Tensor], path: str) -> str:
    """Our (mmengine) format: ``{'state_dict': {'backbone.<timm>': ...}, 'meta': {}}`` plus
    non-encoder ADDP parts that must be skipped."""
    full = {'backbone.' + k: v for k, v in sd.items()}
    full['neck.decoder_embed.weight'] = torch.zeros(4, 4)
    full['tokenizer.quantize.embedding.weight'] = torch.zeros(8, 4)
    torch.save({'state_dict': full, 'meta': {}}, path)
    return path


def save_official(sd: Dict[str, torch.Tensor], path: str) -> str:
    """Official release format: unprefixed keys under ``'model'`` with vqgan/predictor/decoder."""
    full = dict(sd)
    full['decoder_embed.weight'] = torch.zeros(4, 4)
    full['mask_token'] = torch.zeros(1, 1, 4)
    full['vqgan.quantize.embedding.weight'] = torch.zeros(8, 4)
    full['token_predictor.blocks.0.norm1.weight'] = torch.zeros(4)
    torch.save({'model': full, 'epoch': 3}, path)
    return path


# ---------------------------------------------------------------- tiny COCO
_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'cat')


def _photo(name: str, size: int) -> np.ndarray:
    from PIL import Image
    from skimage import data
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return np.asarray(Image.fromarray(img[..., :3]).resize((size, size), Image.BILINEAR))


def _polygon_area(xy: List[float]) -> float:
    x, y = np.asarray(xy[0::2]), np.asarray(xy[1::2])
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def write_tiny_coco(root: str, size: int = 128, n_train: int = 4, n_val: int = 2,
                    seed: int = 0) -> str:
    """Write ``root/{train,val}/*.jpg`` and ``root/annotations/instances_{train,val}.json``.

    Each image is a real photo (skimage.data) with 1-3 pasted objects: filled
    rectangles (category 'box', polygon of 4 corners) and disks (category
    'disk', 24-gon polygon).
    """
    from PIL import Image, ImageDraw
    rng = np.random.RandomState(seed)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    k = 0
    for split, n in (('train', n_train), ('val', n_val)):
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img = Image.fromarray(_photo(_PHOTOS[k % len(_PHOTOS)], size))
            k += 1
            draw = ImageDraw.Draw(img)
            for j in range(rng.randint(1, 4)):
                cat = 1 + (j + i) % 2
                w, h = rng.randint(size // 5, size // 2, size=2)
                x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
                color = tuple(int(c) for c in rng.randint(0, 256, size=3))
                if cat == 1:
                    poly = [x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]
                else:
                    r = min(w, h) / 2
                    cx, cy = x0 + r, y0 + r
                    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
                    poly = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).ravel().tolist()
                draw.polygon([tuple(p) for p in np.asarray(poly).reshape(-1, 2)], fill=color)
                xs, ys = poly[0::2], poly[1::2]
                bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
                anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=cat,
                                 segmentation=[[float(v) for v in poly]],
                                 area=_polygon_area(poly), bbox=[float(v) for v in bbox],
                                 iscrowd=0))
            fname = f'{split}_{i:03d}.jpg'
            img.save(osp.join(root, split, fname), quality=95)
            images.append(dict(id=i + 1, file_name=fname, width=size, height=size))
        coco = dict(images=images, annotations=anns,
                    categories=[dict(id=1, name='box'), dict(id=2, name='disk')])
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
    return root


def coco_cfg_options(root: str) -> List[str]:
    root = root.rstrip('/') + '/'
    opts = []
    for dl in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts.append(f'{dl}.dataset.data_root={root}')
    for ev in ('val_evaluator', 'test_evaluator'):
        opts.append(f'{ev}.ann_file={root}annotations/instances_val.json')
    return opts


# ---------------------------------------------------------------- tools
def _tool_ready(name: str) -> bool:
    p = osp.join(REPO, 'tools', name)
    return osp.isfile(p) and 'Runner' in open(p).read()


def run_train(cfg: str, work_dir: str, cfg_options: Sequence[str] = (),
              extra_args: Sequence[str] = ('--no-validate',)) -> None:
    """``tools/train.py CFG --work-dir D --cfg-options ...`` (in-process Runner
    fallback while the tool is not there)."""
    if _tool_ready('train.py'):
        cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'), cfg, '--work-dir', work_dir,
               *extra_args]
        if cfg_options:
            cmd += ['--cfg-options', *cfg_options]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                             env=_TOOL_ENV)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
        return
    from mmengine.config import Config, DictAction  # noqa: F401
    from mmengine.runner import Runner
    c = Config.fromfile(cfg)
    c.merge_from_dict(_opts_to_dict(cfg_options))
    c.work_dir = work_dir
    Runner.from_cfg(c).train()


def run_test(cfg: str, ckpt: str, work_dir: str, cfg_options: Sequence[str] = (),
             out: Optional[str] = None) -> Dict[str, float]:
    """``tools/test.py CFG CKPT --work-dir D [--out F]``; returns the metrics."""
    if _tool_ready('test.py'):
        cmd = [sys.executable, osp.join(REPO, 'tools', 'test.py'), cfg, ckpt, '--work-dir', work_dir]
        if out:
            cmd += ['--out', out]
        if cfg_options:
            cmd += ['--cfg-options', *cfg_options]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                             env=_TOOL_ENV)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith('metrics: ')]
        assert lines, res.stdout[-3000:]
        return json.loads(lines[-1][len('metrics: '):])
    from mmengine.config import Config
    from mmengine.runner import Runner
    c = Config.fromfile(cfg)
    c.merge_from_dict(_opts_to_dict(cfg_options))
    c.work_dir = work_dir
    c.load_from = ckpt
    return Runner.from_cfg(c).test()


def _opts_to_dict(opts: Sequence[str]) -> dict:
    import ast
    out = {}
    for o in opts:
        k, v = o.split('=', 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def read_train_losses(work_dir: str) -> List[Dict[str, float]]:
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d))
                  and osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    with open(osp.join(work_dir, runs[0], 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f if line.strip() and '"loss"' in line]


def single_thread():
    """Context for in-process tests: one intra-op thread (see ``_TOOL_ENV``)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)
    return ctx()
