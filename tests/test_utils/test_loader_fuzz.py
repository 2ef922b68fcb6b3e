"""Fuzz test of every entry point that reads a checkpoint.

Hypothesis makes a few hundred malformed files per run (derandomized, so a
failure reproduces): truncations and byte flips of a real Runner checkpoint
(zip and legacy format) and of a ``.safetensors`` file, zip archives with
records missing or added, and pickles of allowed types in the wrong
structure, some with an object whose unpickling would create a marker file.
Each file goes through every reader, in process. Each reader either loads it
or refuses it with one line (an exception the project defines); no other
exception escapes and no code runs.
"""
import importlib.util
import io
import os
import os.path as osp
import sys
import zipfile

import numpy as np
import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import addp_mm  # noqa: F401
from addp_mm.apis.generation_model import GenerationWeightsError, load_generation_weights
from addp_mm.utils.checkpoint import (CheckpointError, load_external_state_dict, read_checkpoint,
                                      safe_torch_load)

TOOLS = osp.join(ROOT, 'tools')
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _module(path: str, name: str):
    sys.path.insert(0, osp.dirname(path))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(osp.dirname(path))
    return mod


class _Marker:
    """Unpickled freely, creates the marker file."""
    path = ''

    def __reduce__(self):
        return (open, (self.path, 'w'))


@pytest.fixture(scope='module')
def world(tmp_path_factory, tiny_addp):
    """The readers, a folder for the fuzzed file, the marker path and the seed files."""
    from mmengine.runner import Runner

    from addp_mm.models.backbones import ADDPVisionTransformer
    from addp_mm.models.target_generators.mage_predictor import convert_mage_state_dict
    from addp_mm.models.tokenizers.vqgan import convert_vqgan_state_dict
    folder = tmp_path_factory.mktemp('fuzz')
    sys.path.insert(0, TOOLS)
    try:  # the one _common module the tools import
        common = importlib.import_module('_common')
    finally:
        sys.path.remove(TOOLS)
    test_tool = _module(osp.join(TOOLS, 'test.py'), 'addp_test_tool')
    addp_conv = _module(osp.join(TOOLS, 'model_converters', 'addp_to_mm.py'), 'addp_to_mm_fuzz')
    addp_model, _ = tiny_addp
    small = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    runner = Runner(model=small, work_dir=str(folder / 'work'), experiment_name=f'fuzz_{id(small)}')
    arch = dict(embed_dims=16, num_layers=1, num_heads=2, feedforward_channels=32)
    readers = {
        'safe_torch_load': safe_torch_load,
        'safe_torch_load_mmap': lambda p: safe_torch_load(p, mmap=True),
        'load_external_state_dict': load_external_state_dict,
        'read_runner_checkpoint': lambda p: common.read_runner_checkpoint(p, '--resume checkpoint'),
        'runner_load_from': runner.load_checkpoint,
        'test_tool': lambda p: test_tool.check_checkpoint_fits(
            small, read_checkpoint(p, mmap=True), p),
        'generation': lambda p: load_generation_weights(addp_model, p),
        'addp_to_mm': addp_conv.convert,
        'vqgan_to_mm': lambda p: convert_vqgan_state_dict(load_external_state_dict(
            p, keys=('state_dict', 'model'), reject_converted=True)),
        'mage_to_mm': lambda p: convert_mage_state_dict(load_external_state_dict(
            p, keys=('model', 'state_dict'), reject_converted=True)),
        'backbone_pretrained': lambda p: ADDPVisionTransformer(
            arch=arch, img_size=16, patch_size=8, pretrained=p).init_weights(),
    }
    # the seed files: a real Runner checkpoint (HistoryBuffer, numpy values), its
    # legacy-format twin, and a .safetensors of the same weights
    sd = dict(small.state_dict())
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint
    hub = MessageHub.get_instance(f'fuzz_hub_{id(folder)}')
    hub.update_scalar('train/loss', 1.5)
    runner_file = str(folder / 'seed.pth')
    save_checkpoint(dict(meta=dict(epoch=0, iter=3, seed=np.int64(7)), state_dict=sd,
                         message_hub=hub.state_dict()), runner_file)
    legacy = io.BytesIO()
    torch.save(safe_torch_load(runner_file), legacy, _use_new_zipfile_serialization=False)
    from safetensors.torch import save
    seeds = {'zip': open(runner_file, 'rb').read(), 'legacy': legacy.getvalue(),
             'safetensors': save({k: v.contiguous() for k, v in small.state_dict().items()})}
    allowed = (CheckpointError, GenerationWeightsError, common.ToolError)
    return _World(readers=readers, folder=folder, marker=str(folder / 'MARKER'), seeds=seeds,
                  allowed=allowed)


