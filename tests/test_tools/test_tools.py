"""tools/train.py and tools/test.py on a tiny mmpretrain classifier config."""
import json
import os
import os.path as osp
import pickle
import re
import runpy
import sys

import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT
from helpers.checkout import run_tool

CFG = osp.join(ROOT, 'configs', 'tests', 'vit-tiny-p8_1xb16-20i_embedded-32px.py')
TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')


def _load_runner_ckpt(path):
    # a real Runner checkpoint (optimizer, schedulers, message hub) through the safe loader
    from addp_mm.utils.checkpoint import safe_torch_load
    return safe_torch_load(path)


@pytest.fixture(scope='module')
def trained(embedded_cwd, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('cls_work'))
    run_tool([TRAIN, CFG, '--work-dir', work, '--cfg-options', 'train_cfg.max_iters=2',
              'train_cfg.val_interval=100'], cwd=embedded_cwd)
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
    first = _load_runner_ckpt(osp.join(work, 'iter_2.pth'))
    proc = run_tool([TRAIN, CFG, '--work-dir', work, '--resume', '--cfg-options',
                     'train_cfg.max_iters=4', 'train_cfg.val_interval=100'], cwd=embedded_cwd)
    return work, first, proc


@pytest.mark.e2e
def test_train_then_auto_resume(trained):
    work, first, proc = trained
    log = proc.stdout + proc.stderr
    assert re.search(r'resumed epoch: \d+, iter: 2', log), log[-3000:]
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [1/4]' not in log
    last = _load_runner_ckpt(osp.join(work, 'iter_4.pth'))
    assert first['meta']['iter'] == 2 and last['meta']['iter'] == 4
    # AdamW's per-parameter step counter continued from the restored state
    steps = {float(s['step']) for s in last['optimizer']['state'].values()}
    assert steps == {4.0}
    first_steps = {float(s['step']) for s in first['optimizer']['state'].values()}
    assert first_steps == {2.0}
    # weights moved on from the resumed ones
    k = 'head.fc.weight'
    assert not torch.equal(first['state_dict'][k], last['state_dict'][k])


@pytest.mark.e2e
def test_test_tool_prints_and_dumps_accuracy(trained, embedded_cwd, tmp_path):
    work, _, _ = trained
    out = str(tmp_path / 'preds.pkl')
    show = tmp_path / 'vis'
    proc = run_tool([TEST, CFG, osp.join(work, 'iter_4.pth'), '--work-dir', str(tmp_path),
                     '--out', out, '--show-dir', str(show)], cwd=embedded_cwd)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('metrics: ')][-1]
    metrics = json.loads(line[len('metrics: '):])
    top1 = metrics['accuracy/top1']
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 14 * 8  # 14 photos x 8 validation crops
    correct = sum(int(p['pred_label'][0] == p['gt_label'][0]) for p in preds)
    assert top1 == pytest.approx(100.0 * correct / len(preds), abs=1e-3)
    # --show-dir: one visualisation per validation image
    assert len([f for f in os.listdir(show) if f.endswith('.png')]) == len(preds)


@pytest.mark.e2e
def test_two_process_cpu_training(embedded_cwd, tmp_path):
    work = str(tmp_path / 'dist')
    proc = run_tool(['-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29531',
                     TRAIN, CFG, '--launcher', 'pytorch', '--work-dir', work, '--amp',
                     '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2'],
                    cwd=embedded_cwd)
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log
    # --amp without CUDA trains (bf16 where the CPU has it, else fp32) instead of failing
    assert "type='ADDPAmpOptimWrapper'" in log and 'ADDPAmpOptimWrapper: cpu autocast' in log
    assert osp.isfile(osp.join(work, 'iter_2.pth'))
    ckpt = _load_runner_ckpt(osp.join(work, 'iter_2.pth'))
    assert ckpt['meta']['iter'] == 2
    # validation ran over the whole val split gathered from both ranks
    assert re.search(r'accuracy/top1: [0-9.]+', log)


def _run_in_process(script, argv, monkeypatch, capsys):
    """Run a tool's ``main`` in this process; return (exit message, stderr)."""
    monkeypatch.setattr(sys, 'argv', [script] + argv)
    monkeypatch.syspath_prepend(osp.dirname(script))
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(script, run_name='__main__')
    return str(exc.value.code), capsys.readouterr().err


def test_bad_cfg_option_key_is_named(embedded_cwd, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(embedded_cwd)
    msg, _ = _run_in_process(TRAIN, [CFG, '--work-dir', str(tmp_path), '--cfg-options',
                                     'train_cfg.max_iter=3'], monkeypatch, capsys)
    assert "'max_iter' does not exist" in msg and 'train_cfg.max_iters' in msg
    msg, _ = _run_in_process(TRAIN, [CFG, '--work-dir', str(tmp_path), '--cfg-options',
                                     'train_cfgg.max_iters=3'], monkeypatch, capsys)
    assert "'train_cfgg' does not exist" in msg
    assert not os.listdir(tmp_path)  # failed before building anything


def test_missing_config_is_named(embedded_cwd, monkeypatch, capsys):
    monkeypatch.chdir(embedded_cwd)
    missing = osp.join(ROOT, 'configs', 'tests', 'vit-tiny-p8_1xb16-20i_embeded-32px.py')
    for tool, argv in ((TRAIN, [missing]), (TEST, [missing, 'x.pth'])):
        msg, _ = _run_in_process(tool, argv, monkeypatch, capsys)
        assert 'config file not found' in msg
        assert 'vit-tiny-p8_1xb16-20i_embedded-32px.py' in msg  # the suggestion


def test_missing_checkpoint_for_test_tool(embedded_cwd, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(embedded_cwd)
    msg, _ = _run_in_process(TEST, [CFG, str(tmp_path / 'nope.pth')], monkeypatch, capsys)
    assert 'checkpoint not found' in msg


def test_cpu_amp_wrapper_autocasts_to_bf16(monkeypatch):
    monkeypatch.setenv('ADDP_BF16', '1')  # also on CPUs without native bf16
    import addp_mm  # noqa: F401
    from mmengine.registry import OPTIM_WRAPPERS
    model = torch.nn.Linear(4, 2)
    wrapper = OPTIM_WRAPPERS.build(dict(type='ADDPCPUAmpOptimWrapper', optimizer=torch.optim.SGD(
        model.parameters(), lr=0.1)))
    with wrapper.optim_context(model):
        out = model(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    before = model.weight.detach().clone()
    wrapper.update_params(out.float().sum())
    assert not torch.equal(before, model.weight)
