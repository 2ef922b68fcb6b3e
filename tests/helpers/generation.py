"""Helpers of the generation tests (not a test module)."""
import os
import os.path as osp
import subprocess
import sys
from typing import List

import torch

from addp_mm.testing import REPO_ROOT as ROOT

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
