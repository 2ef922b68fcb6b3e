"""Remote names download as mmengine does and are read by the safe loader.

Every file comes from an HTTP server on 127.0.0.1 started by the test, and the
download cache (torch hub's, which mmengine uses) is a temporary folder: no
test touches the network. A good checkpoint loads; a hostile one is refused
and leaves no marker, no cached file and no partial download; an unreachable
URL gets one line.
"""
import functools
import http.server
import json
import os
import os.path as osp
import socket
import sys
import threading

import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT

import addp_mm  # noqa: F401  (installs the safe remote loaders)
from addp_mm.utils.checkpoint import CheckpointError, load_external_state_dict

TOOLS = osp.join(ROOT, 'tools')


class _Evil:
    marker = ''

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    """``(base URL, served folder)`` of a local HTTP server."""
    folder = tmp_path_factory.mktemp('served')
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}', folder
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh download cache (TORCH_HOME) and mmengine home for each test."""
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine_home'))
    return tmp_path / 'torch_home' / 'hub' / 'checkpoints'


def _serve(server, name: str, obj) -> str:
    base, folder = server
    torch.save(obj, str(folder / name))
    return f'{base}/{name}'


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_a_good_checkpoint_downloads_into_mmengines_cache_and_loads(server, cache, tmp_path):
    from mmengine.runner import Runner
    from mmengine.runner.checkpoint import _load_checkpoint
    net = torch.nn.Linear(3, 2)
    url = _serve(server, 'good.pth', {'state_dict': net.state_dict(), 'meta': {}})
    ckpt = _load_checkpoint(url, map_location='cpu')
    assert torch.equal(ckpt['state_dict']['weight'], net.weight)
    assert sorted(os.listdir(cache)) == ['good.pth']
    # the project's readers and a Runner's load_from take the same name
    assert torch.equal(load_external_state_dict(url)['bias'], net.bias)
    model = torch.nn.Linear(3, 2)
    runner = Runner(model=model, work_dir=str(tmp_path / 'w'), experiment_name=f'dl_{id(model)}')
    runner.load_checkpoint(url)
    assert torch.equal(model.weight, net.weight)


def test_open_mmlab_names_use_mmengines_url_map(server, cache, tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    url = _serve(server, 'tiny_resnet.pth', {'state_dict': {'conv.weight': torch.ones(2, 2)}})
    home = tmp_path / 'mmengine_home'
    home.mkdir()
    (home / 'open_mmlab.json').write_text(json.dumps({'tiny_resnet': url}))
    ckpt = _load_checkpoint('open-mmlab://tiny_resnet', map_location='cpu')
    assert torch.equal(ckpt['state_dict']['conv.weight'], torch.ones(2, 2))
    assert os.listdir(cache) == ['tiny_resnet.pth']
    with pytest.raises(CheckpointError, match='not a known open-mmlab model name'):
        _load_checkpoint('open-mmlab://no_such_model_xyz')
    with pytest.raises(CheckpointError, match='not a known torchvision model name'):
        _load_checkpoint('torchvision://no_such_model_xyz')


def test_a_hostile_download_runs_nothing_and_leaves_no_trace(server, cache, tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    marker = str(tmp_path / 'MARKER')
    evil = _Evil()
    evil.marker = marker
    url = _serve(server, 'evil.pth', {'state_dict': {'w': torch.ones(1)}, 'x': evil})
    for load in (lambda: _load_checkpoint(url), lambda: load_external_state_dict(url)):
        with pytest.raises(CheckpointError) as err:
            load()
        msg = str(err.value)
        assert '\n' not in msg and url in msg and 'system' in msg and 'refusing' in msg
        assert not osp.exists(marker)
        assert not cache.exists() or os.listdir(cache) == []  # no cached or partial file


def test_an_unreachable_url_is_one_line(cache):
    from mmengine.runner.checkpoint import _load_checkpoint
    url = f'http://127.0.0.1:{_closed_port()}/model.pth'
    for load in (lambda: _load_checkpoint(url), lambda: load_external_state_dict(url)):
        with pytest.raises(CheckpointError) as err:
            load()
        msg = str(err.value)
        assert '\n' not in msg and msg.startswith(f'cannot download {url!r}') and 'refused' in msg
    assert not cache.exists() or os.listdir(cache) == []


def test_a_missing_file_on_the_server_is_one_line(server, cache):
    base, _ = server
    with pytest.raises(CheckpointError, match='cannot download.*: HTTP 404') as err:
        load_external_state_dict(f'{base}/missing.pth')
    assert '\n' not in str(err.value)


def test_tools_take_a_url(server, cache, tmp_path, monkeypatch, capsys):
    """tools/train.py --resume / load_from, tools/test.py and tools/sample.py download a URL
    (a missing one is 'cannot download', not 'not found')."""
    sys.path.insert(0, TOOLS)
    try:
        import _common
    finally:
        sys.path.remove(TOOLS)
    url = _serve(server, 'runner.pth', {'state_dict': {'w': torch.ones(1)},
                                        'meta': {'epoch': 0, 'iter': 2}})
    local = _common.local_checkpoint(url)
    assert local == str(cache / 'runner.pth') and osp.isfile(local)
    assert _common.read_runner_checkpoint(url, '--resume checkpoint')['meta']['iter'] == 2
    base, _ = server
    with pytest.raises(SystemExit) as exc:
        _common.local_checkpoint(f'{base}/gone.pth')
    assert str(exc.value.code).startswith('error: cannot download') and 'HTTP 404' in \
        str(exc.value.code)


def _tool_exit(script, argv, monkeypatch, capsys) -> str:
    import runpy
    monkeypatch.setattr(sys, 'argv', [script] + argv)
    monkeypatch.syspath_prepend(osp.dirname(script))
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(script, run_name='__main__')
    capsys.readouterr()
    return str(exc.value.code)


def test_a_url_to_the_tools_is_downloaded_not_called_missing(server, cache, tmp_path,
                                                            monkeypatch, capsys):
    base, _ = server
    url = f'{base}/no_such_file.pth'
    cls_cfg = osp.join(ROOT, 'configs', 'tests', 'vit-tiny-p8_1xb16-20i_embedded-32px.py')
    gen_cfg = osp.join(ROOT, 'configs', 'tests',
                       'addp_vit-tiny-p8_iterdec-cosine-8step_embedded-64px.py')
    work = str(tmp_path / 'w')
    runs = [('train.py', [cls_cfg, '--work-dir', work, '--resume', url]),
            ('train.py', [cls_cfg, '--work-dir', work, '--cfg-options', f'load_from={url}']),
            ('test.py', [cls_cfg, url, '--work-dir', work]),
            ('sample.py', [gen_cfg, url, '--num', '1', '--device', 'cpu', '--out-dir',
                           str(tmp_path / 'samples')])]
    for tool, argv in runs:
        msg = _tool_exit(osp.join(TOOLS, tool), argv, monkeypatch, capsys)
        assert '\n' not in msg.strip() and 'Traceback' not in msg, (tool, msg)
        assert 'cannot download' in msg and 'HTTP 404' in msg and url in msg, (tool, msg)
