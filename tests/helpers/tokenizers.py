"""Shared helpers for the tokenizer / token-predictor tests (not a test module)."""
import os.path as osp
import re
from typing import Dict, List, Tuple

import numpy as np
import torch

from helpers.checkout import REPO_ROOT as ROOT
DATA = osp.join(ROOT, 'tests', 'data')
FIXTURE = osp.join(DATA, 'addp_official_tiny_v1.pt')
KEYS_DIR = osp.join(DATA, 'checkpoint_keys')
CONFIG_DIR = osp.join(ROOT, 'configs', '_base_', 'models')

_FX = None


def load_fixture() -> dict:
    """The reference-tensor fixture (cached; read-only use only)."""
    global _FX
    if _FX is None:
        _FX = torch.load(FIXTURE, map_location='cpu', weights_only=True)
    return _FX


def fixture_images() -> torch.Tensor:
    return load_fixture()['inputs']['images_uint8'].to(torch.float32) / 255


def tiny_vqgan_kwargs() -> dict:
    cfg = load_fixture()['meta']['config']['vqgan']
    dd = cfg['ddconfig']
    return dict(ch=dd['ch'], ch_mult=tuple(dd['ch_mult']), num_res_blocks=dd['num_res_blocks'],
                in_channels=dd['in_channels'], out_channels=dd['out_ch'],
                z_channels=dd['z_channels'], num_embeddings=cfg['n_embed'],
                embed_dim=cfg['embed_dim'])


def tiny_mage_kwargs() -> dict:
    tc = load_fixture()['meta']['config']['token_predictor']
    vq = load_fixture()['meta']['config']['vqgan']
    return dict(num_codes=vq['n_embed'], num_tokens=(tc['img_size'] // tc['patch_size'])**2,
                embed_dims=tc['embed_dim'], depth=tc['depth'], num_heads=tc['num_heads'],
                decoder_embed_dims=tc['decoder_embed_dim'], decoder_depth=tc['decoder_depth'],
                decoder_num_heads=tc['decoder_num_heads'], mlp_ratio=tc['mlp_ratio'])


def _dense(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    # like a real file: independent, contiguous tensors
    return {k: v.clone().contiguous() for k, v in sd.items()}


def official_vqgan_sd() -> Dict[str, torch.Tensor]:
    """The tiny VQGAN in the official file layout (no prefix)."""
    addp = load_fixture()['state_dict']['addp']
    return _dense({k[len('vqgan.'):]: v for k, v in addp.items() if k.startswith('vqgan.')})


def official_mage_sd() -> Dict[str, torch.Tensor]:
    """The tiny predictor as in a MAGE file's ``'model'`` (with its vqgan.* copy)."""
    addp = load_fixture()['state_dict']['addp']
    p = 'token_predictor.'
    return _dense({k[len(p):]: v for k, v in addp.items() if k.startswith(p)})


def write_official_files(tmp_dir: str) -> Dict[str, str]:
    """Write the tiny weights in the official formats; return their paths."""
    paths = dict(vqgan_top=osp.join(tmp_dir, 'vqgan_top_level.ckpt'),
                 vqgan_state_dict=osp.join(tmp_dir, 'vqgan_state_dict.ckpt'),
                 mage=osp.join(tmp_dir, 'mage-tiny.pth'),
                 addp=osp.join(tmp_dir, 'addp-tiny.pth'))
    vq = official_vqgan_sd()
    torch.save(vq, paths['vqgan_top'])
    torch.save({'state_dict': vq, 'global_step': 0}, paths['vqgan_state_dict'])
    torch.save({'model': official_mage_sd(), 'epoch': 1599}, paths['mage'])
    torch.save({'model': _dense(load_fixture()['state_dict']['addp']), 'epoch': 0}, paths['addp'])
    return paths


_LINE = re.compile(r'^(\S+) \[([\d,]*)\] (\w+)$')


def read_key_listing(name: str) -> List[Tuple[str, Tuple[int, ...], torch.dtype]]:
    """Parse ``tests/data/checkpoint_keys/<name>.txt`` (``key [shape] dtype``)."""
    rows = []
    with open(osp.join(KEYS_DIR, name + '.txt')) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            m = _LINE.match(line)
            assert m, f'unparsable key listing line: {line!r}'
            shape = tuple(int(s) for s in m.group(2).split(',') if s)
            rows.append((m.group(1), shape, getattr(torch, m.group(3))))
    return rows


def random_state_dict(name: str, device: str = 'cpu', seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random tensors for every key of a listing (``device='meta'``: shapes
    only, no memory). ``position_ids`` buffers get their real value 0..L-1."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape, dtype in read_key_listing(name):
        if device == 'meta':
            out[key] = torch.empty(shape, dtype=dtype, device='meta')
        elif key.endswith('position_ids'):
            out[key] = torch.arange(shape[-1], dtype=dtype).reshape(shape)
        else:
            out[key] = torch.randn(shape, generator=gen, dtype=dtype) * 0.02
    return out


#: A small VQGAN config for the tokenizer-training tests.
TINY_TOK = dict(type='VQGANTokenizer', ch=16, ch_mult=(1, 2), num_res_blocks=1, z_channels=8,
                num_embeddings=16, embed_dim=8, norm_num_groups=4)


def photo_batch(n: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Real crops of scikit-image photos, [n, 3, size, size] in [0, 1]."""
    from addp_mm.datasets.embedded import EMBEDDED_PHOTOS, load_photo
    rng = np.random.default_rng(seed)
    names = sorted(EMBEDDED_PHOTOS)
    out = []
    for i in range(n):
        img = load_photo(names[i % len(names)])
        w, h = img.size
        x0, y0 = int(rng.integers(0, w - 64)), int(rng.integers(0, h - 64))
        crop = img.crop((x0, y0, x0 + 64, y0 + 64)).resize((size, size))
        out.append(torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float() / 255.)
    return torch.stack(out)
