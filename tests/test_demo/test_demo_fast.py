"""The fast variant of ``make demo`` (``tools/demo.py --fast``): the whole
chain with reduced iteration counts, as CI runs it."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest

from helpers.checkout import REPO_ROOT as REPO


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp('demo_fast') / 'demo')
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--fast',
                           '--work-dir', wd], cwd=REPO, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(osp.join(wd, 'summary.json')) as f:
        return wd, json.load(f), proc.stdout + proc.stderr


@pytest.mark.e2e
def test_report_written_with_every_section(demo):
    wd, summary, _ = demo
    report = open(osp.join(wd, 'REPORT.md')).read()
    for needle in ('## Stages', '## Training losses', 'tokenizer_reconstructions.png',
                   'samples_grid.png', 'denoising_strips.png', 'Margin:', 'coco/bbox_mAP', 'mIoU'):
        assert needle in report, needle
    for img in ('tokenizer_reconstructions.png', 'samples_grid.png', 'denoising_strips.png',
                'training_losses.png', 'knn_top1.png'):
        assert osp.getsize(osp.join(wd, img)) > 500, img
        assert f'({img})' in report, img
    # the kNN monitor ran before the first ADDP update (the reference) and at the end
    knn = summary['knn']
    assert [s for s, _ in knn['curve']] == [0, summary['stages']['addp']['iters']]
    assert knn['random_init'] == knn['curve'][0][1] and 100 / 14 < knn['last'] <= 100
    stages = summary['stages']
    for name in ('tokenizer', 'predictor', 'addp', 'samples', 'transfer_addp', 'transfer_random',
                 'detection_addp', 'detection_random', 'segmentation_addp',
                 'segmentation_random'):
        assert stages[name]['wall_s'] > 0, name
    # every training stage logged losses that went down
    for name, key in (('tokenizer', 'loss_rec'), ('predictor', 'loss_mtm'), ('addp', 'loss')):
        v = stages[name]['losses'][key]
        assert v['last'] < v['first'], (name, v)
    assert stages['tokenizer']['eval']['psnr'] > 12
    for who in ('addp', 'random'):
        assert 'coco/bbox_mAP' in stages[f'detection_{who}']['metrics']
        assert 'mIoU' in stages[f'segmentation_{who}']['metrics']


@pytest.mark.e2e
def test_transfer_margin_against_random_init_is_reported(demo):
    """Both probes train to far above chance and REPORT.md states the margin.

    The margin is measured and reported, not asserted to be positive: at
    demo scale the ADDP encoder does not beat random init on this probe (see
    REPORT.md), and the fast chain pretrains for only 60 iterations.
    """
    wd, summary, _ = demo
    t = summary['transfer']
    chance = 100.0 / 14
    assert t['seeds'] == [0]
    assert t['addp_top1'] > 3 * chance and t['random_top1'] > 3 * chance, t
    assert t['margin'] == pytest.approx(t['addp_top1'] - t['random_top1'])
    assert t['addp_top1'] == summary['stages']['transfer_addp']['metrics']['accuracy/top1']
    report = open(osp.join(wd, 'REPORT.md')).read()
    assert f"Margin: **{t['margin']:+.2f}** points" in report, t
    assert f"| 0 | {t['addp_runs'][0]['top1']:.2f} | {t['random_runs'][0]['top1']:.2f} |" in report


DENSE = (('detection', ('coco/bbox_mAP', 'coco/segm_mAP'), '.3f'), ('segmentation', ('mIoU', ), '.2f'))


@pytest.mark.e2e
def test_dense_margins_against_random_init_are_reported(demo):
    """Per task and metric: the per-seed values of both runs, the paired margin
    and its spread are in summary.json and REPORT.md, consistent with the
    runs' own validation results (not asserted positive: see REPORT.md)."""
    wd, summary, _ = demo
    report = open(osp.join(wd, 'REPORT.md')).read()
    assert '## 6. Transfer to dense tasks: ADDP encoder vs random init' in report
    stages = summary['stages']
    for task, metrics, f in DENSE:
        d = summary['dense'][task]
        assert d['seeds'] == [0]
        for k in metrics:
            a = stages[f'{task}_addp']['metrics'][k]
            r = stages[f'{task}_random']['metrics'][k]
            assert d['addp_runs'][0][k] == a and d['random_runs'][0][k] == r
            m = d['metrics'][k]
            assert m['paired_margins'] == [pytest.approx(a - r)]
            assert m['margin'] == m['min_margin'] == m['max_margin'] == pytest.approx(a - r)
            assert m['margin_std'] is None  # one seed: no spread
            assert f"| 0 | {a:{f}} | {r:{f}} | {a - r:+{f}} |" in report, (task, k)
            assert f"{k} margin: **{m['margin']:+{f}}** (std -," in report, (task, k)


