"""Every config folder trains under the ``tools/train.py`` its codebase ships (the copy
``mim train`` runs), not only under the project's: two iterations on the tiny data.

mmpretrain's tool defaults ``persistent_workers`` to True, which a loader with
``num_workers=0`` refuses, so the small configs say ``persistent_workers=False``.
"""
import glob
import os
import os.path as osp

import pytest
from helpers.checkout import REPO_ROOT as ROOT
from helpers.checkout import run_tool


def _codebase_tool(codebase: str) -> str:
    import importlib
    pkg = importlib.import_module(codebase)
    return osp.join(osp.dirname(pkg.__file__), '.mim', 'tools', 'train.py')


def _one(pattern: str) -> str:
    found = sorted(glob.glob(osp.join(ROOT, 'configs', pattern)))
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.fixture(scope='module')
def frozen_parts(tmp_path_factory):
    """Random tiny tokenizer / predictor files for the tiny ADDP config."""
    from helpers.addp import make_tiny_frozen_checkpoints
    from mmengine.config import Config
    cfg = Config.fromfile(_one('tests/addp_vit-tiny-p8_1xb8-*.py'))
    return make_tiny_frozen_checkpoints(cfg.model.to_dict(),
                                        str(tmp_path_factory.mktemp('frozen')))


def _data_options(name: str, request, frozen) -> list:
    """``--cfg-options`` pointing a config at the tiny data / frozen files of the tests."""
    if name == 'det':
        from helpers.detection import coco_cfg_options
        return coco_cfg_options(request.getfixturevalue('tiny_coco'))
    if name == 'seg':
        from helpers.segmentation import ade_cfg_options
        return ade_cfg_options(request.getfixturevalue('tiny_ade'))
    if name == 'addp':
        tok, pred = frozen
        return [f'model.tokenizer.checkpoint={tok}', f'model.token_predictor.checkpoint={pred}']
    if name == 'cls':
        return ['val_dataloader.dataset.indices=2']  # a tiny validation at the end
    return []


# (name, codebase, config pattern): the smallest config of each folder and codebase
CASES = [
    ('cls', 'mmpretrain', 'tests/vit-tiny-p8_1xb16-20i_embedded-32px.py'),
    ('tokenizer', 'mmpretrain', 'demo/vqgan_ch32-f4-k128_1xb16-600i_embedded-32px.py'),
    ('addp', 'mmpretrain', 'tests/addp_vit-tiny-p8_1xb8-*.py'),  # the configs/addp recipe, tiny
    ('det', 'mmdet', 'tests/mask-rcnn_*.py'),  # inherits configs/addp_det
    ('seg', 'mmseg', 'tests/*upernet*.py'),  # inherits configs/addp_seg
]


@pytest.mark.e2e
@pytest.mark.parametrize('name,codebase,pattern', CASES, ids=[c[0] for c in CASES])
def test_config_trains_under_the_codebase_tool(name, codebase, pattern, embedded_cwd, tmp_path,
                                               request, frozen_parts):
    cfg = _one(pattern)
    work = str(tmp_path / 'work')
    opts = ['train_cfg.max_iters=2'] + _data_options(name, request, frozen_parts)
    proc = run_tool([_codebase_tool(codebase), cfg, '--work-dir', work, '--cfg-options', *opts],
                    cwd=embedded_cwd, timeout=600, check=False)
    log = proc.stdout + proc.stderr
    assert 'persistent_workers option needs num_workers > 0' not in log
    assert proc.returncode == 0, log[-4000:]
    assert osp.isfile(osp.join(work, 'iter_2.pth')), os.listdir(work)


def test_every_loader_without_workers_turns_persistent_workers_off():
    """What the codebases' tools need of every config, not only of the ones trained above."""
    from mmengine.config import Config
    checked, bad = 0, []
    for path in sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)):
        rel = osp.relpath(path, ROOT)
        if '_base_' in rel:
            continue
        cfg = Config.fromfile(path)
        for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            loader = cfg.get(name)
            if not loader:
                continue
            checked += 1
            if loader.get('num_workers', 0) == 0 and loader.get('persistent_workers') is not False:
                bad.append(f'{rel}: {name}')
    assert checked > 20 and not bad, bad
