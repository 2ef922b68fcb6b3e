"""Helpers of the generation tests (not a test module)."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys
from types import ModuleType
from typing import List, Optional

import torch

from helpers.checkout import REPO_ROOT as ROOT

TINY_GEN_CFG = osp.join(ROOT, 'configs', 'tests', 'addp_vit-tiny-p8_iterdec-cosine-8step_embedded-64px.py')


def build_tiny_addp(seed: int = 0):
    """ADDP of the tiny generation config with random (non-degenerate) weights."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import addp_mm  # noqa: F401
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(TINY_GEN_CFG)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # peaked predictions / distinct VQ codes, as in the fixture
        model.tokenizer.quantize.embedding.weight.normal_(0, 0.35, generator=gen)
        model.neck.token_emb.weight.normal_(0, 0.3, generator=gen)
        for p in (model.neck.decoder_pos_embed_learned, model.neck.decoder_pos_mask_embed,
                  model.neck.decoder_pos_token_embed, model.neck.mask_token):
            p.normal_(0, 0.5, generator=gen)
    return model.eval(), cfg


def save_tiny_addp(path: str) -> str:
    """Save :func:`build_tiny_addp`'s weights as a Runner-style checkpoint at ``path``."""
    model, _ = build_tiny_addp()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def load_script(rel: str, name: Optional[str] = None) -> ModuleType:
    """Import the repository script ``rel`` (e.g. ``'tools/sample.py'``) as a module."""
    name = name or osp.basename(rel)[:-3]
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def numbered_pngs(folder: str) -> List[str]:
    """The ``000000.png``-style sample files of ``folder``, sorted."""
    return sorted(f for f in os.listdir(folder) if f.endswith('.png') and f[:-4].isdigit())


def run_tool(args: List[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python <args>`` from the repository root; fail with its output."""
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', '1')
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-5000:]}')
    return proc
