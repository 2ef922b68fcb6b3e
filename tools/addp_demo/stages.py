"""The demo's stages: configs under ``configs/demo/`` and their iteration budgets."""
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, Tuple

#: the repository checkout (``tools/addp_demo/`` is two levels below it)
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG_DIR = osp.join(ROOT, 'configs', 'demo')


@dataclass
class Stage:
    """One training stage: a config and its iteration budgets."""
    name: str
    title: str
    config: str
    iters: int  # full mode
    fast_iters: int
    #: ``--cfg-options`` the demo always adds (budget choices made here, not in the config)
    options: Tuple[str, ...] = ()
    outputs: Dict = field(default_factory=dict)


STAGES = {
    'tokenizer': Stage('tokenizer', 'VQGAN tokenizer (reconstruction + codebook + commitment)',
                       'vqgan_ch32-f4-k128_1xb16-600i_embedded-32px.py', 600, 60),
    'predictor': Stage('predictor', 'MAGE token predictor (masked token modelling)',
                       'mage_vit-tiny-d2_1xb32-1200i_embedded-32px.py', 1200, 40),
    'addp': Stage('addp', 'ADDP pretraining', 'addp_vit-tiny-p4_1xb32-1500i_embedded-32px.py',
                  1500, 60),
    'transfer_addp': Stage('transfer_addp', 'Linear probe, ADDP encoder',
                           'vit-tiny-p4_addp-pre_linear-probe_1xb64-150i_embedded-32px.py', 150,
                           50),
    'transfer_random': Stage('transfer_random', 'Linear probe, random-init encoder',
                             'vit-tiny-p4_random-init_linear-probe_1xb64-150i_embedded-32px.py',
                             150, 50),
    'detection': Stage('detection', 'Mask R-CNN on synthetic COCO',
                       'mask-rcnn_addp-vit-tiny-p4_simple-fpn_1xb4-150i_synthetic-coco-128px.py',
                       80, 10),
    'segmentation': Stage('segmentation', 'UperNet on synthetic ADE',
                          'upernet_addp-vit-tiny-p4_1xb8-200i_synthetic-ade-64px.py', 100, 10),
}
ORDER = ['tokenizer', 'predictor', 'addp', 'samples', 'transfer_addp', 'transfer_random',
         'detection', 'segmentation']
DENSE_ORDER = ['detection', 'segmentation']
#: what the dense comparison reads from each run's validation
DENSE_METRICS = {'detection': ('coco/bbox_mAP', 'coco/segm_mAP'), 'segmentation': ('mIoU', )}
#: the generated datasets (addp_mm/datasets/synthetic_dense.py) and their folders under data/
DENSE_DATA = {
    'detection': dict(folder='synthetic_coco_128px',
                      build=dict(image_size=128, num_train=64, num_val=16)),
    'segmentation': dict(folder='synthetic_ade_64px',
                         build=dict(image_size=64, num_train=64, num_val=16)),
}


class DemoError(SystemExit):

    def __init__(self, msg: str) -> None:
        super().__init__(f'demo error: {msg}')


def _scale_schedule(schedulers, base_iters: int, iters: int) -> list:
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    out = []
    for s in schedulers:
        s = dict(s)
        if s.get('by_epoch', True):
            raise DemoError(f'cannot rescale the epoch-based scheduler {s}')
        begin = int(round(s.get('begin', 0) * iters / base_iters))
        end = int(round(min(s.get('end', base_iters), base_iters) * iters / base_iters))
        end = max(end, begin + 1)
        s['begin'], s['end'] = begin, end
        if 'T_max' in s:
            s['T_max'] = end - begin
        out.append(s)
    return out


def stage_config(stage: Stage, iters: int, out_dir: str) -> str:
    """The config to run: the stage's own file, or (other iteration count) a
    child config next to the outputs that only rescales the iteration budget."""
    path = osp.join(CFG_DIR, stage.config)
    from mmengine.config import Config
    cfg = Config.fromfile(path, import_custom_modules=False)
    base_iters = int(cfg.train_cfg.max_iters)
    if iters == base_iters:
        return path
    train_cfg = dict(max_iters=iters)
    if 'val_interval' in cfg.train_cfg:
        train_cfg['val_interval'] = iters
    lines = [
        f'# {stage.name}: {stage.config} with {iters} instead of {base_iters} iterations, '
        'the schedule rescaled (written by tools/demo.py)',
        f'_base_ = [{path!r}]',
        f'train_cfg = {train_cfg!r}',
        f'param_scheduler = {_scale_schedule(cfg.param_scheduler, base_iters, iters)!r}',
        f'default_hooks = dict(checkpoint=dict(interval={iters}), '
        f'logger=dict(interval={max(1, min(10, iters // 5))}))',
    ]
    if cfg.get('custom_hooks'):
        hooks = [dict(h, interval=iters) if 'interval' in h else dict(h) for h in cfg.custom_hooks]
        lines.append(f'custom_hooks = {hooks!r}')
    os.makedirs(out_dir, exist_ok=True)
    child = osp.join(out_dir, osp.splitext(stage.config)[0] + f'_{iters}i.py')
    with open(child, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return child

