"""tools/fid.py, the val-256 converter and tools/test.py on a generation config (end to end)."""
import os

import numpy as np
import pytest
import torch
from helpers.generation import TINY_GEN_CFG, build_tiny_addp, load_script, run_tool, save_tiny_addp
from PIL import Image


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    torch.set_num_threads(2)
    return save_tiny_addp(str(tmp_path_factory.mktemp('gen_ckpt') / 'addp_tiny.pth'))


def test_fid_tool_and_val256_converter(random_inception_file, tmp_path):
    conv = load_script('tools/dataset_converters/prepare_imagenet_val256.py')
    src = tmp_path / 'val' / 'n01'
    src.mkdir(parents=True)
    from skimage import data
    Image.fromarray(data.astronaut()[:300, :400]).save(src / 'a.JPEG')   # 300x400 (h x w)
    Image.fromarray(data.coffee()[:, :300]).save(src / 'b.JPEG')        # portrait 400x300
    assert conv.main([str(tmp_path / 'val'), str(tmp_path / 'val256'), '--size', '32']) == 2
    out = sorted(os.listdir(tmp_path / 'val256'))
    assert out == ['00000.png', '00001.png']
    # shorter side -> 32 then a centre crop: matches torchvision on the same image
    from torchvision import transforms
    for name, png in (('a.JPEG', '00000.png'), ('b.JPEG', '00001.png')):
        ref = transforms.CenterCrop(32)(transforms.Resize(32)(Image.open(src / name).convert('RGB')))
        assert np.array_equal(np.asarray(Image.open(tmp_path / 'val256' / png)), np.asarray(ref))
        assert Image.open(tmp_path / 'val256' / png).size == (32, 32)
    fid_tool = load_script('tools/fid.py')
    stats = str(tmp_path / 'ref.npz')
    res = fid_tool.main([str(tmp_path / 'val256'), '--save-stats', stats, '--isc-splits', '1',
                         '--device', 'cpu', '--inception-weights', random_inception_file])
    assert res['is_mean'] >= 1.0 - 1e-9 and res['num_images'] == 2  # IS >= 1, up to rounding
    # statistics vs statistics (no images): FID of a set with itself
    res = fid_tool.main([stats, stats, '--inception-weights', random_inception_file])
    assert abs(res['fid']) < 1e-3
    with pytest.raises(SystemExit, match='Inception weights file not found'):
        fid_tool.main([str(tmp_path / 'val256'), stats, '--inception-weights', str(tmp_path / 'no.pth')])


@pytest.mark.e2e
def test_tools_test_runs_sampling_and_metric(tiny_ckpt, random_inception_file, tmp_path):
    """tools/test.py on the tiny generation config: sample, save, FID/IS end to end."""
    from addp_mm.evaluation.fid import save_statistics
    ref = str(tmp_path / 'ref.npz')  # precomputed reference statistics
    save_statistics(ref, np.zeros(2048), np.eye(2048))
    saved = tmp_path / 'saved'
    proc = run_tool(['tools/test.py', TINY_GEN_CFG, tiny_ckpt, '--work-dir', str(tmp_path / 'w'),
                     '--cfg-options', f'test_evaluator.inception_weights={random_inception_file}',
                     f'test_evaluator.reference={ref}', f'test_evaluator.save_dir={saved}',
                     'test_dataloader.dataset.num_samples=3', 'test_dataloader.batch_size=2',
                     'model.sampler.num_steps=3'])
    assert 'gen/fid' in proc.stdout and 'gen/is_mean' in proc.stdout
    assert sorted(os.listdir(saved)) == [f'{i:06d}.png' for i in range(3)]
    # the test loop draws the same images as the API (sample i <- seed 0 + i)
    model, _ = build_tiny_addp()
    sd = torch.load(tiny_ckpt, map_location='cpu', weights_only=True)['state_dict']
    model.load_state_dict(sd)
    from addp_mm.utils.pixels import images_to_uint8
    from addp_mm.models.generation import AlternatingDenoisingSampler
    api = images_to_uint8(AlternatingDenoisingSampler(num_steps=3).sample(model, seeds=[2])['images'])[0]
    png = np.asarray(Image.open(saved / '000002.png')).astype(int)
    # identical up to float rounding of another thread count (one uint8 level)
    assert np.abs(png - api.permute(1, 2, 0).numpy().astype(int)).max() <= 1
