"""The generation configs: release sampler settings, evaluator paths, model geometry."""
import glob
import os.path as osp

import pytest
import torch
from helpers.generation import ROOT
from mmengine.config import Config

GEN_DIR = osp.join(ROOT, 'configs', 'addp_gen')


def _cfg(name):
    return Config.fromfile(osp.join(GEN_DIR, name))


@pytest.mark.parametrize('name,steps,schedule,encoder_dims', [
    ('addp_vit-base-p16_iterdec-cosine-20step_in1k-256px.py', 20, 'cosine', 768),
    ('addp_vit-large-p16_iterdec-cosine-20step_in1k-256px.py', 20, 'cosine', 1024),
    ('addp_vit-large-p16_iterdec-linear-256step_in1k-256px.py', 256, 'linear', 1024),
])
def test_release_generation_configs(name, steps, schedule, encoder_dims):
    cfg = _cfg(name)
    s = cfg.model.sampler
    assert (s.type, s.num_steps, s.schedule) == ('AlternatingDenoisingSampler', steps, schedule)
    assert (s.choice_temperature, s.temperature_strategy, s.token_temperature, s.top_p) == \
        (6.0, 'linear', 1.0, 1.0)
    assert cfg.model.backbone.embed_dims == encoder_dims and cfg.model.type == 'ADDP'
    assert cfg.test_evaluator.type == 'ADDPGenerationMetric'
    assert cfg.test_evaluator.inception_weights == cfg.inception_weights
    assert cfg.test_dataloader.dataset.num_samples == 50000
    assert cfg.test_dataloader.batch_size == (512 if steps == 256 else 64)
    assert 'addp_mm' in cfg.custom_imports.imports


def test_base_generation_model_builds_with_256_tokens():
    import addp_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = _cfg('addp_vit-base-p16_iterdec-cosine-20step_in1k-256px.py')
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert model.sampler.get_num_tokens(model) == 256 and model.num_codes == 1024
    from addp_mm.models.generation.schedule import masked_count_schedule
    assert masked_count_schedule(model.sampler.num_steps, 256)[:3] == [256, 253, 249]


def test_every_generation_config_parses():
    names = sorted(glob.glob(osp.join(GEN_DIR, '*.py')))
    assert len(names) >= 3
    names.append(osp.join(ROOT, 'configs', 'tests', 'addp_vit-tiny-p8_iterdec-cosine-8step_embedded-64px.py'))
    for n in names:
        cfg = Config.fromfile(n)
        assert cfg.test_cfg.type == 'TestLoop' and cfg.default_scope == 'mmpretrain'
