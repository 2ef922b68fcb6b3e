"""Planted checkpoint files never run code, through every loading entry point.

Each hostile file, if unpickled without restriction, creates a marker file. For
every entry point (tools, converters, backbones, tokenizer, predictor, mmengine's
``load_from`` / ``resume`` / ``Pretrained`` init) the test asserts that the
marker was not created and that the one-line error names the file.
"""
import io
import os
import os.path as osp
import pickle
import runpy
import struct
import sys
import zipfile

import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT

TOOLS = osp.join(ROOT, 'tools')
CONVERTERS = osp.join(TOOLS, 'model_converters')
CLS_CFG = osp.join(ROOT, 'configs', 'tests', 'vit-tiny-p8_1xb16-20i_embedded-32px.py')
GEN_CFG = osp.join(ROOT, 'configs', 'tests', 'addp_vit-tiny-p8_iterdec-cosine-8step_embedded-64px.py')


# ----------------------------------------------------------------- payloads
def _args(*values) -> bytes:
    """Pickle opcodes that push the tuple ``values`` (no PROTO, no STOP)."""
    raw = pickle.dumps(tuple(values), protocol=2)
    return raw[2:-1]


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b'\x8c' + struct.pack('<B', len(data)) + data  # SHORT_BINUNICODE


def _global_call(module: str, name: str, *args, proto: int = 2) -> bytes:
    """GLOBAL ``module name``, call it with ``args`` (protocol >= 4 resolves dotted names)."""
    return bytes([0x80, proto]) + b'c' + f'{module}\n{name}\n'.encode() + _args(*args) + b'R.'


def _stack_global_call(module: str, name: str, *args) -> bytes:
    """Protocol 4: STACK_GLOBAL from two strings, call it with ``args``."""
    return (b'\x80\x04' + _unicode(module) + _unicode(name) + b'\x93' + _args(*args) + b'R.')


def _as_torch_zip(data_pkl: bytes, path: str) -> None:
    """A torch zip-format file whose ``data.pkl`` is ``data_pkl``."""
    buf = io.BytesIO()
    torch.save({'w': torch.zeros(1)}, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith('/data.pkl'):
                data = data_pkl
            dst.writestr(item, data)


class _Evil:
    command = ''

    def __reduce__(self):
        return (os.system, (self.command, ))


def _make(kind: str, folder: str, marker: str) -> str:
    touch = f'touch {marker}'
    path = osp.join(folder, f'{kind}.pth')
    if kind == 'plain_pickle_reduce':  # legacy path: torch reads it with pickle
        evil = _Evil()
        evil.command = touch
        with open(path, 'wb') as f:
            pickle.dump({'state_dict': {'w': 1}, 'x': evil}, f, protocol=2)
    elif kind == 'zip_reduce':
        evil = _Evil()
        evil.command = touch
        torch.save({'state_dict': {'w': torch.ones(1)}, 'x': evil}, path)
    elif kind == 'dotted_name_zip':  # GLOBAL torch / os.system -> torch.os.system
        _as_torch_zip(_global_call('torch', 'os.system', touch, proto=4), path)
    elif kind == 'dotted_name_protocol4':
        with open(path, 'wb') as f:
            f.write(_stack_global_call('torch', 'os.system', touch))
    elif kind == 'torch_function':  # a non-tensor global under torch
        _as_torch_zip(_global_call('torch', 'save', {'x': 1}, marker), path)
    elif kind == 'numpy_function':
        _as_torch_zip(_global_call('numpy', 'savetxt', marker, [[1.0]]), path)
    elif kind == 'builtins_function':
        with open(path, 'wb') as f:
            f.write(_global_call('builtins', 'exec', f'open({marker!r}, "w").close()'))
    else:
        raise ValueError(kind)
    return path


KINDS = ['plain_pickle_reduce', 'zip_reduce', 'dotted_name_zip', 'dotted_name_protocol4',
         'torch_function', 'numpy_function', 'builtins_function']


@pytest.fixture(params=KINDS)
def hostile(request, tmp_path):
    marker = str(tmp_path / 'MARKER')
    path = _make(request.param, str(tmp_path), marker)
    return request.param, path, marker


def test_payloads_really_run_code_when_unpickled_freely(tmp_path):
    """The planted files are live: an unrestricted load creates the marker."""
    for kind in KINDS:
        marker = str(tmp_path / f'MARKER_{kind}')
        path = _make(kind, str(tmp_path), marker)
        try:  # some payloads fail after running (not a torch object)
            if zipfile.is_zipfile(path):
                torch.load(path, weights_only=False)
            else:
                with open(path, 'rb') as f:
                    pickle.load(f)
        except Exception:
            pass
        assert osp.exists(marker), kind


def _assert_refused(err_text: str, path: str, marker: str, kind: str) -> None:
    assert not osp.exists(marker), f'{kind}: the file ran code'
    # one line names the file and (for a named global) the global
    line = next((ln for ln in err_text.splitlines() if osp.basename(path) in ln), None)
    assert line is not None, f'{kind}: error does not name the file: {err_text[-500:]}'
    if kind.startswith('dotted'):
        assert 'torch.os.system' in line, line
    if kind == 'torch_function':
        assert 'torch.save' in line, line
    if kind == 'numpy_function':
        assert 'numpy.savetxt' in line, line
    if kind == 'builtins_function':
        assert 'exec' in line, line
    if kind.endswith('reduce'):
        assert 'system' in line, line


# ---------------------------------------------------------- library entries
def test_safe_loader(hostile):
    from addp_mm.utils.checkpoint import CheckpointError, load_external_state_dict
    kind, path, marker = hostile
    with pytest.raises(CheckpointError) as err:
        load_external_state_dict(path)
    _assert_refused(str(err.value), path, marker, kind)
    assert len(str(err.value).splitlines()) == 1


def test_backbone_pretrained_and_pretrained_init(hostile):
    from addp_mm.models.backbones import ADDPVisionTransformer, ADDPViTDetBackbone
    from addp_mm.utils.checkpoint import CheckpointError
    kind, path, marker = hostile
    arch = dict(embed_dims=24, num_layers=2, num_heads=4, feedforward_channels=96)
    builds = [
        lambda: ADDPVisionTransformer(arch=arch, img_size=32, patch_size=16, pretrained=path),
        lambda: ADDPVisionTransformer(arch=arch, img_size=32, patch_size=16,
                                      init_cfg=dict(type='Pretrained', checkpoint=path,
                                                    prefix='backbone.')),
        lambda: ADDPViTDetBackbone(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                             mlp_ratio=2.),
                                   img_size=64, pretrain_img_size=32, window_size=2,
                                   global_attn_indexes=(1, ), pretrained=path),
        lambda: ADDPViTDetBackbone(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                             mlp_ratio=2.),
                                   img_size=64, pretrain_img_size=32, window_size=2,
                                   global_attn_indexes=(1, ),
                                   init_cfg=dict(type='Pretrained', checkpoint=path)),
        lambda: ADDPVisionTransformer(arch=arch, img_size=32, patch_size=16, out_type='featmap',
                                      out_indices=(1, ), pretrained=path),
    ]
    for build in builds:
        model = build()
        with pytest.raises(CheckpointError) as err:
            model.init_weights()
        _assert_refused(str(err.value), path, marker, kind)


