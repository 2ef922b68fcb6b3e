"""The demo report's curves (tools/addp_demo/plots.py) on small fake logs, and
the kNN monitor in the demo's ADDP config."""
import json
import os
import os.path as osp

import numpy as np
import pytest
from helpers.addp import ROOT
from helpers.generation import load_script
from PIL import Image

load_script('tools/demo.py')  # puts tools/ (the addp_demo package) on sys.path
from addp_demo import plots  # noqa: E402
from addp_demo.stages import STAGES, stage_config  # noqa: E402

ADDP_CFG = osp.join(ROOT, 'configs', 'demo', 'addp_vit-tiny-p4_1xb32-1500i_embedded-32px.py')


def _write_log(work_dir: str, stage: str, records: list) -> None:
    folder = osp.join(work_dir, stage, '20260101_000000', 'vis_data')
    os.makedirs(folder)
    with open(osp.join(folder, 'scalars.json'), 'w') as f:
        f.write('\n'.join(json.dumps(r) for r in records) + '\n')


def _fake_run(work_dir: str) -> None:
    _write_log(work_dir, 'tokenizer', [dict(loss=1.0 / i, loss_rec=0.5 / i, step=10 * i)
                                       for i in range(1, 6)])
    addp = [dict(loss=4.8 - 0.01 * i, lr=1e-3, step=10 * i) for i in range(1, 31)]
    # the hook's records: iteration 0 (random init), every 100, a repeated step keeps the last
    for step, top1 in ((0, 80.0), (100, 82.5), (200, 85.0), (300, 84.0), (300, 86.0)):
        addp.append({'knn/top1': top1, 'knn/top5': 99.0, 'knn/time': 0.5, 'step': step})
    _write_log(work_dir, 'addp', addp)


def _png(path: str) -> np.ndarray:
    img = np.asarray(Image.open(path).convert('RGB'))
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 5
    return img


def test_curves_section_writes_both_plots_and_the_numbers(tmp_path):
    wd = str(tmp_path)
    _fake_run(wd)
    summary = dict(stages=dict(data=dict(wall_s=1.0), tokenizer={}, addp={}, samples={}))
    lines = plots.curves_section(wd, summary)
    text = '\n'.join(lines)
    assert '![training losses](training_losses.png)' in text
    assert '![kNN top-1 over pretraining](knn_top1.png)' in text
    assert 'random init **80.00 %** (iteration 0) -> **86.00 %** after 300 iterations' in text
    assert 'best 86.00 % at iteration 300' in text and '0.50 s per evaluation' in text
    knn = summary['knn']
    assert knn['curve'] == [(0, 80.0), (100, 82.5), (200, 85.0), (300, 86.0)]
    assert knn['random_init'] == 80.0 and knn['last'] == 86.0 and knn['top5_last'] == 99.0
    wide = _png(osp.join(wd, 'training_losses.png'))
    assert wide.shape[1] > wide.shape[0]  # two panels side by side (tokenizer, addp)
    _png(osp.join(wd, 'knn_top1.png'))


def test_runs_of_one_task_share_a_panel():
    assert plots._panel_of('detection_random_seed1') == ('detection', 'random seed1')
    assert plots._panel_of('transfer_addp') == ('transfer', 'addp')
    assert plots._panel_of('addp') == ('addp', '') and plots._panel_of('tokenizer')[1] == ''


def test_curve_reading_and_plot_errors(tmp_path):
    recs = [dict(loss=2.0, step=5), dict(loss=1.0, step=3), dict(lr=1.0, step=4),
            dict(loss=1.5, iter=7)]
    assert plots.scalar_curve(recs, 'loss') == [(3, 1.0), (5, 2.0), (7, 1.5)]
    assert plots.knn_summary(recs) is None
    # a run without the start evaluation has no reference value
    s = plots.knn_summary([{'knn/top1': 50.0, 'knn/top5': 90.0, 'step': 100}])
    assert s['random_init'] is None and s['mean_time_s'] is None
    plots.plot_knn(s['curve'], str(tmp_path / 'k.png'))
    _png(str(tmp_path / 'k.png'))
    with pytest.raises(ValueError, match='no kNN values'):
        plots.plot_knn([], str(tmp_path / 'x.png'))
    with pytest.raises(ValueError, match='no training losses'):
        plots.plot_losses({'a': []}, str(tmp_path / 'y.png'))
    # no ADDP folder: only the loss plot, no kNN section
    _write_log(str(tmp_path / 'wd'), 'tokenizer', [dict(loss=1.0, step=1), dict(loss=0.5, step=2)])
    summary = dict(stages=dict(tokenizer={}))
    text = '\n'.join(plots.curves_section(str(tmp_path / 'wd'), summary))
    assert 'training_losses.png' in text and 'knn' not in summary and 'kNN' not in text


def test_demo_addp_config_runs_the_knn_monitor(tmp_path):
    from mmengine.config import Config
    for iters, interval in ((STAGES['addp'].iters, 100), (STAGES['addp'].fast_iters, None)):
        cfg = Config.fromfile(stage_config(STAGES['addp'], iters, str(tmp_path)),
                              import_custom_modules=False)
        hooks = [h for h in cfg.custom_hooks if h['type'] == 'ADDPKNNMonitorHook']
        assert len(hooks) == 1
        h = hooks[0]
        assert h['interval'] == (interval or iters) and h['eval_at_start']
        assert (h['k'], h['temperature']) == (20, 0.07)
        for split, loader in (('train', h['train_dataloader']), ('val', h['val_dataloader'])):
            ds = loader['dataset']
            assert ds['split'] == split and ds['data_root'] == cfg.data_root
            # labelled photo crops without random augmentation, as the linear probe's val split
            assert [t['type'] for t in ds['pipeline']] == ['LoadImageFromFile', 'PackInputs']
            assert (ds['crop_size'], ds['num_train'], ds['num_val']) == (32, 64, 16)
