"""A ``.safetensors`` file of the same tensors loads wherever a checkpoint is read.

One round trip per entry point: the weights are written as ``.safetensors``
(``safetensors.torch.save_file``), read back through the entry point and
compared bit for bit; a corrupt ``.safetensors`` file is refused in one line.
"""
import os.path as osp
import runpy
import sys

import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT
from safetensors.torch import save_file

import addp_mm  # noqa: F401
from addp_mm.utils.checkpoint import CheckpointError, load_external_state_dict, safe_torch_load

TOOLS = osp.join(ROOT, 'tools')
CONVERTERS = osp.join(TOOLS, 'model_converters')
CLS_CFG = osp.join(ROOT, 'configs', 'tests', 'vit-tiny-p8_1xb16-20i_embedded-32px.py')
ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)


def _save(sd: dict, path) -> str:
    save_file({k: v.detach().clone().contiguous() for k, v in sd.items()}, str(path))
    return str(path)


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _run_tool(script, argv, monkeypatch, capsys, expect_ok=True):
    monkeypatch.setattr(sys, 'argv', [script] + argv)
    monkeypatch.syspath_prepend(osp.dirname(script))
    code = 0
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    if expect_ok:
        assert code in (0, None), f'{code}\n{out.err[-3000:]}'
    return code, f'{code}\n{out.out}{out.err}'


# ----------------------------------------------------------- the library readers
def test_safe_torch_load_and_load_external_state_dict(tmp_path):
    sd = {'a': torch.arange(6.).reshape(2, 3), 'b': torch.ones(2, dtype=torch.int64)}
    path = _save(sd, tmp_path / 'w.safetensors')
    _same(safe_torch_load(path), sd)
    _same(load_external_state_dict(path), sd)
    # recognised by its layout too, whatever the extension
    other = _save(sd, tmp_path / 'w.bin')
    _same(load_external_state_dict(other), sd)


def test_backbone_pretrained_and_init_cfg(tmp_path):
    """The ADDP encoder of a whole ADDP checkpoint, as .pth and as .safetensors."""
    from helpers.detection import make_encoder_sd

    from addp_mm.models.backbones import ADDPVisionTransformer
    whole = {f'backbone.{k}': v for k, v in make_encoder_sd(32, depth=2, grid=4).items()}
    whole['neck.decoder_embed.weight'] = torch.zeros(4, 4)  # not the encoder's: skipped
    pth = str(tmp_path / 'addp.pth')
    torch.save({'state_dict': whole, 'meta': {}}, pth)
    st = _save(whole, tmp_path / 'addp.safetensors')

    def build(**kw):
        m = ADDPVisionTransformer(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                            feedforward_channels=64), img_size=64,
                                  patch_size=16, **kw)
        m.init_weights()
        return m.state_dict()

    ref = build(pretrained=pth)
    assert torch.equal(ref['cls_token'], whole['backbone.cls_token'])
    _same(build(pretrained=st), ref)
    _same(build(init_cfg=dict(type='Pretrained', checkpoint=st)), ref)


def test_tokenizer_and_predictor_checkpoint(tmp_path):
    from helpers.tokenizers import (official_mage_sd, official_vqgan_sd, tiny_mage_kwargs,
                                    tiny_vqgan_kwargs)
    from addp_mm.models.target_generators import MAGETokenPredictor
    from addp_mm.models.tokenizers import VQGANTokenizer
    vq = official_vqgan_sd()
    model = VQGANTokenizer(**tiny_vqgan_kwargs(), checkpoint=_save(vq, tmp_path / 'vq.safetensors'))
    model.init_weights()
    _same(model.state_dict(), {k: vq[k] for k in model.state_dict()})
    mage = official_mage_sd()
    pred = MAGETokenPredictor(**tiny_mage_kwargs(),
                              checkpoint=_save(mage, tmp_path / 'mage.safetensors'))
    pred.init_weights()
    for k, v in pred.state_dict().items():
        assert torch.equal(v, mage[k]), k


def test_runner_load_from(tmp_path):
    from mmengine.runner import Runner
    src = torch.nn.Linear(3, 2)
    path = _save(src.state_dict(), tmp_path / 'lin.safetensors')
    model = torch.nn.Linear(3, 2)
    Runner(model=model, work_dir=str(tmp_path / 'w'),
           experiment_name=f'st_{id(model)}').load_checkpoint(path)
    _same(model.state_dict(), src.state_dict())


def test_generator_and_generation_loader(tmp_path, tiny_addp):
    from helpers.generation import TINY_GEN_CFG

    from addp_mm.apis import ADDPGenerator
    model, _ = tiny_addp
    path = _save(model.state_dict(), tmp_path / 'addp.safetensors')
    gen = ADDPGenerator(TINY_GEN_CFG, pretrained=path, device='cpu')
    _same(gen.model.state_dict(), model.state_dict())


