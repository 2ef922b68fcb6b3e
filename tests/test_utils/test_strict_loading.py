"""Whole-model checkpoints that do not fit the model are refused in one line.

``load_from`` and ``--resume`` (any mmengine Runner, not only ``tools/train.py``),
``mmpretrain.get_model(<ADDP entry>, pretrained=FILE)`` and
``addp_mm.apis.get_model`` refuse a file of another model before any weight is
copied or any iteration runs, with the key accounting that ``tools/test.py``
gives. A backbone's ``init_cfg`` still loads part of a file.
"""
import os.path as osp
import runpy
import sys

import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT

import addp_mm  # noqa: F401  (installs the strict loading)
from addp_mm.utils.checkpoint import CheckpointError

TRAIN = osp.join(ROOT, 'tools', 'train.py')
CLS_CFG = osp.join(ROOT, 'configs', 'tests', 'vit-tiny-p8_1xb16-20i_embedded-32px.py')
ZOO_CLS = 'vit-base-p16_addp-pre_8xb128-coslr-100e_in1k-256px'


def _one_line(text: str) -> str:
    assert '\n' not in text.strip() and 'Traceback' not in text, text
    return text


class Net(torch.nn.Module):

    def __init__(self, width: int = 4):
        super().__init__()
        self.backbone = torch.nn.Linear(3, width)
        self.head = torch.nn.Linear(width, 2)


def _runner(tmp_path, model, **cfg):
    """A Runner around ``model``; ``Net`` holds no addp_mm module, so the
    tests of the check ask for strictness in the config."""
    from mmengine.runner import Runner
    cfg.setdefault('load_from_strict', True)
    return Runner(model=model, work_dir=str(tmp_path / 'work'), cfg=cfg or None,
                  experiment_name=f'strict_{id(model)}_{tmp_path.name}')


def _timm_vit_state_dict() -> dict:
    """The state dict of a timm ViT of the test config's size (another model's layout)."""
    import timm
    vit = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=8,
                            embed_dim=32, depth=2, num_heads=2, num_classes=14)
    return vit.state_dict()


# ------------------------------------------------------- any mmengine Runner
def test_runner_load_checkpoint_refuses_another_model(tmp_path):
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    other = str(tmp_path / 'other.pth')
    torch.save({'state_dict': Net(width=5).state_dict(), 'meta': {}}, other)
    runner = _runner(tmp_path, model)
    with pytest.raises(CheckpointError) as err:
        runner.load_checkpoint(other)
    msg = _one_line(str(err.value))
    assert 'does not fit the model' in msg and repr(other) in msg
    assert 'backbone.weight: (5, 3) vs (4, 3)' in msg and 'shape mismatch' in msg
    assert "init_cfg=dict(type='Pretrained'" in msg and 'load_from_strict = False' in msg
    for k, v in model.state_dict().items():  # nothing was copied
        assert torch.equal(v, before[k]), k


def test_runner_load_checkpoint_loads_a_fitting_file(tmp_path):
    src = Net()
    with torch.no_grad():
        src.head.bias.copy_(torch.tensor([3., 4.]))
    path = str(tmp_path / 'same.pth')
    # a DDP-saved file (``module.`` prefix) and extra data preprocessor buffers still fit
    sd = {f'module.{k}': v for k, v in src.state_dict().items()}
    sd['data_preprocessor.mean'] = torch.zeros(3)
    torch.save({'state_dict': sd, 'meta': {}}, path)
    model = Net()
    _runner(tmp_path, model).load_checkpoint(path)
    assert torch.equal(model.head.bias, torch.tensor([3., 4.]))


def test_runner_opt_out_loads_the_matching_keys(tmp_path):
    model = Net()
    other = Net(width=5)
    path = str(tmp_path / 'other.pth')
    torch.save(other.state_dict(), path)
    _runner(tmp_path, model, load_from_strict=False).load_checkpoint(path)
    # mmengine's behaviour: the one tensor whose shape matches is copied, the rest skipped
    assert torch.equal(model.head.bias, other.head.bias)
    assert model.head.weight.shape == (2, 4)


def test_other_codebases_models_keep_mmengines_loading(tmp_path):
    """A model without an addp_mm module loads as mmengine loads it (e.g. a
    COCO detector fine-tuned on other classes), unless its config asks."""
    model = Net()
    other = Net(width=5)
    path = str(tmp_path / 'other.pth')
    torch.save(other.state_dict(), path)
    from mmengine.runner import Runner
    Runner(model=model, work_dir=str(tmp_path / 'work'), cfg=None,
           experiment_name=f'plain_{tmp_path.name}').load_checkpoint(path)
    assert torch.equal(model.head.bias, other.head.bias)


def test_runner_resume_refuses_before_the_optimizer(tmp_path):
    """mmengine would warn about every key, then fail on the optimizer's parameter groups."""
    other = Net(width=5)
    opt = torch.optim.AdamW([{'params': [other.backbone.weight]},
                             {'params': [other.head.weight], 'lr': 0.1}])
    path = str(tmp_path / 'iter_2.pth')
    torch.save({'meta': {'epoch': 0, 'iter': 2}, 'state_dict': other.state_dict(),
                'optimizer': opt.state_dict(), 'message_hub': {}}, path)
    runner = _runner(tmp_path, Net())
    with pytest.raises(CheckpointError) as err:
        runner.resume(path)
    msg = _one_line(str(err.value))
    assert 'does not fit the model' in msg and 'parameter groups' not in msg
    assert runner.iter == 0


