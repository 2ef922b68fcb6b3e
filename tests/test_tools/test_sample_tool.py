"""tools/sample.py: PNGs, grid, step strips, seeds, inpainting, metrics and clear errors."""
import os.path as osp

import numpy as np
import pytest
import torch
from helpers.generation import TINY_GEN_CFG, load_script, numbered_pngs, run_tool, save_tiny_addp
from PIL import Image


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    torch.set_num_threads(2)
    return save_tiny_addp(str(tmp_path_factory.mktemp('gen_ckpt') / 'addp_tiny.pth'))


@pytest.mark.e2e
def test_sample_script_writes_pngs_grid_and_strips(tiny_ckpt, tmp_path):
    out = str(tmp_path / 'a')
    proc = run_tool(['tools/sample.py', TINY_GEN_CFG, tiny_ckpt, '--num', '3', '--batch-size', '2',
                     '--steps', '4', '--seed', '5', '--device', 'cpu', '--out-dir', out, '--save-steps'],
                    )
    assert 'wrote 3 images' in proc.stdout
    assert numbered_pngs(out) == ['000000.png', '000001.png', '000002.png']
    for name in numbered_pngs(out):
        with Image.open(osp.join(out, name)) as im:
            assert im.size == (64, 64) and im.mode == 'RGB'
            assert np.asarray(im).std() > 0
    with Image.open(osp.join(out, 'grid.png')) as grid:
        assert grid.size[0] > 64 * 2 and grid.size[1] > 64
    with Image.open(osp.join(out, 'steps', '000001.png')) as strip:
        assert strip.size[0] > 4 * 64 and strip.size[1] > 2 * 64  # 4 steps, x_t over mask
    assert 'sampling' in proc.stderr  # tqdm progress bar


def test_sample_script_same_seed_same_images(tiny_ckpt, tmp_path):
    tool = load_script('tools/sample.py')
    common = [TINY_GEN_CFG, tiny_ckpt, '--steps', '3', '--device', 'cpu', '--seed', '11']
    tool.main(common + ['--num', '3', '--batch-size', '3', '--out-dir', str(tmp_path / 'x')])
    tool.main(common + ['--num', '3', '--batch-size', '3', '--out-dir', str(tmp_path / 'x2')])
    tool.main(common + ['--num', '3', '--batch-size', '2', '--out-dir', str(tmp_path / 'y')])
    tool.main(common[:-1] + ['12', '--num', '1', '--out-dir', str(tmp_path / 'z')])
    read = lambda d, n: np.asarray(Image.open(tmp_path / d / n)).astype(int)  # noqa: E731
    for n in numbered_pngs(tmp_path / 'x'):
        assert np.array_equal(read('x', n), read('x2', n))
        # per-sample generators: another batch size draws the same tokens; the pixels differ
        # at most by float rounding (one uint8 level)
        assert np.abs(read('x', n) - read('y', n)).max() <= 1
    assert np.abs(read('x', '000000.png') - read('z', '000000.png')).mean() > 5


def test_sample_script_inpaint(tiny_ckpt, tmp_path):
    tool = load_script('tools/sample.py')
    from skimage import data
    src = str(tmp_path / 'cat.png')
    Image.fromarray(data.chelsea()).save(src)
    tool.main([TINY_GEN_CFG, tiny_ckpt, '--inpaint', src, '--region', '16', '16', '40', '40',
               '--steps', '3', '--device', 'cpu', '--out-dir', str(tmp_path / 'inp')])
    assert numbered_pngs(tmp_path / 'inp') == ['000000.png']


def test_sample_script_clear_errors(tiny_ckpt, tmp_path, capsys):
    tool = load_script('tools/sample.py')
    # a classification backbone checkpoint has no generation weights
    cls_ckpt = str(tmp_path / 'cls.pth')
    torch.save({'state_dict': {'backbone.layers.0.ln1.weight': torch.ones(4),
                               'head.fc.weight': torch.zeros(10, 4)}}, cls_ckpt)
    with pytest.raises(SystemExit, match='no generation weights.*classification'):
        tool.main([TINY_GEN_CFG, cls_ckpt, '--device', 'cpu', '--out-dir', str(tmp_path / 'o')])
    # an unconverted official release is recognised
    off = str(tmp_path / 'official.pth')
    torch.save({'model': {'decoder_blocks.0.norm1.weight': torch.ones(4),
                          'vqgan.quantize.embedding.weight': torch.zeros(8, 4)}}, off)
    with pytest.raises(SystemExit, match='addp_to_mm.py'):
        tool.main([TINY_GEN_CFG, off, '--device', 'cpu', '--out-dir', str(tmp_path / 'o')])
    with pytest.raises(SystemExit) as exc:
        tool.main([TINY_GEN_CFG, tiny_ckpt, '--steps', '0'])
    assert exc.value.code == 2 and 'must be >= 1' in capsys.readouterr().err
    with pytest.raises(SystemExit, match='Inception weights file not found.*torch-fidelity'):
        tool.main([TINY_GEN_CFG, tiny_ckpt, '--inception-weights', str(tmp_path / 'missing.pth')])
    with pytest.raises(SystemExit, match='--inpaint needs --region'):
        tool.main([TINY_GEN_CFG, tiny_ckpt, '--inpaint', 'a.png'])


def test_sample_script_with_metrics(tiny_ckpt, random_inception_file, tmp_path, capsys):
    tool = load_script('tools/sample.py')
    from addp_mm.evaluation.fid import save_statistics
    ref = str(tmp_path / 'ref.npz')  # precomputed reference statistics (2048-d)
    save_statistics(ref, np.zeros(2048), np.eye(2048))
    tool.main([TINY_GEN_CFG, tiny_ckpt, '--num', '2', '--steps', '2', '--device', 'cpu',
               '--out-dir', str(tmp_path / 's'), '--inception-weights', random_inception_file,
               '--fid-ref', ref])
    out = capsys.readouterr().out
    assert 'fid=' in out and 'is_mean=' in out and 'num_images=2' in out