@pytest.mark.e2e
def test_dense_runs_start_from_the_right_encoder(demo):
    """The ADDP run's backbone starts from the stage-3 encoder, the random-init
    run's does not: after the few fast iterations the former is still close
    to the ADDP weights and the latter far from them."""
    import torch

    from addp_mm.models.utils import load_addp_encoder_state_dict
    from addp_mm.utils.checkpoint import load_external_state_dict
    _, summary, _ = demo
    stages = summary['stages']
    enc = load_addp_encoder_state_dict(stages['addp']['checkpoint'])
    # encoder key -> the same tensor in each dense backbone (ADDPViTDetBackbone keeps the encoder's
    # names; ADDPVisionTransformer, used by UperNet, has mmpretrain's)
    keys = dict(detection={'blocks.0.attn.qkv.weight': 'blocks.0.attn.qkv.weight',
                           'blocks.3.mlp.fc2.weight': 'blocks.3.mlp.fc2.weight'},
                segmentation={'blocks.0.attn.qkv.weight': 'layers.0.attn.qkv.weight',
                              'blocks.3.mlp.fc2.weight': 'layers.3.ffn.layers.1.weight'})
    for task, _, _ in DENSE:
        dist = {}
        for who in ('addp', 'random'):
            sd = load_external_state_dict(stages[f'{task}_{who}']['checkpoint'])
            dist[who] = torch.stack([(sd[f'backbone.{theirs}'] - enc[ours]).abs().mean()
                                     for ours, theirs in keys[task].items()]).max().item()
        assert dist['addp'] < 0.25 * dist['random'], (task, dist)


@pytest.mark.e2e
def test_samples_decoded_by_the_trained_tokenizer(demo):
    wd, summary, _ = demo
    g = summary['generation']
    assert g['decoded_by_trained_tokenizer']
    assert g['addp_tokenizer_sha1'] == g['trained_tokenizer_sha1']
    # and that tokenizer is the trained one, not a fresh random init
    import torch

    import addp_mm  # noqa: F401
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    from addp_mm.utils.checkpoint import load_external_state_dict, strip_prefix
    cfg = Config.fromfile(summary['stages']['addp']['config'])
    torch.manual_seed(0)
    fresh = MODELS.build(dict(cfg.model.tokenizer, checkpoint=None))
    trained = strip_prefix(load_external_state_dict(summary['stages']['tokenizer']['checkpoint']),
                           'tokenizer.')
    assert not torch.equal(fresh.codebook, trained['quantize.embedding.weight'])
    assert osp.isfile(g['grid']) and len(g['strips']) >= 1


