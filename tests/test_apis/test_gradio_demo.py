"""projects/gradio_demo: the page's functions (no browser), its default checkpoint, and the
served page called through gradio_client."""
import os.path as osp
import socket

import numpy as np
import pytest
import torch

from helpers.generation import TINY_GEN_CFG, load_script, save_tiny_addp


def _load_app():
    return load_script('projects/gradio_demo/app.py', 'addp_gradio_app')


@pytest.fixture(scope='module')
def mod():
    return _load_app()


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_addp(str(tmp_path_factory.mktemp('demo_ckpt') / 'iter_3.pth'))


@pytest.fixture(scope='module')
def app(mod, tiny_ckpt):
    return mod.DemoApp(TINY_GEN_CFG, tiny_ckpt, device='cpu')


@pytest.fixture(scope='module')
def photo():
    from skimage import data
    return data.chelsea()  # 300 x 451 RGB


def test_sample_tab(app, mod):
    grid, strip = app.sample(num_images=4, seed=3, steps=3, schedule='cosine', temperature=6.0)
    ref = app.generator(num_images=4, seed=3, num_steps=3, return_steps=True,
                        choice_temperature=6.0)
    assert np.array_equal(grid, mod.upscale(ref['grid']))
    assert np.array_equal(strip, mod.upscale(ref['steps'][0], 128))
    assert grid.shape[0] >= 256 and grid.dtype == np.uint8


def test_inpaint_tab_brush_and_box(app, mod, photo):
    h, w = photo.shape[:2]
    layer = np.zeros((h, w, 4), np.uint8)
    layer[:, w // 2:, 3] = 255  # brush over the right half
    value = dict(background=photo, layers=[layer], composite=photo)
    shown, result, strip = app.inpaint(value, seed=1, steps=3, schedule='linear', temperature=2.)
    mask = np.zeros((h, w), bool)
    mask[:, w // 2:] = True
    ref = app.generator([photo], masks=[mask], seed=1, num_steps=3, schedule='linear',
                        choice_temperature=2.)
    assert np.array_equal(result, mod.upscale(ref['images'][0]))
    assert ref['regions'][0].reshape(8, 8)[:, 4:].all()
    # the region is shaded magenta on the shown input, the rest is the photo's crop
    assert shown[0, -1, 1] < shown[0, -1, 0] and shown.shape == result.shape
    assert strip.shape[1] > 3 * 64
    # a box overrides the painting
    _, boxed, _ = app.inpaint(value, seed=1, steps=3, box=(0, 0, 16, 16))
    ref = app.generator([photo], boxes=[(0, 0, 16, 16)], seed=1, num_steps=3,
                        choice_temperature=3.)  # the page's default
    assert np.array_equal(boxed, mod.upscale(ref['images'][0]))
    with pytest.raises(ValueError, match='paint the region'):
        app.inpaint(dict(background=photo, layers=[np.zeros((h, w, 4), np.uint8)]), steps=2)
    with pytest.raises(ValueError, match='upload an image'):
        app.inpaint(None)


def test_default_checkpoint_is_make_demo_output(mod, tmp_path, tiny_ckpt):
    wd = tmp_path / 'demo'
    with pytest.raises(FileNotFoundError, match='make demo'):
        mod.demo_checkpoint(str(wd))
    (wd / 'addp').mkdir(parents=True)
    for it in (50, 1500):
        (wd / 'addp' / f'iter_{it}.pth').write_bytes(b'')
    assert mod.demo_checkpoint(str(wd)).endswith('iter_1500.pth')
    (wd / 'addp' / 'last_checkpoint').write_text(tiny_ckpt)
    assert mod.demo_checkpoint(str(wd)) == tiny_ckpt
    args = mod.parse_args([])
    assert args.config is None and args.host == '127.0.0.1'
    assert mod.DEMO_CONFIG.endswith('configs/demo/addp_vit-tiny-p4_1xb32-1500i_embedded-32px.py')
    assert osp.isfile(mod.DEMO_CONFIG)
    with pytest.raises(SystemExit, match='run `make demo` first'):
        mod.main(['--demo-dir', str(tmp_path / 'none')])
    with pytest.raises(SystemExit, match='--config needs --checkpoint'):
        mod.main(['--config', TINY_GEN_CFG])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_page_serves_sampling_and_inpainting(app, mod, photo, tmp_path, monkeypatch):
    """The page itself, on 127.0.0.1, called as a browser would through gradio_client."""
    monkeypatch.setenv('GRADIO_ANALYTICS_ENABLED', 'False')
    monkeypatch.setenv('GRADIO_TEMP_DIR', str(tmp_path / 'gradio'))
    from gradio_client import Client, handle_file
    from PIL import Image
    page = mod.build_ui(app)
    port = _free_port()
    page.launch(server_name='127.0.0.1', server_port=port, prevent_thread_lock=True,
                quiet=True)
    try:
        client = Client(f'http://127.0.0.1:{port}/', verbose=False)
        grid_path, _ = client.predict(4, 3, 3, 'cosine', 6.0, api_name='/sample')
        grid, _ = app.sample(4, 3, 3, 'cosine', 6.0)
        assert np.array_equal(np.asarray(Image.open(grid_path).convert('RGB')), grid)
        src = str(tmp_path / 'cat.png')
        Image.fromarray(photo).save(src)
        editor = dict(background=handle_file(src), layers=[], composite=None)
        _, result_path, _ = client.predict(editor, 1, 3, 'cosine', 6.0, 0, 0, 16, 16,
                                           api_name='/inpaint')
        _, result, _ = app.inpaint(dict(background=photo, layers=[]), 1, 3, 'cosine', 6.0,
                                   box=(0, 0, 16, 16))
        assert np.array_equal(np.asarray(Image.open(result_path).convert('RGB')), result)
    finally:
        page.close()
