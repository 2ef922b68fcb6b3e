"""Wrong input fails early in one line; outputs are checked first and written atomically."""
import os
import os.path as osp
import runpy
import sys
import time

import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT

TOOLS = osp.join(ROOT, 'tools')
TRAIN = osp.join(TOOLS, 'train.py')
TEST = osp.join(TOOLS, 'test.py')
CONVERTERS = osp.join(TOOLS, 'model_converters')
CLS_CFG = osp.join(ROOT, 'configs', 'tests', 'vit-tiny-p8_1xb16-20i_embedded-32px.py')
GEN_CFG = osp.join(ROOT, 'configs', 'tests', 'addp_vit-tiny-p8_iterdec-cosine-8step_embedded-64px.py')


def _run(script, argv, monkeypatch, capsys, expect_exit=True):
    """Run a tool as ``__main__`` in this process; return (exit text, stdout)."""
    monkeypatch.setattr(sys, 'argv', [script] + argv)
    monkeypatch.syspath_prepend(osp.dirname(script))
    if not expect_exit:
        runpy.run_path(script, run_name='__main__')
        return '', capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(script, run_name='__main__')
    out = capsys.readouterr()
    assert exc.value.code not in (0, None), out.out[-2000:] + out.err[-2000:]
    return str(exc.value.code), out.out


def _one_line(msg: str) -> str:
    assert msg.startswith('error: ') and '\n' not in msg.strip(), msg
    assert 'Traceback' not in msg
    return msg


@pytest.fixture(scope='module')
def cls_model():
    """The embedded classifier of CLS_CFG, built as tools/test.py builds it."""
    import addp_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(CLS_CFG)
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def ckpts(cls_model, tmp_path_factory):
    from addp_mm.testing import save_runner_checkpoint
    d = tmp_path_factory.mktemp('ckpts')
    sd = {k: v.clone() for k, v in cls_model.state_dict().items()}
    good = save_runner_checkpoint(sd, str(d / 'good.pth'), 'io_checks_hub', it=2)
    # a classifier of another size: keys renamed by a bigger head, shapes differ
    wrong = dict(sd)
    wrong['head.fc.weight'] = torch.zeros(5, sd['head.fc.weight'].shape[1])
    wrong['head.fc.bias'] = torch.zeros(5)
    torch.save({'state_dict': wrong, 'meta': {}}, str(d / 'wrong_shape.pth'))
    # another model entirely: only foreign keys
    torch.save({'state_dict': {'encoder.layer.0.weight': torch.zeros(3, 3)}}, str(d / 'other.pth'))
    # only the head: the backbone would stay random
    torch.save({'state_dict': {k: v for k, v in sd.items() if k.startswith('head.')}},
               str(d / 'head_only.pth'))
    corrupt = d / 'corrupt.pth'
    corrupt.write_bytes((d / 'good.pth').read_bytes()[:300])
    torch.save(sd, str(d / 'plain_state_dict.pth'))
    return {p.stem: str(p) for p in d.iterdir()}


# ----------------------------------------------------------- tools/test.py
@pytest.mark.parametrize('name,expect', [
    ('wrong_shape', 'shape mismatch'), ('other', 'missing from the file'),
    ('head_only', 'parameters would be loaded')])
