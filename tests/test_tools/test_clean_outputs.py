"""Clean outputs: staging folders start empty and vanish when a run fails; files get the
mode the umask gives."""
import os
import os.path as osp
import runpy
import stat
import sys

import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT

TEST = osp.join(ROOT, 'tools', 'test.py')
CLS_CFG = osp.join(ROOT, 'configs', 'tests', 'vit-tiny-p8_1xb16-20i_embedded-32px.py')
FEW = ["test_dataloader.dataset.indices=3"]  # the first 3 validation crops


# ------------------------------------------------------------------ file modes
@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize('mask,mode', [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_get_the_mode_of_the_umask(umask, tmp_path, mask, mode):
    from addp_mm.utils.outputs import atomic_torch_save, atomic_write
    umask(mask)
    plain = tmp_path / 'plain.txt'
    plain.write_text('x')  # what open() gives, for reference
    with atomic_write(str(tmp_path / 'a.bin')) as f:
        f.write(b'data')
    atomic_torch_save({'w': torch.ones(2)}, str(tmp_path / 'b.pth'))
    for name in ('a.bin', 'b.pth'):
        got = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert got == mode == stat.S_IMODE(os.stat(plain).st_mode), (name, oct(got))


def test_umask_is_read_without_changing_it(umask):
    from addp_mm.utils.outputs import current_umask, new_file_mode
    umask(0o027)
    assert current_umask() == 0o027 and new_file_mode() == 0o640
    assert os.umask(0o027) == 0o027  # still set


# ------------------------------------------------------------ staging folders
def test_staged_dirs_start_empty_and_are_removed_on_failure(tmp_path):
    from addp_mm.utils.outputs import partial_dir, publish_dir, staged_dirs
    out = str(tmp_path / 'vis')
    stale = partial_dir(out)
    os.makedirs(osp.join(stale, 'sub'))
    open(osp.join(stale, 'sub', 'old.png'), 'w').close()  # left by a killed run
    with pytest.raises(RuntimeError):
        with staged_dirs(out, None) as (staging, ):
            assert staging == stale and not osp.exists(staging)  # the old one is gone
            os.makedirs(staging)
            open(osp.join(staging, 'new.png'), 'w').close()
            raise RuntimeError('the run fails')
    assert os.listdir(tmp_path) == []
    with staged_dirs(out) as (staging, ):
        os.makedirs(staging)
        open(osp.join(staging, 'new.png'), 'w').close()
        publish_dir(staging, out)
    assert os.listdir(tmp_path) == ['vis'] and os.listdir(out) == ['new.png']


def _run_test_tool(argv, monkeypatch, capsys):
    """tools/test.py as ``__main__`` in this process: (exit code, stdout)."""
    monkeypatch.setattr(sys, 'argv', [TEST] + argv)
    monkeypatch.syspath_prepend(osp.dirname(TEST))
    code = 0
    try:
        runpy.run_path(TEST, run_name='__main__')
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # noqa: BLE001  (a crash inside the run)
        code = repr(exc)
    return code, capsys.readouterr().out


@pytest.fixture(scope='module')
def cls_ckpt(tmp_path_factory):
    import addp_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(Config.fromfile(CLS_CFG).model)
    path = str(tmp_path_factory.mktemp('clean_out') / 'cls.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def _seed_stale(folder: str) -> None:
    os.makedirs(folder)
    for name in ('stale_0.png', 'stale_1.png'):
        open(osp.join(folder, name), 'wb').close()


def test_failed_test_run_leaves_no_staging_and_adds_nothing_later(cls_ckpt, embedded_cwd, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.chdir(embedded_cwd)
    show = str(tmp_path / 'vis')
    _seed_stale(show + '.partial')  # an earlier run killed while drawing
    # top-100 accuracy of 14 classes fails when the metric is computed: after every
    # visualisation of the run has been drawn into the staging folder
    code, out = _run_test_tool(
        [CLS_CFG, cls_ckpt, '--work-dir', str(tmp_path / 'w'), '--show-dir', show,
         '--cfg-options', 'test_evaluator.topk=[1,100]'] + FEW, monkeypatch, capsys)
    assert code not in (0, None) and 'metrics:' not in out
    assert 'Top-100 accuracy is unavailable' in str(code), code  # failed where meant
    assert not osp.exists(show + '.partial') and not osp.exists(show)
    # the next run publishes its own pictures only, even past a stale staging folder
    _seed_stale(show + '.partial')
    code, out = _run_test_tool([CLS_CFG, cls_ckpt, '--work-dir', str(tmp_path / 'w'),
                                '--show-dir', show, '--cfg-options'] + FEW, monkeypatch, capsys)
    assert code in (0, None) and 'metrics: ' in out
    pngs = sorted(p for p in os.listdir(show) if p.endswith('.png'))
    assert len(pngs) == 3 and not [p for p in pngs if p.startswith('stale')]
    assert not osp.exists(show + '.partial')
    assert stat.S_IMODE(os.stat(osp.join(show, pngs[0])).st_mode) & 0o044  # readable by others


def test_failed_test_run_raising_keyboard_interrupt_cleans_up(cls_ckpt, embedded_cwd, tmp_path,
                                                              monkeypatch, capsys):
    """Ctrl-C while testing: the staging folder goes too."""
    from mmengine.runner import Runner
    monkeypatch.chdir(embedded_cwd)
    show = str(tmp_path / 'vis')
    real_test = Runner.test

    def test_then_interrupt(self):
        real_test(self)
        assert os.listdir(show + '.partial')  # pictures were drawn
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, 'test', test_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run_test_tool([CLS_CFG, cls_ckpt, '--work-dir', str(tmp_path / 'w'), '--show-dir', show,
                        '--cfg-options'] + FEW, monkeypatch, capsys)
    assert not osp.exists(show + '.partial') and not osp.exists(show)
