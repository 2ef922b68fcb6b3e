"""Options that conflict or would do nothing are refused in one line; tools/sample.py names
what a wrong file is."""
import glob
import os.path as osp
import runpy
import sys

import numpy as np
import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT
from helpers.generation import TINY_GEN_CFG, load_script, numbered_pngs, save_tiny_addp
from PIL import Image

TOOLS = osp.join(ROOT, 'tools')
CLS_CFG = osp.join(ROOT, 'configs', 'tests', 'vit-tiny-p8_1xb16-20i_embedded-32px.py')


def _one_line(exc_info) -> str:
    msg = str(exc_info.value.code)
    assert msg.startswith('error: ') and '\n' not in msg.strip() and 'Traceback' not in msg, msg
    return msg


@pytest.fixture(scope='module')
def sample_tool():
    return load_script('tools/sample.py')


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    return save_tiny_addp(str(tmp_path_factory.mktemp('opt_gen') / 'addp_tiny.pth'))


@pytest.fixture
def photo(tmp_path):
    from skimage import data
    path = str(tmp_path / 'cat.png')
    Image.fromarray(data.chelsea()).save(path)
    return path


# ---------------------------------------------------------------- tools/sample.py
def test_sample_region_without_inpaint_is_refused(sample_tool, tmp_path):
    out = tmp_path / 'o'
    with pytest.raises(SystemExit) as exc:
        sample_tool.main([TINY_GEN_CFG, 'any.pth', '--region', '0', '0', '10', '10',
                          '--out-dir', str(out)])
    assert '--region only applies to inpainting' in _one_line(exc) and '--inpaint' in str(exc.value)
    assert not out.exists()


def test_sample_num_with_inpaint_is_refused(sample_tool, photo, tmp_path):
    with pytest.raises(SystemExit) as exc:
        sample_tool.main([TINY_GEN_CFG, 'any.pth', '--inpaint', photo, '--region', '0', '0', '8',
                          '8', '--num', '5', '--out-dir', str(tmp_path / 'o')])
    msg = _one_line(exc)
    assert '--num' in msg and 'repeat an image path' in msg


def test_sample_repeated_image_gives_several_inpaintings(sample_tool, tiny_ckpt, photo, tmp_path):
    """What the --num refusal recommends: one output per path, each with its own seed."""
    out = tmp_path / 'inp'
    sample_tool.main([TINY_GEN_CFG, tiny_ckpt, '--inpaint', photo, photo, '--region', '16', '16',
                      '40', '40', '--steps', '2', '--device', 'cpu', '--out-dir', str(out)])
    assert numbered_pngs(out) == ['000000.png', '000001.png']
    a, b = (np.asarray(Image.open(out / n)).astype(int) for n in numbered_pngs(out))
    assert np.abs(a - b)[16:40, 16:40].mean() > 1  # the regenerated boxes differ (seeds 0, 1)


@pytest.mark.parametrize('content,expect', [
    (b'just some notes\n', 'is not an image file'),
    (None, 'cannot be decoded')])  # a PNG cut in the middle of its pixel data
def test_sample_inpaint_non_image_is_one_line(sample_tool, tiny_ckpt, photo, tmp_path, content,
                                              expect):
    bad = tmp_path / 'bad.png'
    bad.write_bytes(content if content is not None else open(photo, 'rb').read()[:2000])
    out = tmp_path / 'o'
    with pytest.raises(SystemExit) as exc:
        sample_tool.main([TINY_GEN_CFG, tiny_ckpt, '--inpaint', photo, str(bad), '--region', '0',
                          '0', '8', '8', '--device', 'cpu', '--out-dir', str(out)])
    msg = _one_line(exc)
    assert '--inpaint' in msg and expect in msg and str(bad) in msg
    assert not out.exists()  # refused before any work


def test_generator_non_image_is_a_value_error(tmp_path):
    from addp_mm.apis.image_io import fit_image
    bad = tmp_path / 'notes.jpg'
    bad.write_text('not an image')
    with pytest.raises(ValueError, match='is not an image file'):
        fit_image(str(bad), 64)


def _frozen_checkpoints(tmp_path):
    """A VQGANTrainer / MAGEPredictorTrainer Runner checkpoint and the bare state dicts."""
    from helpers.addp import make_tiny_frozen_checkpoints
    from mmengine.config import Config
    cfg = Config.fromfile(TINY_GEN_CFG)
    tok, pred = make_tiny_frozen_checkpoints(cfg.model.to_dict(), str(tmp_path))
    tok_sd = torch.load(tok, weights_only=True)['state_dict']
    pred_sd = torch.load(pred, weights_only=True)['model']
    trainer_tok = str(tmp_path / 'vqgan_iter_600.pth')
    torch.save({'meta': {'iter': 600}, 'state_dict': {
        **{f'tokenizer.{k}': v for k, v in tok_sd.items()},
        'discriminator.main.0.weight': torch.zeros(4, 3, 4, 4)}}, trainer_tok)
    trainer_pred = str(tmp_path / 'mage_iter_1200.pth')
    torch.save({'meta': {'iter': 1200}, 'state_dict': {
        **{f'tokenizer.{k}': v for k, v in tok_sd.items()},
        **{f'token_predictor.{k}': v for k, v in pred_sd.items()}}}, trainer_pred)
    return dict(tokenizer=[tok, trainer_tok], token_predictor=[pred, trainer_pred])


