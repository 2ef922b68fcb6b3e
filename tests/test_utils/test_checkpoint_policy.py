"""Third-party files load with weights_only=True; our Runner files via a whitelist."""
import pickle

import pytest
import torch

from addp_mm.utils.checkpoint import (CheckpointError, check_state_dict,
                                      load_external_state_dict)


class _Evil:
    def __reduce__(self):
        return (print, ('pwned',))


def test_plain_and_wrapped_state_dicts(tmp_path):
    sd = {'a': torch.arange(3.), 'b': torch.ones(2, 2)}
    for wrap in (lambda d: d, lambda d: {'model': d}, lambda d: {'state_dict': d, 'meta': {}}):
        p = tmp_path / 'f.pth'
        torch.save(wrap(sd), p)
        out = load_external_state_dict(str(p))
        assert set(out) == {'a', 'b'} and torch.equal(out['a'], sd['a'])


def test_foreign_pickle_is_refused(tmp_path):
    p = tmp_path / 'evil.pth'
    torch.save({'model': {'w': torch.zeros(1)}, 'x': _Evil()}, p)
    with pytest.raises(CheckpointError, match='weights_only=True'):
        load_external_state_dict(str(p))


def test_corrupt_and_missing_files(tmp_path):
    p = tmp_path / 'trunc.pth'
    torch.save({'w': torch.zeros(1000)}, p)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(CheckpointError, match='corrupt'):
        load_external_state_dict(str(p))
    with pytest.raises(CheckpointError, match='not found'):
        load_external_state_dict(str(tmp_path / 'nope.pth'))


def test_runner_checkpoint_is_read_through_whitelist(tmp_path):
    from mmengine.logging import HistoryBuffer
    import numpy as np
    p = tmp_path / 'iter_2.pth'
    torch.save({'meta': {'iter': 2, 'seed': np.int64(3)},
                'state_dict': {'backbone.w': torch.ones(2)},
                'message_hub': {'log_scalars': {'loss': HistoryBuffer([1.0, 2.0], [1, 1])}}}, p)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(p, weights_only=True)
    sd = load_external_state_dict(str(p))
    assert torch.equal(sd['backbone.w'], torch.ones(2))


def test_check_state_dict_names_first_mismatch():
    m = torch.nn.Linear(3, 4)
    with pytest.raises(CheckpointError, match=r'weight: \(4, 5\) vs \(4, 3\)'):
        check_state_dict(m, {'weight': torch.zeros(4, 5), 'bias': torch.zeros(4)}, 'x.pth')
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\) .*e.g. \['bias'\]"):
        check_state_dict(m, {'weight': torch.zeros(4, 3)}, 'x.pth')
    check_state_dict(m, {'weight': torch.zeros(4, 3), 'bias': torch.zeros(4), 'extra.x': 1},
                     'x.pth', ignore_unexpected=('extra.',))


def test_whitelist_refuses_getattr_outside_history_buffers(tmp_path):
    import numpy as np

    class _Sneaky:
        def __reduce__(self):
            return (getattr, (np.zeros(1), 'tofile'))

    p = tmp_path / 'sneaky.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'x': _Sneaky()}, p)
    with pytest.raises(CheckpointError):
        load_external_state_dict(str(p))


def test_random_bytes_are_not_a_checkpoint_not_a_security_refusal(tmp_path):
    import os
    for i, data in enumerate([os.urandom(300), b'\x80\x02' + os.urandom(200), b'PK\x03\x04junk']):
        p = tmp_path / f'random{i}.pth'
        p.write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            load_external_state_dict(str(p))
        msg = str(err.value)
        assert 'not a checkpoint: unreadable' in msg and 'refusing' not in msg, msg
        assert 'weights_only' not in msg and '\n' not in msg


def test_converters_recognise_this_projects_checkpoints(tmp_path):
    """A tools/train.py checkpoint or a flat addp_mm state dict is 'already an addp_mm
    checkpoint', not a file that 'holds no state dict'."""
    import importlib.util
    import os.path as osp

    import numpy as np
    from helpers.checkout import REPO_ROOT
    runner_file = tmp_path / 'iter_10.pth'
    torch.save({'meta': {'epoch': 0, 'iter': 10, 'seed': np.int64(0)},
                'state_dict': {'backbone.blocks.0.norm1.weight': torch.ones(4),
                               'neck.mask_token': torch.zeros(1, 1, 4)},
                'message_hub': {}}, runner_file)
    with pytest.raises(CheckpointError, match='already an addp_mm checkpoint.*tools/train.py'):
        load_external_state_dict(str(runner_file), keys=('model', ), reject_converted=True)
    spec = importlib.util.spec_from_file_location('addp_to_mm_msg', osp.join(
        REPO_ROOT, 'tools', 'model_converters', 'addp_to_mm.py'))
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    flat = tmp_path / 'flat.pth'
    torch.save({'backbone.blocks.0.norm1.weight': torch.ones(4),
                'tokenizer.quantize.embedding.weight': torch.zeros(8, 4)}, flat)
    for path in (runner_file, flat):
        with pytest.raises(CheckpointError, match='already an addp_mm checkpoint') as err:
            conv.convert(str(path))
        assert '\n' not in str(err.value)
