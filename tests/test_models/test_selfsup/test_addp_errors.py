"""Clear errors at build time (and for bad inputs at run time)."""
import copy

import pytest
import torch
from helpers.addp import TINY_CFG, make_tiny_frozen_checkpoints
from mmengine.config import Config

import addp_mm  # noqa: F401
from mmpretrain.registry import MODELS


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
    cfg = Config.fromfile(TINY_CFG)
    tok, tp = make_tiny_frozen_checkpoints(cfg.model, str(tmp_path_factory.mktemp('err_ckpt')))
    cfg.model.tokenizer.checkpoint = tok
    cfg.model.token_predictor.checkpoint = tp
    return cfg.model


def _cfg(model_cfg, **parts):
    c = copy.deepcopy(model_cfg)
    for k, v in parts.items():
        if isinstance(v, dict):
            c[k].update(v)
        else:
            c[k] = v
    return c


@pytest.mark.parametrize('part', ['tokenizer', 'token_predictor'])
def test_missing_checkpoint_file_fails_at_build(cfg, part, tmp_path):
    bad = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match=f'{part} checkpoint not found.*nope.pth.*model.{part}.checkpoint'):
        MODELS.build(_cfg(cfg, **{part: dict(checkpoint=bad)}))


@pytest.mark.parametrize('part', ['tokenizer', 'token_predictor'])
def test_unset_checkpoint_fails_at_build(cfg, part):
    with pytest.raises(ValueError, match=f'pretrained frozen {part}.*model.{part}.checkpoint'):
        MODELS.build(_cfg(cfg, **{part: dict(checkpoint=None)}))


def test_predictor_vocabulary_must_match_codebook(cfg):
    with pytest.raises(ValueError, match=r'predictor vocabulary \(128 codes\).*codebook \(64'):
        MODELS.build(_cfg(cfg, token_predictor=dict(num_codes=128, fake_class_id=128)))


def test_image_size_must_give_the_token_grid(cfg):
    # patch 16 at 64 px: 4x4 patches, but the /8 VQGAN gives an 8x8 token grid
    with pytest.raises(ValueError, match=r'image size \(64, 64\) gives a \(8, 8\) VQ token grid.*\(4, 4\) patch grid'):
        MODELS.build(_cfg(cfg, backbone=dict(patch_size=16)))
    with pytest.raises(ValueError, match='not divisible by the tokenizer down-sampling factor 8'):
        MODELS.build(_cfg(cfg, backbone=dict(img_size=60, patch_size=6)))
    with pytest.raises(ValueError, match='token_predictor.num_tokens=64 but image size'):
        MODELS.build(_cfg(cfg, backbone=dict(img_size=128, patch_size=8)))


def test_bad_inputs_at_run_time(cfg):
    model = MODELS.build(copy.deepcopy(cfg))
    model.init_weights()
    with pytest.raises(ValueError, match=r'do not give the configured \(8, 8\) token grid.*\(64, 64\)'):
        model.forward_train_step(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match=r'expects RGB in \[0, 1\].*std=\[255, 255, 255\]'):
        model.forward_train_step(torch.rand(1, 3, 64, 64) * 255)
    x = torch.rand(2, 3, 64, 64)
    m = torch.zeros(2, 64)
    m[:, :40] = 1
    with pytest.raises(ValueError, match='mask_t_next must contain'):
        model.forward_train_step(x, m, torch.zeros(2, 64))
    with pytest.raises(ValueError, match='both masks or neither'):
        model.forward_train_step(x, m)
    uneven = m.clone()
    uneven[1, 50] = 1
    with pytest.raises(ValueError, match='same number of visible tokens'):
        model.neck(torch.zeros(2, 65, 32), torch.zeros(2, 64, dtype=torch.long), uneven)
    with pytest.raises(ValueError, match='only allowed when every position is masked'):
        model.neck(None, torch.zeros(2, 64, dtype=torch.long), m)
    with pytest.raises(ValueError, match='needs a generation sampler'):
        model(x, None, mode='predict')