def test_sample_names_a_tokenizer_or_predictor_checkpoint(sample_tool, tmp_path):
    files = _frozen_checkpoints(tmp_path)
    for part, paths in files.items():
        for path in paths:
            with pytest.raises(SystemExit) as exc:
                sample_tool.main([TINY_GEN_CFG, path, '--device', 'cpu',
                                  '--out-dir', str(tmp_path / 'o')])
            msg = _one_line(exc)
            what = 'tokenizer (VQGAN)' if part == 'tokenizer' else 'token-predictor (MAGE)'
            assert f'is a {what} checkpoint, not an ADDP model' in msg, msg
            assert f'model.{part}.checkpoint' in msg and 'classification' not in msg


def test_failed_sampling_leaves_no_files(sample_tool, tiny_ckpt, tmp_path, monkeypatch):
    from addp_mm.apis.generator import ADDPGenerator
    out = tmp_path / 's'
    calls = []
    real_forward = ADDPGenerator.forward

    def forward_then_fail(self, batch, *args, **kwargs):
        calls.append(batch['indices'])
        if len(calls) == 2:
            raise RuntimeError('out of memory (simulated)')
        return real_forward(self, batch, *args, **kwargs)

    monkeypatch.setattr(ADDPGenerator, 'forward', forward_then_fail)
    with pytest.raises(RuntimeError, match='simulated'):
        sample_tool.main([TINY_GEN_CFG, tiny_ckpt, '--num', '3', '--batch-size', '1', '--steps',
                          '2', '--device', 'cpu', '--out-dir', str(out)])
    assert calls == [[0], [1]]  # the first batch was written (into the staging folder)
    assert not osp.exists(str(out) + '.partial')
    assert not numbered_pngs(out) and not osp.exists(out / 'grid.png')


# ------------------------------------------------------------------ tools/fid.py
def test_fid_options_that_do_nothing_are_refused(tmp_path):
    fid = load_script('tools/fid.py')
    from addp_mm.evaluation.fid import save_statistics
    stats = str(tmp_path / 'gen.npz')
    save_statistics(stats, np.zeros(4), np.eye(4))
    cases = [([stats, stats, '--save-stats', str(tmp_path / 'x.npz')], '--save-stats writes'),
             ([str(tmp_path), stats, '--no-isc', '--isc-splits', '5'], 'with --no-isc'),
             ([stats, stats, '--isc-splits', '5'], 'GEN is a statistics file')]
    for argv, expect in cases:
        with pytest.raises(SystemExit) as exc:
            fid.main(argv + ['--inception-weights', str(tmp_path / 'none.pth')])
        assert expect in _one_line(exc)
    assert not osp.exists(tmp_path / 'x.npz')


# ------------------------------------------------------- tools/train.py, tools/test.py
def _run(script, argv, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [script] + argv)
    monkeypatch.syspath_prepend(TOOLS)
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(script, run_name='__main__')
    return exc


def test_train_refuses_resume_with_load_from(tmp_path, monkeypatch):
    ckpt = tmp_path / 'c.pth'
    torch.save({'state_dict': {}}, ckpt)
    exc = _run(osp.join(TOOLS, 'train.py'),
               [CLS_CFG, '--work-dir', str(tmp_path / 'w'), '--resume', str(ckpt),
                '--cfg-options', f'load_from={ckpt}'], monkeypatch)
    assert '--resume' in _one_line(exc) and 'load_from would be ignored' in str(exc.value)
    exc = _run(osp.join(TOOLS, 'train.py'),
               [CLS_CFG, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                f'work_dir={tmp_path / "v"}'], monkeypatch)
    assert 'work dir is given twice' in _one_line(exc)
    assert not (tmp_path / 'w').exists() and not (tmp_path / 'v').exists()


def test_test_tool_refuses_load_from_in_cfg_options(tmp_path, monkeypatch):
    ckpt = tmp_path / 'c.pth'
    torch.save({'state_dict': {}}, ckpt)
    exc = _run(osp.join(TOOLS, 'test.py'),
               [CLS_CFG, str(ckpt), '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                f'load_from={tmp_path / "other.pth"}'], monkeypatch)
    assert 'evaluates its CHECKPOINT argument' in _one_line(exc)
    assert not (tmp_path / 'w').exists()


# ------------------------------------------------------------- tools/benchmark.py
def test_benchmark_options_that_do_nothing_are_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(TOOLS)
    from addp_benchmark.cli import main
    out = tmp_path / 'bench.md'
    for argv, expect in ((['frozen', '--out', str(out)], '--out names the file --append'),
                         (['train', '--img-size', '128'], '--img-size applies to the frozen')):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert expect in _one_line(exc)
    assert not out.exists()


def test_generator_refuses_num_images_with_inputs(tiny_ckpt, photo):
    """The Python API says the same as tools/sample.py."""
    from addp_mm.apis import ADDPGenerator
    gen = ADDPGenerator(TINY_GEN_CFG, pretrained=tiny_ckpt, device='cpu')
    with pytest.raises(ValueError, match='num_images counts unconditional samples'):
        gen([photo], num_images=3, boxes=[(0, 0, 8, 8)], num_steps=1)
    out = gen([photo, photo], boxes=[(0, 0, 8, 8)], num_steps=1)
    assert out['num_images'] == 2


def test_test_tool_refuses_a_pkl_out_for_mmseg(tmp_path, monkeypatch):
    seg_cfg = sorted(glob.glob(osp.join(ROOT, 'configs', 'tests', '*upernet*.py')))[0]
    ckpt = tmp_path / 'c.pth'
    torch.save({'state_dict': {}}, ckpt)
    exc = _run(osp.join(TOOLS, 'test.py'),
               [seg_cfg, str(ckpt), '--work-dir', str(tmp_path / 'w'), '--out',
                str(tmp_path / 'preds.pkl')], monkeypatch)
    assert 'folder of prediction PNGs for mmseg' in _one_line(exc)
    assert not (tmp_path / 'w').exists() and not (tmp_path / 'preds.pkl').exists()