@pytest.mark.e2e
def test_from_stage_reruns_only_the_later_dense_stages(demo, tmp_path):
    """``--from-stage segmentation`` on a copy of the work dir: the earlier
    stages and the detection comparison are kept as they were, segmentation
    runs again on the same ADDP checkpoint and the report says so. The re-run
    is an ablation (``--dense-options``, frozen backbone): the option reaches
    both runs, so the ADDP run ends with exactly the stage-3 encoder weights."""
    import torch

    from addp_mm.models.utils import load_addp_encoder_state_dict
    from addp_mm.utils.checkpoint import load_external_state_dict
    wd, summary, _ = demo
    copy = str(tmp_path / 'demo')
    shutil.copytree(wd, copy, ignore=shutil.ignore_patterns('segmentation_*'))
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--fast',
                           '--work-dir', copy, '--from-stage', 'segmentation',
                           '--dense-options', 'model.backbone.frozen_stages=4'], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(osp.join(copy, 'summary.json')) as f:
        again = json.load(f)
    for name, st in summary['stages'].items():
        if not name.startswith('segmentation'):
            assert again['stages'][name] == st, name
    assert again['dense']['detection'] == summary['dense']['detection']
    assert again['transfer'] == summary['transfer']
    seg = again['stages']['segmentation_random']
    assert seg['checkpoint'].startswith(copy + os.sep) and 'mIoU' in seg['metrics']
    assert again['dense']['segmentation']['random_runs'][0]['mIoU'] == seg['metrics']['mIoU']
    r = again['resumed']
    assert r['from_stage'] == 'segmentation'
    assert again['total_wall_s'] == pytest.approx(r['earlier_stages_wall_s'] + r['this_run_wall_s'])
    dropped = sum(st['wall_s'] for k, st in summary['stages'].items() if k.startswith('segmentation'))
    assert r['earlier_stages_wall_s'] == pytest.approx(summary['total_wall_s'] - dropped)
    report = open(osp.join(copy, 'REPORT.md')).read()
    assert 'were re-run with `--from-stage segmentation`' in report
    assert 'model.backbone.frozen_stages=4' in report
    for who in ('addp', 'random'):
        assert 'model.backbone.frozen_stages=4' in again['stages'][f'segmentation_{who}']['options']
    enc = load_addp_encoder_state_dict(summary['stages']['addp']['checkpoint'])
    sd = load_external_state_dict(again['stages']['segmentation_addp']['checkpoint'])
    for ours, theirs in (('blocks.0.attn.qkv.weight', 'layers.0.attn.qkv.weight'),
                         ('blocks.3.mlp.fc2.weight', 'layers.3.ffn.layers.1.weight')):
        assert torch.equal(sd[f'backbone.{theirs}'], enc[ours]), ours


@pytest.mark.e2e
def test_concurrent_runs_do_not_change_the_numbers(demo, tmp_path):
    """The dense pairs run ``--jobs`` at a time; one at a time gives the same
    metrics and losses (each run is its own single-threaded process)."""
    wd, summary, _ = demo
    copy = str(tmp_path / 'demo')
    shutil.copytree(wd, copy, ignore=shutil.ignore_patterns('segmentation_*'))
    jobs = 1 if summary['jobs'] > 1 else 2
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--fast',
                           '--work-dir', copy, '--from-stage', 'segmentation', '--jobs', str(jobs)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(osp.join(copy, 'summary.json')) as f:
        again = json.load(f)
    assert again['jobs'] == jobs
    assert again['dense']['segmentation'] == summary['dense']['segmentation']


@pytest.mark.e2e
def test_from_stage_needs_an_earlier_run(tmp_path):
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--work-dir',
                           str(tmp_path), '--from-stage', 'detection'], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert 'needs the summary.json of an earlier full run' in proc.stderr, proc.stderr


@pytest.mark.parametrize('name', ['tokenizer', 'predictor', 'addp', 'transfer_addp',
                                  'transfer_random', 'detection', 'segmentation'])
def test_full_mode_stage_runs_its_stated_budget(name, tmp_path):
    """The config a full-mode stage runs has the iteration count the demo
    records for it, with the schedule inside that budget."""
    from helpers.generation import load_script
    from mmengine.config import Config
    load_script('tools/demo.py')  # puts tools/ (the addp_demo package) on sys.path
    from addp_demo.stages import STAGES, stage_config
    stage = STAGES[name]
    cfg = Config.fromfile(stage_config(stage, stage.iters, str(tmp_path)),
                          import_custom_modules=False)
    assert cfg.train_cfg.max_iters == stage.iters
    scheds = cfg.param_scheduler if isinstance(cfg.param_scheduler, list) else [cfg.param_scheduler]
    assert max(s['end'] for s in scheds) <= stage.iters
    if 'val_interval' in cfg.train_cfg:
        assert cfg.train_cfg.val_interval <= stage.iters
