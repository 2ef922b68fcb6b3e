"""Loading third-party (officially released) checkpoint files.

Policy: every file that does not come from this project's own Runner is read
with ``torch.load(..., weights_only=True)``. Only the project's tools
(``tools/train.py``, ``tools/test.py``) allow full unpickling, and only for
the Runner checkpoints they write themselves (mmengine stores its
``HistoryBuffer`` objects there).
"""
import os
import pickle
from typing import Dict, Iterable, List, Mapping, Tuple

import torch
from torch import Tensor


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not fit the model."""


# Globals an mmengine Runner checkpoint (``iter_N.pth``/``epoch_N.pth``) needs
# beyond plain tensors: its message hub keeps HistoryBuffers and numpy values.
_RUNNER_CKPT_GLOBALS = {
    ('mmengine.logging.history_buffer', 'HistoryBuffer'),
    ('numpy', 'dtype'), ('numpy', 'ndarray'),
    ('numpy.core.multiarray', '_reconstruct'), ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', '_reconstruct'), ('numpy._core.multiarray', 'scalar'),
    ('collections', 'OrderedDict'), ('collections', 'defaultdict'),
    ('builtins', 'set'), ('builtins', 'frozenset'), ('builtins', 'slice'),
    ('_codecs', 'encode'),  # numpy scalars pickle their raw bytes through it
}


def _history_buffer_getattr(obj, name: str):
    """``getattr`` limited to the statistics methods a HistoryBuffer pickles."""
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = set(getattr(HistoryBuffer, '_statistics_methods', {})) | {'min', 'max', 'mean',
                                                                       'current'}
    if not (obj is HistoryBuffer or isinstance(obj, HistoryBuffer)) or name not in allowed:
        raise pickle.UnpicklingError(f'getattr({type(obj).__name__}, {name!r}) is not allowed '
                                     'in a checkpoint')
    return getattr(obj, name)


class _RunnerCheckpointUnpickler(pickle.Unpickler):
    """Unpickler for mmengine Runner checkpoints written by addp_mm's tools.

    It admits torch's own rebuild functions, numpy arrays/dtypes and mmengine's
    HistoryBuffer, and refuses any other global, so a foreign file cannot run
    code through it.
    """

    def find_class(self, module: str, name: str):
        if module in ('builtins', '__builtin__') and name == 'getattr':
            return _history_buffer_getattr
        if (module, name) in _RUNNER_CKPT_GLOBALS or module.startswith('numpy.dtypes') \
                or module == 'torch' or module.startswith('torch._utils') \
                or module.startswith('torch.storage') or module.startswith('torch.serialization'):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'global {module}.{name} is not allowed in a checkpoint')


class _RunnerPickleModule:
    Unpickler = _RunnerCheckpointUnpickler
    load = pickle.load
    __name__ = 'addp_mm_runner_pickle'


def load_external_state_dict(path: str,
                             keys: Iterable[str] = ('model', 'state_dict'),
                             map_location: str = 'cpu') -> Dict[str, Tensor]:
    """Read a released checkpoint safely and return its flat state dict.

    Args:
        path (str): Path of the file given by the user.
        keys (Iterable[str]): Container keys to unwrap, tried in order
            (e.g. ``{'model': ...}`` for MAGE/ADDP releases, ``{'state_dict': ...}``
            for taming/mmengine files). A file whose tensors are top level is
            returned as is. Defaults to ``('model', 'state_dict')``.
        map_location (str): Passed to ``torch.load``. Defaults to ``'cpu'``.

    Returns:
        dict[str, Tensor]: The state dict.

    Raises:
        CheckpointError: If the file does not exist, cannot be unpickled with
            ``weights_only=True`` or holds no tensors.
    """
    if not path or not os.path.isfile(path):
        raise CheckpointError(
            f'checkpoint file not found: {path!r}. Download the released file and '
            'pass its local path (nothing is downloaded at run time).')
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # An mmengine Runner checkpoint (e.g. our own training output) stores
        # HistoryBuffers and numpy values; those, and only those, are admitted
        # by a whitelist unpickler. Anything else is refused.
        try:
            obj = torch.load(path, map_location=map_location, weights_only=False,
                             pickle_module=_RunnerPickleModule)
        except pickle.UnpicklingError as err2:
            detail = [ln for ln in str(err).splitlines() if 'Unsupported global' in ln]
            raise CheckpointError(
                f'cannot read checkpoint {path!r} with torch.load(weights_only=True): '
                f'{(detail or [str(err2)])[0].strip()}. Only tensors, containers and mmengine '
                'Runner state are accepted; convert other files with tools/model_converters '
                'in a trusted environment first.') from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f'cannot read checkpoint {path!r} with torch.load(weights_only=True): '
            f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}. '
            'The file may be truncated/corrupt (re-download it) or contain pickled '
            'objects other than tensors (convert it with tools/model_converters first).'
        ) from err
    if isinstance(obj, Mapping):
        for key in keys:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f'{path!r} holds no state dict (looked at top level and under {list(keys)}).')
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> Dict[str, Tensor]:
    """Return the entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def check_state_dict(module: torch.nn.Module,
                     state_dict: Mapping[str, Tensor],
                     source: str,
                     ignore_unexpected: Iterable[str] = (),
                     max_report: int = 5) -> None:
    """Strictly compare ``state_dict`` with ``module``'s keys and shapes.

    Args:
        module (nn.Module): The model the weights are meant for.
        state_dict (Mapping[str, Tensor]): The weights.
        source (str): A name for the file, used in messages.
        ignore_unexpected (Iterable[str]): Key prefixes documented as unused,
            which may be present without a counterpart. Defaults to ``()``.
        max_report (int): How many offending keys to name. Defaults to 5.

    Raises:
        CheckpointError: On missing keys, undocumented unexpected keys, or
            shape mismatches. The message names the first offending keys.
    """
    own = module.state_dict()
    ignore = tuple(ignore_unexpected)
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own and not k.startswith(ignore)]
    mismatched: List[Tuple[str, tuple, tuple]] = [
        (k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    problems = []
    if mismatched:
        problems.append('shape mismatch (checkpoint vs model): ' + ', '.join(
            f'{k}: {a} vs {b}' for k, a, b in mismatched[:max_report]))
    if missing:
        problems.append(f'{len(missing)} missing key(s), e.g. {missing[:max_report]}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected key(s), e.g. {unexpected[:max_report]}')
    if problems:
        raise CheckpointError(
            f'checkpoint {source} does not match {type(module).__name__}: ' +
            '; '.join(problems) +
            '. Check that the model config (sizes, depths, codebook) matches the file.')


def load_state_dict_strict(module: torch.nn.Module,
                           state_dict: Mapping[str, Tensor],
                           source: str,
                           ignore_unexpected: Iterable[str] = ()) -> None:
    """``check_state_dict`` then load, copying values into ``module``."""
    check_state_dict(module, state_dict, source, ignore_unexpected)
    own = module.state_dict()
    module.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=True)


