"""The four codebase inferencers and ``ADDPGenerator`` in one process, in the orders that
mix scopes: mmdet's and mmseg's inferencers leave their scope as mmengine's current
``DefaultScope``, which mmpretrain's inferencers build their pipeline in.

The scope is process-wide, so every order runs in a fresh interpreter.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT
from helpers.inferencers import build_initialised, save_for_inferencer

CLS_CFG = osp.join(ROOT, 'configs', 'tests', 'vit-tiny24-p16_addp-pre_1xb4-2e_demo-64px.py')
DET_CFG = osp.join(ROOT, 'configs', 'tests', 'mask-rcnn_addp-vit-tiny_simple-fpn_test_coco.py')
SEG_CFG = osp.join(ROOT, 'configs', 'tests', 'upernet_addp-vit-tiny_test_ade20k-64x64.py')
GEN_CFG = osp.join(ROOT, 'configs', 'tests', 'addp_vit-tiny-p8_iterdec-cosine-8step_embedded-64px.py')

#: Run in a fresh interpreter: create the inferencers in the order of argv[2:], then call
#: each (in the reverse order), and print what each answered as JSON.
SCRIPT = r'''
import json, sys
import numpy as np
import torch
torch.set_num_threads(1)
ck = json.loads(sys.argv[1])
from skimage import data
photo = np.ascontiguousarray(data.chelsea()[:, :, ::-1])

def make(kind):
    if kind == 'cls':
        from mmpretrain.apis import ImageClassificationInferencer
        return ImageClassificationInferencer(ck['cls_cfg'], pretrained=ck['cls'], device='cpu')
    if kind == 'feat':
        from mmpretrain.apis import FeatureExtractor
        return FeatureExtractor(ck['cls_cfg'], pretrained=ck['cls'], device='cpu')
    if kind == 'det':
        from mmdet.apis import DetInferencer
        return DetInferencer(ck['det_cfg'], weights=ck['det'], device='cpu', show_progress=False)
    if kind == 'seg':
        from mmseg.apis import MMSegInferencer
        return MMSegInferencer(ck['seg_cfg'], weights=ck['seg'], device='cpu')
    from addp_mm.apis import ADDPGenerator
    return ADDPGenerator(ck['gen_cfg'], pretrained=ck['gen'], device='cpu')

def answer(kind, inf):
    if kind == 'cls':
        return int(inf(photo)[0]['pred_label'])
    if kind == 'feat':
        feats = inf(photo)[0]
        return list((feats[-1] if isinstance(feats, (list, tuple)) else feats).shape)
    if kind == 'det':
        pred = inf(photo)['predictions'][0]
        return int(pred['labels'][int(np.argmax(pred['scores']))])
    if kind == 'seg':
        return np.unique(np.asarray(inf(photo)['predictions'])).tolist()
    out = inf(num_images=1, num_steps=2, schedule='linear')  # a sampler built at call time
    return list(np.asarray(out['images'][0]).shape)

order = sys.argv[2:]
made = [(k, make(k)) for k in order]
answers = {k: answer(k, inf) for k, inf in reversed(made)}
print('\nANSWERS ' + json.dumps(answers), flush=True)
'''

EXPECTED = {'cls': 2, 'feat': [24], 'det': 1, 'seg': [7], 'gen': [64, 64, 3]}


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """One checkpoint per inferencer, each biased to a known answer."""
    d = tmp_path_factory.mktemp('orders')
    torch.set_num_threads(1)
    cls = build_initialised(CLS_CFG)
    det = build_initialised(DET_CFG)
    seg = build_initialised(SEG_CFG)
    with torch.no_grad():
        cls.head.fc.bias.zero_()
        cls.head.fc.bias[2] = 20.
        det.roi_head.bbox_head.fc_cls.bias.zero_()
        det.roi_head.bbox_head.fc_cls.bias[1] = 20.
        seg.decode_head.conv_seg.bias.zero_()
        seg.decode_head.conv_seg.bias[7] = 50.
    from mmseg.datasets import ADE20KDataset
    from helpers.generation import save_tiny_addp
    return dict(
        cls_cfg=CLS_CFG, det_cfg=DET_CFG, seg_cfg=SEG_CFG, gen_cfg=GEN_CFG,
        cls=save_for_inferencer(cls, str(d / 'cls.pth'), dict(classes=['a', 'b', 'c', 'd'])),
        det=save_for_inferencer(det, str(d / 'det.pth'),
                                dict(classes=('box', 'disk'),
                                     palette=[(220, 20, 60), (0, 0, 230)])),
        seg=save_for_inferencer(seg, str(d / 'seg.pth'),
                                dict(classes=ADE20KDataset.METAINFO['classes'],
                                     palette=ADE20KDataset.METAINFO['palette'])),
        gen=save_tiny_addp(str(d / 'gen.pth')))


@pytest.mark.e2e
@pytest.mark.parametrize('order', [
    ('det', 'cls'),
    ('seg', 'feat'),
    ('seg', 'gen', 'det', 'cls'),  # the generator is called after det set mmdet's scope
], ids='->'.join)
def test_inferencers_in_one_process(checkpoints, order):
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-c', SCRIPT, json.dumps(checkpoints), *order],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    found = re.findall(r'^ANSWERS (.*)$', proc.stdout, flags=re.M)
    assert found, proc.stdout[-2000:] + proc.stderr[-4000:]
    answers = json.loads(found[-1])
    assert answers == {k: EXPECTED[k] for k in order}



@pytest.fixture(scope='module')
def mmpretrain_test_pipelines():
    """``(config, test pipeline)`` of every mmpretrain config that has one."""
    import glob
    from mmengine.config import Config
    out = []
    for path in sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)):
        rel = osp.relpath(path, ROOT)
        if '_base_' in rel or rel.startswith(('configs/addp_det', 'configs/addp_seg',
                                              'configs/addp_gen')):
            continue  # fragments; detection, segmentation and sampling configs
        cfg = Config.fromfile(path)
        loader = cfg.get('test_dataloader') or {}
        pipeline = (loader.get('dataset') or {}).get('pipeline')
        if cfg.get('default_scope') == 'mmpretrain' and pipeline:
            out.append((rel, pipeline))
    return out


def test_mmpretrain_test_pipelines_build_in_any_scope(mmpretrain_test_pipelines):
    """What mmpretrain's inferencers do with an ADDP config after an mmdet/mmseg inferencer."""
    import addp_mm  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmpretrain.datasets import remove_transform
    from mmpretrain.registry import TRANSFORMS
    assert len(mmpretrain_test_pipelines) >= 5  # classification configs of addp, tests, demo
    for scope in ('mmdet', 'mmseg'):
        with DefaultScope.overwrite_default_scope(scope):
            for path, pipeline in mmpretrain_test_pipelines:
                for t in remove_transform(pipeline, 'LoadImageFromFile'):
                    try:
                        TRANSFORMS.build(t)
                    except KeyError as err:
                        pytest.fail(f'{path}: {t["type"]} does not build in the {scope} scope '
                                    f'({err})')


def test_codebase_scope_sets_the_scope_for_the_block_only():
    """The context the docs give users of plain mmpretrain configs."""
    import addp_mm  # noqa: F401
    from mmengine.registry import DefaultScope, init_default_scope
    from mmpretrain.registry import TRANSFORMS

    from addp_mm.apis import codebase_scope
    init_default_scope('mmdet')  # what DetInferencer leaves
    with pytest.raises(KeyError, match='PackInputs is not in the mmdet::transform registry'):
        TRANSFORMS.build(dict(type='PackInputs'))
    with codebase_scope('mmpretrain'):
        assert type(TRANSFORMS.build(dict(type='PackInputs'))).__name__ == 'PackInputs'
    assert DefaultScope.get_current_instance().scope_name == 'mmdet'
    with codebase_scope(None):
        assert DefaultScope.get_current_instance().scope_name == 'mmdet'
