"""Converters tools/model_converters/{vqgan,mage}_to_mm.py: official files ->
mmengine checkpoints that load back bit-exactly; mismatching sizes fail."""
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest
import torch

from addp_mm.models.target_generators import MAGETokenPredictor
from addp_mm.models.tokenizers import VQGANTokenizer
from helpers.tokenizers import (ROOT, official_vqgan_sd, tiny_mage_kwargs, tiny_vqgan_kwargs,
                               write_official_files)

TOOLS = osp.join(ROOT, 'tools', 'model_converters')


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    return write_official_files(str(tmp_path_factory.mktemp('official_tiny')))


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, osp.join(TOOLS, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _vqgan(path):
    model = VQGANTokenizer(**tiny_vqgan_kwargs(), checkpoint=path)
    model.init_weights()
    return model


def _mage(path):
    model = MAGETokenPredictor(**tiny_mage_kwargs(), checkpoint=path)
    model.init_weights()
    return model


@pytest.mark.e2e
def test_vqgan_converter(files, tmp_path):
    cfg = tmp_path / 'tiny_vqgan.py'
    cfg.write_text(f'tokenizer = dict(type="VQGANTokenizer", **{tiny_vqgan_kwargs()!r})\n')
    tool = osp.join(TOOLS, 'vqgan_to_mm.py')
    dst = str(tmp_path / 'vqgan_mm.pth')
    # the official taming layout plus a discriminator weight (documented unused)
    src = str(tmp_path / 'vqgan_with_loss.ckpt')
    torch.save({'state_dict': dict(official_vqgan_sd(), **{'loss.logvar': torch.zeros(())})}, src)
    proc = subprocess.run([sys.executable, tool, src, dst, '--config', str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'missing keys: 0; unexpected keys: 0; dropped 1 documented-unused' in proc.stdout
    out = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(out) == {'state_dict', 'meta'} and out['meta']['dropped_keys'] == ['loss.logvar']
    model = _vqgan(dst)  # the converted file loads through the same checkpoint= path
    ref = official_vqgan_sd()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    # ADDP layout from a MAGE file's vqgan.* copy, and a mismatching config (in-process)
    conv = _tool('vqgan_to_mm')
    dst2 = str(tmp_path / 'vqgan_addp_layout.pth')
    assert conv.main([files['mage'], dst2, '--config', str(cfg), '--add-prefix', 'tokenizer.']) == 0
    sd2 = torch.load(dst2, map_location='cpu', weights_only=True)['state_dict']
    assert set(sd2) == {'tokenizer.' + k for k in ref}
    bad = tmp_path / 'bad.py'
    bad.write_text(f'tokenizer = dict(type="VQGANTokenizer", **dict({tiny_vqgan_kwargs()!r}, ch=64))\n')
    assert conv.main([src, str(tmp_path / 'no.pth'), '--config', str(bad)]) == 1
    assert not osp.exists(tmp_path / 'no.pth')


def test_mage_converter_roundtrip(files, tmp_path, capsys):
    conv = _tool('mage_to_mm')
    cfg = tmp_path / 'tiny_mage.py'
    cfg.write_text(f'token_predictor = dict(type="MAGETokenPredictor", **{tiny_mage_kwargs()!r})\n')
    dst = str(tmp_path / 'mage_mm.pth')
    assert conv.main([files['mage'], dst, '--config', str(cfg),
                      '--compare-vqgan', files['vqgan_state_dict']]) == 0
    report = capsys.readouterr().out
    assert 'dropped 115 documented-unused keys (107 of them the embedded vqgan.* copy)' in report
    assert 'vqgan copy: 107 tensors, identical' in report
    out = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(out) == {'state_dict', 'meta'} and 'vqgan' not in ''.join(out['state_dict'])
    assert out['meta']['vqgan_copy'].startswith('dropped')
    model = _mage(dst)
    ref = _mage(files['mage']).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    # sizes that do not fit the file: exit status 1
    bad = tmp_path / 'bad_mage.py'
    bad.write_text('token_predictor = dict(type="MAGETokenPredictor", '
                   f'**dict({tiny_mage_kwargs()!r}, depth=3))\n')
    assert conv.main([files['mage'], str(tmp_path / 'x.pth'), '--config', str(bad)]) == 1
    assert not osp.exists(tmp_path / 'x.pth')