# ------------------------------------------------------------ tools/train.py
def _train(argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', [TRAIN] + argv)
    monkeypatch.syspath_prepend(osp.dirname(TRAIN))
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(TRAIN, run_name='__main__')
    out = capsys.readouterr()
    assert exc.value.code not in (0, None), out.out[-2000:] + out.err[-2000:]
    return str(exc.value.code), out.out + out.err


def test_train_tool_refuses_a_timm_state_dict_as_load_from(tmp_path, embedded_cwd, monkeypatch,
                                                           capsys):
    """The reproduction of the issue: top-1 of a random model and exit 0 before."""
    monkeypatch.chdir(embedded_cwd)
    path = str(tmp_path / 'timm_vit.pth')
    torch.save(_timm_vit_state_dict(), path)
    work = tmp_path / 'work'
    msg, text = _train([CLS_CFG, '--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=2',
                        f'load_from={path}'], monkeypatch, capsys)
    _one_line(msg)
    assert msg.startswith('error: checkpoint') and 'does not fit the model' in msg
    assert 'missing key(s)' in msg and 'unexpected key(s)' in msg and 'cls_token' in msg
    assert 'Iter(train)' not in text  # refused before the first iteration
    assert not list(work.rglob('*.pth'))


def test_train_tool_resume_with_another_configs_checkpoint(tmp_path, embedded_cwd, monkeypatch,
                                                           capsys):
    monkeypatch.chdir(embedded_cwd)
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(CLS_CFG)
    cfg.model.backbone.arch['num_layers'] = 3
    other = MODELS.build(cfg.model)
    opt = torch.optim.AdamW(other.parameters())
    path = str(tmp_path / 'iter_4.pth')
    torch.save({'meta': {'epoch': 0, 'iter': 4, 'seed': 0}, 'state_dict': other.state_dict(),
                'optimizer': opt.state_dict(), 'message_hub': {}}, path)
    msg, text = _train([CLS_CFG, '--work-dir', str(tmp_path / 'work'), '--resume', path],
                       monkeypatch, capsys)
    _one_line(msg)
    assert 'does not fit the model' in msg and 'backbone.layers.2' in msg
    assert 'parameter groups' not in text and 'Iter(train)' not in text


# ----------------------------------------------- the model index's pretrained=
def _small_cls():
    return dict(backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2,
                                        feedforward_channels=64), init_cfg=None),
                head=dict(in_channels=32, num_classes=5))


def test_model_index_pretrained_is_strict(tmp_path):
    import mmpretrain

    from addp_mm.apis import get_model
    path = str(tmp_path / 'timm.pth')
    torch.save(_timm_vit_state_dict(), path)
    for build in (lambda: mmpretrain.get_model(ZOO_CLS, pretrained=path, **_small_cls()),
                  lambda: get_model(ZOO_CLS, pretrained=path, **_small_cls())):
        with pytest.raises(CheckpointError) as err:
            build()
        msg = _one_line(str(err.value))
        assert 'does not fit the model' in msg and 'cls_token' in msg and repr(path) in msg


def test_get_model_takes_a_config_path(tmp_path):
    from addp_mm.apis import get_model
    from addp_mm.apis.model_index import get_model_config
    cfg_path = get_model_config(ZOO_CLS).filename
    model = get_model(cfg_path, **_small_cls())
    assert type(model).__name__ == 'ImageClassifier' and model.head.fc.out_features == 5
    with pytest.raises(ValueError, match='config file not found'):
        get_model(str(tmp_path / 'nope.py'))


def test_backbone_init_cfg_still_loads_part_of_a_file(tmp_path):
    """Partial loading where it is meant: a backbone's Pretrained init with a prefix
    takes the backbone out of a whole model's file."""
    from mmpretrain.models import VisionTransformer
    arch = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
    src = VisionTransformer(arch=arch, img_size=32, patch_size=8)
    whole = {f'backbone.{k}': v + 1 for k, v in src.state_dict().items()}
    whole['head.fc.weight'] = torch.zeros(5, 32)  # the rest of a whole model: not loaded
    path = str(tmp_path / 'whole.pth')
    torch.save({'state_dict': whole}, path)
    model = VisionTransformer(arch=arch, img_size=32, patch_size=8, init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    for k, v in model.state_dict().items():
        assert torch.equal(v, whole[f'backbone.{k}']), k


@pytest.mark.e2e
def test_mmpretrains_own_train_tool_refuses_it_too(tmp_path, embedded_cwd):
    """What ``mim train`` runs: the config's custom_imports load addp_mm, so the Runner
    of mmpretrain's own tools/train.py refuses the file before the first iteration."""
    import importlib

    from helpers.checkout import run_tool
    tool = osp.join(osp.dirname(importlib.import_module('mmpretrain').__file__), '.mim', 'tools',
                    'train.py')
    path = str(tmp_path / 'timm_vit.pth')
    torch.save(_timm_vit_state_dict(), path)
    work = tmp_path / 'work'
    proc = run_tool([tool, CLS_CFG, '--work-dir', str(work), '--cfg-options',
                     'train_cfg.max_iters=2', f'load_from={path}'], cwd=embedded_cwd,
                    timeout=600, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert 'CheckpointError' in last and 'does not fit the model' in last, last
    assert 'Iter(train)' not in log and not list(work.rglob('iter_*.pth'))