def test_test_tool_refuses_a_checkpoint_that_does_not_fit(ckpts, name, expect, embedded_cwd,
                                                          tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(embedded_cwd)
    msg, out = _run(TEST, [CLS_CFG, ckpts[name], '--work-dir', str(tmp_path / 'w')], monkeypatch,
                    capsys)
    _one_line(msg)
    assert 'does not fit the model' in msg and expect in msg and ckpts[name] in msg
    assert 'metrics:' not in out


def test_test_tool_corrupt_checkpoint_is_one_line(ckpts, embedded_cwd, tmp_path, monkeypatch,
                                                  capsys):
    monkeypatch.chdir(embedded_cwd)
    msg, _ = _run(TEST, [CLS_CFG, ckpts['corrupt'], '--work-dir', str(tmp_path)], monkeypatch,
                  capsys)
    _one_line(msg)
    assert 'cannot read checkpoint' in msg and ckpts['corrupt'] in msg


def test_test_tool_checks_outputs_before_any_work(ckpts, embedded_cwd, tmp_path, monkeypatch,
                                                  capsys):
    monkeypatch.chdir(embedded_cwd)
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    bad = str(blocker / 'sub')  # its parent is a file: not writable, even for root
    cases = [(['--out', bad + '/preds.pkl'], '--out'), (['--show-dir', bad], '--show-dir'),
             (['--work-dir', bad], 'work dir')]
    for extra, what in cases:
        argv = [CLS_CFG, ckpts['good']] + (['--work-dir', str(tmp_path / 'w')]
                                           if '--work-dir' not in extra else []) + extra
        start = time.time()
        msg, out = _run(TEST, argv, monkeypatch, capsys)
        _one_line(msg)
        assert what in msg and bad in msg and 'metrics:' not in out
        assert time.time() - start < 30
    assert not (tmp_path / 'w').exists()  # failed before the Runner made its work dir


def test_test_tool_prints_metrics_then_saves_atomically(ckpts, embedded_cwd, tmp_path,
                                                        monkeypatch, capsys):
    import pickle
    monkeypatch.chdir(embedded_cwd)
    out_file, show = tmp_path / 'res' / 'preds.pkl', tmp_path / 'vis'
    _, out = _run(TEST, [CLS_CFG, ckpts['good'], '--work-dir', str(tmp_path / 'w'), '--out',
                         str(out_file), '--show-dir', str(show)], monkeypatch, capsys,
                  expect_exit=False)
    lines = out.splitlines()
    i_metrics = next(i for i, ln in enumerate(lines) if ln.startswith('metrics: '))
    i_saved = next(i for i, ln in enumerate(lines) if ln.startswith('results saved to'))
    assert i_metrics < i_saved
    with open(out_file, 'rb') as f:
        assert len(pickle.load(f)) == 14 * 8
    assert len([f for f in os.listdir(show) if f.endswith('.png')]) == 14 * 8
    leftovers = [n for n in os.listdir(tmp_path) + os.listdir(out_file.parent)
                 if '.partial' in n or n.endswith('.tmp')]
    assert not leftovers


# ------------------------------------------------ --resume and load_from
def test_resume_and_load_from_errors_are_one_line(ckpts, embedded_cwd, tmp_path, monkeypatch,
                                                  capsys):
    monkeypatch.chdir(embedded_cwd)
    work = str(tmp_path / 'w')
    msg, _ = _run(TRAIN, [CLS_CFG, '--work-dir', work, '--resume', ckpts['corrupt']], monkeypatch,
                  capsys)
    assert 'cannot read checkpoint' in _one_line(msg) and ckpts['corrupt'] in msg
    msg, _ = _run(TRAIN, [CLS_CFG, '--work-dir', work, '--resume', ckpts['plain_state_dict']],
                  monkeypatch, capsys)
    assert 'not a checkpoint written by tools/train.py' in _one_line(msg)
    assert 'load_from=' in msg and "KeyError" not in msg
    msg, _ = _run(TRAIN, [CLS_CFG, '--work-dir', work, '--cfg-options',
                          f'load_from={ckpts["corrupt"]}'], monkeypatch, capsys)
    assert 'cannot read checkpoint' in _one_line(msg)
    # auto-resume picks up a corrupt latest checkpoint: also one line
    os.makedirs(work, exist_ok=True)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(ckpts['corrupt'])
    msg, _ = _run(TRAIN, [CLS_CFG, '--work-dir', work, '--resume'], monkeypatch, capsys)
    assert 'cannot read checkpoint' in _one_line(msg)


def test_runner_resume_of_a_plain_state_dict_is_clear(ckpts, tmp_path):
    """mmengine itself (no tool) reads a plain state dict fine; resume says why it cannot."""
    import addp_mm  # noqa: F401
    from mmengine.runner.checkpoint import _load_checkpoint
    sd = _load_checkpoint(ckpts['plain_state_dict'], map_location='cpu')
    assert 'head.fc.weight' in sd
    good = _load_checkpoint(ckpts['good'], map_location='cpu')
    assert good['meta']['iter'] == 2 and 'message_hub' in good


# ---------------------------------------------------------- converters
def _convert(name, argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', [name] + argv)
    monkeypatch.syspath_prepend(CONVERTERS)
    code = 0
    try:
        runpy.run_path(osp.join(CONVERTERS, name), run_name='__main__')
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err + str(code)


@pytest.fixture(scope='module')
def fixture_files(tmp_path_factory):
    from helpers.addp import write_fixture_files
    return write_fixture_files(str(tmp_path_factory.mktemp('official')))


def test_converters_say_a_file_is_already_converted(fixture_files, tmp_path, monkeypatch, capsys):
    first = str(tmp_path / 'addp_mm.pth')
    code, text = _convert('addp_to_mm.py', [fixture_files['addp'], first], monkeypatch, capsys)
    assert code in (0, None), text
    for name in ('addp_to_mm.py', 'vqgan_to_mm.py', 'mage_to_mm.py'):
        dst = str(tmp_path / f'again_{name}.pth')
        code, text = _convert(name, [first, dst], monkeypatch, capsys)
        assert code not in (0, None)
        assert 'already converted' in text and 'addp_to_mm.py' in text, text
        assert not osp.exists(dst)


def test_addp_converter_with_failing_config_check_leaves_no_output(fixture_files, tmp_path,
                                                                   monkeypatch, capsys):
    dst = str(tmp_path / 'out.pth')
    # the ViT-B config does not fit the tiny fixture: the check fails, nothing is written
    base = osp.join(ROOT, 'configs', 'addp', 'addp_vit-base-p16_32xb128-amp-coslr-1600e_in1k-256px.py')
    code, text = _convert('addp_to_mm.py', [fixture_files['addp'], dst, '--config', base],
                          monkeypatch, capsys)
    assert code not in (0, None) and 'does not match' in text
    assert os.listdir(tmp_path) == []


def test_converter_destinations_are_checked_before_reading(fixture_files, tmp_path, monkeypatch,
                                                           capsys):
    blocker = tmp_path / 'f'
    blocker.write_text('x')
    dst = str(blocker / 'out.pth')
    for name, src in (('addp_to_mm.py', fixture_files['addp']),
                      ('vqgan_to_mm.py', fixture_files['vqgan']),
                      ('mage_to_mm.py', fixture_files['mage'])):
        code, text = _convert(name, [src, dst], monkeypatch, capsys)
        assert code not in (0, None) and 'destination' in text and 'is a file' in text, text


# ------------------------------------------------------- tools/sample.py
def test_sample_tool_checks_out_dir_before_sampling(tmp_path):
    sys.path.insert(0, TOOLS)
    try:
        import sample
    finally:
        sys.path.pop(0)
    blocker = tmp_path / 'f'
    blocker.write_text('x')
    ckpt = tmp_path / 'c.pth'
    torch.save({'state_dict': {'x': torch.zeros(1)}}, ckpt)
    with pytest.raises(SystemExit, match='--out-dir .* is a file') as err:
        sample.main([GEN_CFG, str(ckpt), '--out-dir', str(blocker / 'samples')])
    assert str(blocker / 'samples') in str(err.value.code)


# ------------------------------------------------------------ utilities
def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    from addp_mm.utils.outputs import atomic_torch_save, atomic_write
    path = tmp_path / 'x.bin'
    path.write_bytes(b'old')
    with pytest.raises(RuntimeError):
        with atomic_write(str(path)) as f:
            f.write(b'half')
            raise RuntimeError('interrupted')
    assert path.read_bytes() == b'old' and os.listdir(tmp_path) == ['x.bin']
    atomic_torch_save({'a': torch.ones(2)}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)['a'], torch.ones(2))
    assert os.listdir(tmp_path) == ['x.bin']


def test_test_tool_mmseg_out_folder_is_moved_into_place_after_metrics(tmp_path, monkeypatch,
                                                                      capsys):
    """mmseg writes --out PNGs while it evaluates: they go to a staging folder first."""
    from helpers.segmentation import ade_cfg_options, write_tiny_ade
    import addp_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from addp_mm.testing import save_runner_checkpoint
    cfg_path = osp.join(ROOT, 'configs', 'tests', 'upernet_addp-vit-tiny_test_ade20k-64x64.py')
    ade = write_tiny_ade(str(tmp_path / 'ade'), n_train=1, n_val=2)
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(cfg_path).model)
    ckpt = save_runner_checkpoint(model.state_dict(), str(tmp_path / 'seg.pth'), 'io_seg_hub')
    out = tmp_path / 'preds'
    _, stdout = _run(TEST, [cfg_path, ckpt, '--work-dir', str(tmp_path / 'w'), '--out', str(out),
                            '--cfg-options'] + ade_cfg_options(ade), monkeypatch, capsys,
                     expect_exit=False)
    lines = stdout.splitlines()
    i_metrics = next(i for i, ln in enumerate(lines) if ln.startswith('metrics: '))
    i_saved = next(i for i, ln in enumerate(lines) if ln.startswith('predictions saved to'))
    assert i_metrics < i_saved
    assert len([f for f in os.listdir(out) if f.endswith('.png')]) == 2
    assert not osp.exists(str(out) + '.partial')