def test_model_index_pretrained(tmp_path):
    import mmpretrain

    from addp_mm.apis import get_model
    name = 'vit-base-p16_addp-pre_8xb128-coslr-100e_in1k-256px'

    def small():
        return dict(backbone=dict(arch=dict(_delete_=True, **ARCH), init_cfg=None),
                    head=dict(in_channels=32, num_classes=5))

    torch.manual_seed(0)
    sd = mmpretrain.get_model(name, **small()).state_dict()
    sd['head.fc.bias'] = torch.arange(5.)
    path = _save(sd, tmp_path / 'cls.safetensors')
    for model in (mmpretrain.get_model(name, pretrained=path, **small()),
                  get_model(name, pretrained=path, **small())):
        assert torch.equal(model.head.fc.bias, torch.arange(5.))


def test_corrupt_safetensors_is_one_line(tmp_path):
    path = _save({'w': torch.ones(100)}, tmp_path / 'w.safetensors')
    with open(path, 'rb') as f:
        data = f.read()
    for name, bad in (('truncated', data[:60]), ('header', data[:8] + b'{"w": oops' + data[18:])):
        p = tmp_path / f'{name}.safetensors'
        p.write_bytes(bad)
        with pytest.raises(CheckpointError) as err:
            load_external_state_dict(str(p))
        msg = str(err.value)
        assert '\n' not in msg and 'unreadable safetensors' in msg and str(p) in msg


# ---------------------------------------------------------------------- tools
@pytest.mark.e2e
def test_test_tool(tmp_path, embedded_cwd, monkeypatch, capsys):
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    monkeypatch.chdir(embedded_cwd)
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(CLS_CFG).model)
    path = _save(model.state_dict(), tmp_path / 'cls.safetensors')
    _, text = _run_tool(osp.join(TOOLS, 'test.py'), [CLS_CFG, path, '--work-dir',
                                                     str(tmp_path / 'w')], monkeypatch, capsys)
    assert 'metrics: {"accuracy/top1"' in text


@pytest.mark.parametrize('tool', ['vqgan_to_mm', 'mage_to_mm', 'addp_to_mm'])
def test_converters_read_safetensors(tool, tmp_path, monkeypatch, capsys):
    from helpers.addp import load_fixture
    from helpers.tokenizers import (official_mage_sd, official_vqgan_sd, tiny_mage_kwargs,
                                    tiny_vqgan_kwargs)
    extra = []
    if tool == 'vqgan_to_mm':
        src = official_vqgan_sd()
        cfg = tmp_path / 'c.py'
        cfg.write_text(f'tokenizer = dict(type="VQGANTokenizer", **{tiny_vqgan_kwargs()!r})\n')
        extra = ['--config', str(cfg)]
    elif tool == 'mage_to_mm':
        src = official_mage_sd()
        cfg = tmp_path / 'c.py'
        cfg.write_text(f'token_predictor = dict(type="MAGETokenPredictor", '
                       f'**{tiny_mage_kwargs()!r})\n')
        extra = ['--config', str(cfg)]
    else:
        src = load_fixture()['state_dict']['addp']
    path = _save(src, tmp_path / f'{tool}_src.safetensors')
    dst = str(tmp_path / 'out.pth')
    _run_tool(osp.join(CONVERTERS, f'{tool}.py'), [path, dst] + extra, monkeypatch, capsys)
    out = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    assert out and all(isinstance(v, torch.Tensor) for v in out.values())
    # the same conversion from the .pth of the same tensors gives the same file content
    pth = str(tmp_path / f'{tool}_src.pth')
    torch.save({'model': src} if tool != 'vqgan_to_mm' else src, pth)
    dst2 = str(tmp_path / 'out2.pth')
    _run_tool(osp.join(CONVERTERS, f'{tool}.py'), [pth, dst2] + extra, monkeypatch, capsys)
    _same(out, torch.load(dst2, map_location='cpu', weights_only=True)['state_dict'])
    # --format safetensors writes the same tensors (a .safetensors destination alone does too)
    for argv in (['--format', 'safetensors'], []):
        dst3 = str(tmp_path / f'out{len(argv)}.safetensors')
        _run_tool(osp.join(CONVERTERS, f'{tool}.py'), [path, dst3] + extra + argv, monkeypatch,
                  capsys)
        _same(load_external_state_dict(dst3), out)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == []
    # ... and a converted .safetensors is not converted twice
    code, text = _run_tool(osp.join(CONVERTERS, f'{tool}.py'),
                           [dst3, str(tmp_path / 'again.pth')] + extra, monkeypatch, capsys,
                           expect_ok=False)
    assert code not in (0, None) and 'already' in text and 'addp_mm checkpoint' in text, text
    # a format that contradicts the destination's name: one line, nothing written
    code, text = _run_tool(osp.join(CONVERTERS, f'{tool}.py'),
                           [path, str(tmp_path / 'x.pth'), '--format', 'safetensors'] + extra,
                           monkeypatch, capsys, expect_ok=False)
    assert code not in (0, None) and 'does not match the destination' in text
    assert not (tmp_path / 'x.pth').exists()