class _World(dict):
    """The fixture's values (a short repr keeps hypothesis' reports readable)."""

    def __repr__(self) -> str:
        return '<fuzz world>'


def _check(world, data: bytes, suffix: str = '.pth') -> None:
    """Every reader loads ``data`` or refuses it in one line; nothing runs."""
    path = str(world['folder'] / f'fuzzed{suffix}')
    with open(path, 'wb') as f:
        f.write(data)
    for name, read in world['readers'].items():
        try:
            read(path)
        except world['allowed'] as err:
            text = str(err.code if isinstance(err, SystemExit) else err)
            assert text and '\n' not in text.strip(), f'{name}: {text!r}'
        except Exception as err:  # noqa: B902 - the point: nothing else may escape
            raise AssertionError(f'{name} raised {type(err).__name__}: {err}') from err
        assert not osp.exists(world['marker']), f'{name}: code ran'
    os.unlink(path)


# ---------------------------------------------------------------- mutations
@settings(max_examples=60, **SETTINGS)
@given(kind=st.sampled_from(['zip', 'legacy', 'safetensors']), frac=st.floats(0, 1))
def test_truncated_files(world, kind, frac):
    data = world['seeds'][kind]
    _check(world, data[:int(len(data) * frac)], '.safetensors' if kind == 'safetensors' else '.pth')


@settings(max_examples=90, **SETTINGS)
@given(kind=st.sampled_from(['zip', 'legacy', 'safetensors']),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                      min_size=1, max_size=8))
def test_flipped_bytes(world, kind, flips):
    data = bytearray(world['seeds'][kind])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    _check(world, bytes(data), '.safetensors' if kind == 'safetensors' else '.pth')


@settings(max_examples=60, **SETTINGS)
@given(drop=st.sets(st.integers(0, 12), max_size=4),
       extra=st.lists(st.tuples(st.sampled_from(['archive/data.pkl', 'archive/data/0',
                                                 'archive/extra.pkl', 'archive/data/99',
                                                 'archive/version', 'other/data.pkl']),
                                st.binary(max_size=64)), max_size=3))
def test_zip_records_missing_or_extra(world, drop, extra):
    src = zipfile.ZipFile(io.BytesIO(world['seeds']['zip']))
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as dst:
        for i, info in enumerate(src.infolist()):
            if i not in drop:
                dst.writestr(info, src.read(info.filename))
        for name, payload in extra:
            dst.writestr(name + ('' if name not in dst.namelist() else '.dup'), payload)
    _check(world, out.getvalue())


_KEYS = st.sampled_from(['state_dict', 'meta', 'model', 'iter', 'epoch', 'message_hub',
                         'optimizer', 'backbone.cls_token', 'weight', '0.weight', 'tokenizer.x',
                         'converter', 'neck.decoder_blocks.0.w']) | st.text(max_size=6)
_LEAVES = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() |
           st.text(max_size=8) | st.binary(max_size=8) |
           st.builds(lambda n, d: torch.zeros(n, dtype=d), st.integers(0, 3),
                     st.sampled_from([torch.float32, torch.int64, torch.bool])) |
           st.builds(np.float64, st.floats()) | st.builds(np.arange, st.integers(0, 4)))


def _values(marker: bool):
    leaves = _LEAVES | st.just('MARKER') if marker else _LEAVES
    return st.recursive(leaves, lambda c: (st.lists(c, max_size=3) | st.tuples(c, c) |
                                           st.dictionaries(_KEYS, c, max_size=4)),
                        max_leaves=12)


@settings(max_examples=90, **SETTINGS)
@given(obj=st.one_of(_values(True), st.fixed_dictionaries(
    {'state_dict': _values(True)}, optional={'meta': _values(True)})),
       legacy=st.booleans())
def test_pickles_of_allowed_types_in_the_wrong_structure(world, obj, legacy):
    def plant(x):  # the string 'MARKER' becomes an object that would create the marker
        if isinstance(x, str) and x == 'MARKER':
            m = _Marker()
            m.path = world['marker']
            return m
        if isinstance(x, dict):
            return {k: plant(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(plant(v) for v in x)
        return x

    buf = io.BytesIO()
    torch.save(plant(obj), buf, _use_new_zipfile_serialization=not legacy)
    _check(world, buf.getvalue())