def test_tokenizer_and_predictor_checkpoint(hostile):
    from helpers.tokenizers import tiny_mage_kwargs, tiny_vqgan_kwargs
    from addp_mm.models.target_generators import MAGETokenPredictor
    from addp_mm.models.tokenizers import VQGANTokenizer
    from addp_mm.utils.checkpoint import CheckpointError
    kind, path, marker = hostile
    for model in (VQGANTokenizer(**tiny_vqgan_kwargs(), checkpoint=path),
                  MAGETokenPredictor(**tiny_mage_kwargs(), checkpoint=path)):
        with pytest.raises(CheckpointError) as err:
            model.init_weights()
        _assert_refused(str(err.value), path, marker, kind)


def test_mmengine_load_checkpoint_and_pretrained_init(hostile):
    """mmengine's own readers (load_from, resume, Pretrained init) use the safe loader."""
    import addp_mm  # noqa: F401  (installs the loader)
    from mmengine.model import BaseModule
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint, load_checkpoint

    from addp_mm.utils.checkpoint import CheckpointError
    kind, path, marker = hostile

    class Net(BaseModule):

        def __init__(self, init_cfg=None):
            super().__init__(init_cfg)
            self.fc = torch.nn.Linear(2, 2)

    for call in (lambda: _load_checkpoint(path, map_location='cpu'),
                 lambda: CheckpointLoader.load_checkpoint(path),
                 lambda: load_checkpoint(Net(), path),
                 lambda: Net(init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()):
        with pytest.raises(CheckpointError) as err:
            call()
        _assert_refused(str(err.value), path, marker, kind)


def test_mmengine_runner_load_checkpoint_and_resume(hostile, tmp_path):
    """``Runner.load_checkpoint`` (load_from) and ``Runner.resume`` refuse the file."""
    import addp_mm  # noqa: F401
    from mmengine.runner import Runner

    from addp_mm.utils.checkpoint import CheckpointError
    kind, path, marker = hostile
    runner = Runner(model=torch.nn.Linear(2, 2), work_dir=str(tmp_path / 'work'),
                    experiment_name=f'hostile_{kind}_{os.getpid()}_{id(tmp_path)}')
    with pytest.raises(CheckpointError) as err:
        runner.load_checkpoint(path)
    _assert_refused(str(err.value), path, marker, kind)
    with pytest.raises(CheckpointError) as err:
        runner.resume(path)
    _assert_refused(str(err.value), path, marker, kind)


def test_inception_weights_for_fid(hostile):
    """The user-supplied Inception-v3 file (FID/IS) goes through the same loader."""
    from addp_mm.evaluation.fid import build_inception
    from addp_mm.utils.checkpoint import CheckpointError
    kind, path, marker = hostile
    with pytest.raises(CheckpointError) as err:
        build_inception(path)
    _assert_refused(str(err.value), path, marker, kind)


def test_remote_schemes_read_through_the_safe_loader():
    """mmengine's remote schemes download, then read with the same allow-list loader
    (tests/test_utils/test_downloads.py serves files locally); a scheme without a safe
    reader is refused in one line. Nothing here touches the network."""
    import addp_mm  # noqa: F401
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

    from addp_mm.utils.checkpoint import CheckpointError, load_from_safe_remote
    for url in ('open-mmlab://resnet50_v1c', 'https://example.com/x.pth', 'torchvision://resnet50',
                'http://example.com/x.pth', 'mmcls://resnet50', 's3://bucket/x.pth',
                'cluster1:s3://bucket/x.pth', 'pavi://x/y.pth'):
        assert CheckpointLoader._get_checkpoint_loader(url) is load_from_safe_remote, url
    CheckpointLoader.register_scheme('unsafe-test://', lambda f, m=None: torch.load(f), force=True)
    try:
        import addp_mm.utils.checkpoint as ckpt
        ckpt.install_mmengine_loader()
        with pytest.raises(CheckpointError, match='no safe reader for this scheme'):
            _load_checkpoint('unsafe-test://x.pth')
    finally:
        CheckpointLoader._schemes.pop('unsafe-test://', None)


# ------------------------------------------------------------ tool entries
def _run_tool(script, argv, monkeypatch, capsys):
    """Run a tool as ``__main__`` in this process; return its exit text + stderr."""
    monkeypatch.setattr(sys, 'argv', [script] + argv)
    monkeypatch.syspath_prepend(osp.dirname(script))
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(script, run_name='__main__')
    captured = capsys.readouterr()
    assert exc.value.code not in (0, None)
    return f'{captured.err}\n{exc.value.code}'


def test_tools_test_resume_and_load_from(hostile, tmp_path, monkeypatch, capsys, embedded_cwd):
    kind, path, marker = hostile
    monkeypatch.chdir(embedded_cwd)
    work = str(tmp_path / 'work')
    runs = [(osp.join(TOOLS, 'test.py'), [CLS_CFG, path, '--work-dir', work]),
            (osp.join(TOOLS, 'train.py'), [CLS_CFG, '--work-dir', work, '--resume', path]),
            (osp.join(TOOLS, 'train.py'), [CLS_CFG, '--work-dir', work, '--cfg-options',
                                           f'load_from={path}'])]
    for script, argv in runs:
        text = _run_tool(script, argv, monkeypatch, capsys)
        _assert_refused(text, path, marker, kind)
        assert 'Traceback' not in text


def test_tools_sample(hostile, tmp_path):
    sys.path.insert(0, TOOLS)
    try:
        import sample
    finally:
        sys.path.pop(0)
    kind, path, marker = hostile
    with pytest.raises(SystemExit) as err:
        sample.main([GEN_CFG, path, '--num', '1', '--device', 'cpu',
                     '--out-dir', str(tmp_path / 'samples')])
    _assert_refused(str(err.value.code), path, marker, kind)


def test_converters(hostile, tmp_path, monkeypatch, capsys):
    kind, path, marker = hostile
    dst = str(tmp_path / 'out.pth')
    for name in ('vqgan_to_mm.py', 'mage_to_mm.py', 'addp_to_mm.py'):
        text = _run_tool(osp.join(CONVERTERS, name), [path, dst], monkeypatch, capsys)
        _assert_refused(text, path, marker, kind)
        assert not osp.exists(dst)


# ------------------------------------------------------------ the policy
def test_no_process_wide_weights_only_override():
    """The tools no longer switch torch's safety off for the whole process."""
    sys.path.insert(0, TOOLS)
    try:
        import _common  # noqa: F401
    finally:
        sys.path.pop(0)
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    hits = []
    for folder in ('addp_mm', 'tools', 'configs', 'scripts', 'tests'):
        for root, _, files in os.walk(osp.join(ROOT, folder)):
            for name in files:
                if name.endswith(('.py', '.sh', '.md')) and name != osp.basename(__file__):
                    with open(osp.join(root, name), encoding='utf-8') as f:
                        if 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' in f.read():
                            hits.append(osp.join(root, name))
    for name in ('README.md', 'Makefile'):
        with open(osp.join(ROOT, name), encoding='utf-8') as f:
            if 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' in f.read():
                hits.append(name)
    assert not hits


def test_user_set_override_does_not_weaken_the_loader(tmp_path, monkeypatch):
    """Even with the variable set by the user, every load stays weights_only."""
    from addp_mm.utils.checkpoint import CheckpointError, load_external_state_dict
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    marker = str(tmp_path / 'MARKER')
    path = _make('zip_reduce', str(tmp_path), marker)
    with pytest.raises(CheckpointError, match='posix.system|os.system'):
        load_external_state_dict(path)
    assert not osp.exists(marker)
