"""ADDPGenerator: same images as tools/sample.py and as the sampler itself, inpainting by box
and by mask, per-call sampler options, written files and clear errors."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.generation import TINY_GEN_CFG, load_script, save_tiny_addp


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_addp(str(tmp_path_factory.mktemp('gen_api') / 'addp_tiny.pth'))


@pytest.fixture(scope='module')
def gen(tiny_ckpt):
    from addp_mm.apis import ADDPGenerator
    return ADDPGenerator(TINY_GEN_CFG, pretrained=tiny_ckpt, device='cpu')


@pytest.fixture(scope='module')
def photo(tmp_path_factory):
    from skimage import data
    path = str(tmp_path_factory.mktemp('photo') / 'cat.png')
    Image.fromarray(data.chelsea()).save(path)  # 451 x 300, not square
    return path


def _read(path):
    return np.asarray(Image.open(path))


def _load_sample_tool():
    return load_script('tools/sample.py', 'sample_tool')


def _sample_tool(args, out):
    """``python tools/sample.py CFG ARGS`` (its ``main``, in this process)."""
    _load_sample_tool().main([TINY_GEN_CFG] + args + ['--device', 'cpu', '--out-dir', out])


def test_generator_reproduces_sample_tool_bit_for_bit(gen, tiny_ckpt, tmp_path):
    out_dir = str(tmp_path / 'tool')
    _sample_tool([tiny_ckpt, '--num', '3', '--batch-size', '2', '--steps', '4', '--seed', '7',
                  '--save-steps'], out_dir)
    res = gen(num_images=3, batch_size=2, num_steps=4, seed=7, return_steps=True)
    assert res['seeds'] == [7, 8, 9]
    for i in range(3):
        assert np.array_equal(res['images'][i], _read(osp.join(out_dir, f'{i:06d}.png')))
        assert np.array_equal(res['steps'][i], _read(osp.join(out_dir, 'steps', f'{i:06d}.png')))
    assert np.array_equal(res['grid'], _read(osp.join(out_dir, 'grid.png')))
    # and both are what the sampler itself draws (the code path before the API existed)
    from addp_mm.utils.pixels import images_to_uint8
    from mmpretrain.registry import MODELS
    sampler = MODELS.build(dict(gen.config.model.sampler, num_steps=4))
    direct = sampler.sample(gen.model, seeds=[7, 8])
    ref = images_to_uint8(direct['images']).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(ref[0], res['images'][0]) and np.array_equal(ref[1], res['images'][1])
    assert len({im.tobytes() for im in res['images']}) == 3  # seeds differ, images differ


def test_generator_inpaint_box_matches_sample_tool(gen, tiny_ckpt, photo, tmp_path):
    out_dir = str(tmp_path / 'inp')
    _sample_tool([tiny_ckpt, '--inpaint', photo, '--region', '16', '8', '40', '48',
                  '--steps', '3', '--seed', '2'], out_dir)
    res = gen([photo], boxes=[(16, 8, 40, 48)], num_steps=3, seed=2)
    assert np.array_equal(res['images'][0], _read(osp.join(out_dir, '000000.png')))
    # the box covers token rows 2..4 and columns 1..5 of the 8x8 grid
    expect = np.zeros((8, 8), bool)
    expect[2:5, 1:6] = True
    assert np.array_equal(res['regions'][0].reshape(8, 8), expect)
    # tokens outside the region are the image's own
    known, _ = gen.model.tokenizer.encode(gen.pipeline(photo)[None])
    outside = ~expect.reshape(-1)
    assert np.array_equal(res['tokens'][0][outside], known[0].numpy()[outside])


def test_generator_inpaint_masks(gen, photo):
    """A mask of the original image is resized and cropped as the image is; a model-size mask
    equal to a box gives the box's images exactly."""
    S = gen.image_size
    box_res = gen([photo], boxes=[(16, 8, 40, 48)], num_steps=3, seed=2)
    m = np.zeros((S, S), np.uint8)
    m[16:40, 8:48] = 255
    mask_res = gen([photo], masks=[m], num_steps=3, seed=2)
    assert np.array_equal(box_res['images'][0], mask_res['images'][0])
    # original-size mask: the right half of the 451x300 photo -> the crop keeps its centre
    w, h = Image.open(photo).size
    full = np.zeros((h, w), bool)
    full[:, w // 2:] = True
    res = gen([photo], masks=[full], num_steps=3, seed=2)
    region = res['regions'][0].reshape(8, 8)
    assert region[:, 4:].all() and not region[:, :4].any()
    # a token-grid mask
    tok = np.zeros((8, 8), bool)
    tok[0, 0] = True
    res = gen([photo], masks=[tok], num_steps=2)
    assert res['regions'][0].reshape(8, 8).sum() == 1


def test_generator_options_and_outputs(gen, tmp_path):
    out = str(tmp_path / 'o')
    res = gen(num_images=2, num_steps=2, schedule='linear', choice_temperature=0.,
              temperature_strategy='static', token_temperature=0.5, return_steps=True,
              out_dir=out)
    assert sorted(os.listdir(out)) == ['000000.png', '000001.png', 'grid.png', 'steps']
    strip = _read(osp.join(out, 'steps', '000000.png'))
    assert strip.shape[1] == 2 + 2 * (64 + 2)  # two steps, x_t over mask
    assert res['images'][0].shape == (64, 64, 3) and res['images'][0].dtype == np.uint8
    # the configured sampler is untouched by per-call options
    assert gen.sampler.num_steps == 8 and gen.sampler.schedule == 'cosine'
    other = gen(num_images=2, num_steps=2, schedule='linear', seed=0)
    assert not np.array_equal(other['images'][0], res['images'][0])  # temperatures matter
    assert gen(num_images=1, keep_images=False)['images'] == []


def test_generator_clear_errors(gen, photo, tmp_path):
    with pytest.raises(ValueError, match='exactly one of masks'):
        gen([photo])
    with pytest.raises(ValueError, match='TOP < BOTTOM'):
        gen([photo], boxes=[(10, 10, 5, 20)])
    with pytest.raises(ValueError, match='fits neither'):
        gen([photo], masks=[np.ones((5, 7))])
    with pytest.raises(ValueError, match='unknown sampler options'):
        gen.get_sampler(steps=3)
    with pytest.raises(ValueError, match='num_steps'):
        gen(num_images=1, num_steps=0)
    with pytest.raises(ValueError, match='masks/boxes need the images'):
        gen(boxes=[(0, 0, 8, 8)])
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with pytest.raises(ValueError, match='--out-dir .* is a file'):
        gen(num_images=1, out_dir=str(blocker))
    from addp_mm.apis import ADDPGenerator
    with pytest.raises(ValueError, match='nothing is downloaded'):
        ADDPGenerator(TINY_GEN_CFG, pretrained=True, device='cpu')
    cls_ckpt = str(tmp_path / 'cls.pth')
    torch.save({'state_dict': {'backbone.layers.0.ln1.weight': torch.ones(4)}}, cls_ckpt)
    with pytest.raises(ValueError, match='no generation weights'):
        ADDPGenerator(TINY_GEN_CFG, pretrained=cls_ckpt, device='cpu')


def test_generator_from_model_index_name(monkeypatch):
    """A model-index name resolves to its config (the zoo configs are too big to sample here)."""
    from addp_mm.apis import generator as g
    seen = {}

    def fake_build(cfg, sampler=None):
        seen['cfg'] = cfg
        raise RuntimeError('stop')

    monkeypatch.setattr(g, 'build_generation_model', fake_build)
    with pytest.raises(RuntimeError, match='stop'):
        g.ADDPGenerator('addp_vit-base-p16_iterdec-cosine-20step_in1k-256px', device='cpu')
    assert osp.basename(seen['cfg'].filename) == \
        'addp_vit-base-p16_iterdec-cosine-20step_in1k-256px.py'
    assert seen['cfg'].model.sampler.num_steps == 20
    with pytest.raises(ValueError, match='neither a config file nor a model name'):
        g.ADDPGenerator('addp_vit-base-p16_iterdec-cosine-20step', device='cpu')


def test_sample_tool_checks_the_output_folder_first(tiny_ckpt, tmp_path, monkeypatch):
    """An unusable --out-dir stops tools/sample.py before the model is built."""
    tool = _load_sample_tool()
    built = []
    monkeypatch.setattr(tool, 'build_model', lambda *a, **k: built.append(1))
    blocker = tmp_path / 'taken'
    blocker.write_text('x')
    with pytest.raises(SystemExit, match='--out-dir .* is a file'):
        tool.main([TINY_GEN_CFG, tiny_ckpt, '--device', 'cpu', '--out-dir', str(blocker)])
    assert built == []
