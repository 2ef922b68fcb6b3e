"""The one way addp_mm reads checkpoint files.

Policy: every file is read with ``torch.load(..., weights_only=True)``.
Besides tensors and plain containers, torch's restricted unpickler admits only
the few types an mmengine Runner checkpoint (``iter_N.pth``, ``epoch_N.pth``)
really holds, registered through :func:`torch.serialization.safe_globals`:
mmengine's ``HistoryBuffer`` (the message hub's logged scalars) and the numpy
array, scalar and dtype types their values are stored as (see
:func:`runner_safe_globals`). There is no fallback to a permissive unpickler,
so loading a file never runs code from it. A refused file gives a one-line
:class:`CheckpointError` naming the file and the first global it would need.

:func:`install_mmengine_loader` routes mmengine's own reads (``load_from``,
``--resume``, ``init_cfg=dict(type='Pretrained')``, ``load_checkpoint``)
through the same function; importing ``addp_mm`` installs it.
"""
import io
import os.path as osp
import pickle
import pickletools
import zipfile
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import torch
from torch import Tensor


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, refused or does not fit the model."""


_SAFE_GLOBALS: Optional[list] = None


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as a Runner checkpoint uses it, and nothing more.

    A pickled ``HistoryBuffer`` stores its ``statistics_methods`` table as
    ``getattr(HistoryBuffer, 'mean')`` and so on. Registered under the name
    ``builtins.getattr``, this admits exactly those look-ups.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = set(HistoryBuffer._statistics_methods) | {'min', 'max', 'mean', 'current'}
    if obj is not HistoryBuffer or name not in allowed:
        raise pickle.UnpicklingError(
            f'getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r}) is not allowed '
            '(only HistoryBuffer statistics methods are)')
    return getattr(obj, name)


def runner_safe_globals() -> list:
    """The globals an mmengine Runner checkpoint needs beyond torch's defaults.

    Measured on checkpoints written by ``tools/train.py`` (mmengine 0.10.7,
    numpy 2): the message hub pickles ``HistoryBuffer`` objects whose
    histories are numpy arrays and whose ``statistics_methods`` table is
    stored as ``getattr(HistoryBuffer, 'mean')`` ..., and numpy scalars (e.g.
    the seed, a logged loss). These pickle as ``builtins.getattr`` (admitted
    only for those look-ups, see :func:`_history_buffer_getattr`),
    ``numpy.core.multiarray._reconstruct`` / ``scalar``, ``numpy.ndarray``,
    ``numpy.dtype`` and the concrete dtype class of each value
    (``numpy.dtypes.Float64DType`` ...). Nothing here can run code:
    reconstructing an array or scalar only copies raw bytes.

    Returns:
        list: Entries for :func:`torch.serialization.safe_globals`.
    """
    global _SAFE_GLOBALS
    if _SAFE_GLOBALS is None:
        import numpy as np
        from mmengine.logging.history_buffer import HistoryBuffer
        try:
            from numpy._core import multiarray
        except ImportError:  # numpy < 2
            from numpy.core import multiarray
        entries: list = [HistoryBuffer, np.ndarray, np.dtype,
                         (_history_buffer_getattr, 'builtins.getattr')]
        # numpy 2 writes ``numpy.core.multiarray`` (1.x compatible) for these;
        # list both spellings under the exact names torch will look up.
        for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
            entries.append((multiarray._reconstruct, f'{mod}._reconstruct'))
            entries.append((multiarray.scalar, f'{mod}.scalar'))
        for kind in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                     np.uint32, np.uint64, np.float16, np.float32, np.float64):
            dtype_cls = type(np.dtype(kind))
            if dtype_cls is not np.dtype:  # numpy >= 1.25: one class per dtype
                entries.append(dtype_cls)
        _SAFE_GLOBALS = entries
    return list(_SAFE_GLOBALS)


def _allowed_global_names() -> set:
    """``module.name`` of every global ``weights_only`` admits right now."""
    from torch import _weights_only_unpickler as wo
    names = set(wo._get_allowed_globals())
    names.update(wo._get_user_allowed_globals())
    return names


_STRING_OPS = {'SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE', 'SHORT_BINSTRING',
               'BINSTRING', 'STRING'}


def _pickles_in(path: str) -> Iterator[bytes]:
    """The pickle streams of a torch file (zip ``data.pkl`` or a legacy file)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith('.pkl'):
                    yield zf.read(name)
    else:
        with open(path, 'rb') as f:
            yield f.read(64 << 20)  # legacy files: the pickles come before the raw storages


def _globals_in_stream(data: bytes, max_pickles: int = 5) -> Iterator[str]:
    """Disassemble (never execute) consecutive pickles and yield their globals."""
    buf = io.BytesIO(data)
    for _ in range(max_pickles):
        memo: Dict[Any, Any] = {}
        pushed: List[Any] = []  # what recent opcodes pushed, strings kept
        try:
            for op, arg, _pos in pickletools.genops(buf):
                name = op.name
                if name == 'GLOBAL':
                    module, _, attr = str(arg).partition(' ')
                    yield f'{module}.{attr}'
                    pushed.append(None)
                elif name == 'STACK_GLOBAL':
                    mod, attr = (pushed[-2:] if len(pushed) >= 2 else [None, None])
                    yield f'{mod}.{attr}' if isinstance(mod, str) and isinstance(attr, str) \
                        else '<a global built at load time>'
                    pushed.append(None)
                elif name in _STRING_OPS:
                    pushed.append(arg)
                elif name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
                    memo[arg] = pushed[-1] if pushed else None
                elif name == 'MEMOIZE':
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif name in ('GET', 'BINGET', 'LONG_BINGET'):
                    pushed.append(memo.get(arg))
                elif op.stack_after:
                    pushed.append(None)
        except Exception:  # not (or no more) pickle data
            return
        if buf.tell() >= len(data):
            return


def first_disallowed_global(path: str) -> Optional[str]:
    """Name the first global of ``path`` that ``weights_only`` loading refuses.

    The file is only disassembled (``pickletools``), never unpickled.

    Args:
        path (str): A torch file (zip or legacy format) or a plain pickle.

    Returns:
        str | None: ``module.name`` of the first refused global, or None if
        every global is allowed (or the file is not a pickle at all).
    """
    from torch import _weights_only_unpickler as wo
    allowed = _allowed_global_names()
    blocked = set(wo._blocklisted_modules)
    try:
        for data in _pickles_in(path):
            for full in _globals_in_stream(data):
                if full.split('.', 1)[0] in blocked or full not in allowed:
                    return full
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return None
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    for line in text.splitlines():
        if 'WeightsUnpickler error:' in line:
            return line.split('WeightsUnpickler error:', 1)[1].strip()
    return text.splitlines()[0] if text else type(err).__name__


def safe_torch_load(path: str, map_location: Any = 'cpu', mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with Runner-checkpoint types allowed.

    Args:
        path (str): Local file.
        map_location: Passed to ``torch.load``. Defaults to ``'cpu'``.
        mmap (bool): Memory-map the tensors of a zip-format file instead of
            reading them (cheap inspection of large files). Ignored for
            legacy-format files. Defaults to False.

    Returns:
        The unpickled object (tensors, containers, numpy values, HistoryBuffers).

    Raises:
        CheckpointError: One line naming the file: not found, refused (with
            the first disallowed global) or unreadable/corrupt.
    """
    if not path or not osp.isfile(path):
        raise CheckpointError(f'checkpoint file not found: {path!r}')
    kwargs = dict(map_location=map_location, weights_only=True)
    if mmap and zipfile.is_zipfile(path):
        kwargs['mmap'] = True
    with torch.serialization.safe_globals(runner_safe_globals()):
        try:
            return torch.load(path, **kwargs)
        except pickle.UnpicklingError as err:
            bad = first_disallowed_global(path)
            what = (f'the global {bad}' if bad else f'more than tensors ({_first_line(err)})')
            raise CheckpointError(
                f'refusing to load {path!r}: it needs {what}, which torch.load(weights_only=True) '
                'does not allow. Only tensors, containers, numpy values and mmengine Runner state '
                'are read; loading a file never runs its code.') from None
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError,
                zipfile.BadZipFile, UnicodeDecodeError) as err:
            detail = f': {_first_line(err)}' if str(err).strip() else ''
            raise CheckpointError(
                f'cannot read checkpoint {path!r} ({type(err).__name__}{detail}). '
                'The file is truncated, corrupt or not a torch checkpoint (re-download or '
                're-create it).') from None


def _is_converted(obj: Any) -> Optional[str]:
    """The converter that wrote ``obj`` (an addp_mm-converted file), if any."""
    if isinstance(obj, Mapping) and isinstance(obj.get('meta'), Mapping):
        conv = obj['meta'].get('converter')
        if isinstance(conv, str):
            return conv
    return None


def load_external_state_dict(path: str,
                             keys: Iterable[str] = ('model', 'state_dict'),
                             map_location: str = 'cpu',
                             reject_converted: bool = False) -> Dict[str, Tensor]:
    """Read a checkpoint safely and return its flat state dict.

    Args:
        path (str): Path of the file given by the user.
        keys (Iterable[str]): Container keys to unwrap, tried in order
            (e.g. ``{'model': ...}`` for MAGE/ADDP releases, ``{'state_dict': ...}``
            for taming/mmengine files). A file whose tensors are top level is
            returned as is. Defaults to ``('model', 'state_dict')``.
        map_location (str): Passed to ``torch.load``. Defaults to ``'cpu'``.
        reject_converted (bool): Refuse a file written by one of
            ``tools/model_converters`` (what a converter must not be given
            twice). Defaults to False.

    Returns:
        dict[str, Tensor]: The state dict.

    Raises:
        CheckpointError: If the file does not exist, is refused by
            :func:`safe_torch_load`, is unreadable, holds no tensors or (with
            ``reject_converted``) is already converted.
    """
    if isinstance(path, str) and '://' in path:
        raise CheckpointError(
            f'{path!r} is a remote name, not a local file (nothing is downloaded at run time). '
            "If it comes from a base config (e.g. mmseg's model.pretrained for a ResNet), set "
            'it to None; otherwise give the local path of the file.')
    if not path or not osp.isfile(path):
        raise CheckpointError(
            f'checkpoint file not found: {path!r}. Pass the local path of an existing file '
            '(nothing is downloaded at run time).')
    obj = safe_torch_load(path, map_location=map_location)
    converter = _is_converted(obj)
    if reject_converted and converter:
        raise CheckpointError(
            f'{path!r} is already converted (written by {converter}); use it as it is, '
            'no conversion is needed.')
    keys = list(keys)
    if isinstance(obj, Mapping):
        for key in keys:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f'{path!r} holds no state dict (looked at top level and under {keys}).')
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def load_from_safe_local(filename: str, map_location: Any = None) -> Any:
    """mmengine ``CheckpointLoader`` scheme for local files (logged as ``safe_local``)."""
    filename = osp.expanduser(filename)
    return safe_torch_load(filename, map_location=map_location)


def load_from_remote_refused(filename: str, map_location: Any = None, *args, **kwargs) -> Any:
    """mmengine ``CheckpointLoader`` scheme for URLs: refused (nothing is downloaded)."""
    raise CheckpointError(
        f'{filename!r} is a remote checkpoint: addp_mm never downloads at run time and reads '
        'only local files with torch.load(weights_only=True). Download it yourself and give '
        'its local path, or set the option to None.')


def install_mmengine_loader() -> None:
    """Make mmengine read every checkpoint through :func:`safe_torch_load`.

    mmengine's ``CheckpointLoader`` serves ``Runner.load_checkpoint``
    (``load_from``), ``Runner.resume`` and ``load_checkpoint``
    (``init_cfg=dict(type='Pretrained')``). Its local-file scheme is replaced
    by the safe loader; its remote schemes (``http://``, ``open-mmlab://``,
    ``torchvision://`` ...), which would download and unpickle without
    restriction, are replaced by a clear refusal. Idempotent.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    for prefix in list(CheckpointLoader._schemes):
        loader = load_from_safe_local if prefix == '' else load_from_remote_refused
        CheckpointLoader.register_scheme(prefix, loader, force=True)
    if '' not in CheckpointLoader._schemes:
        CheckpointLoader.register_scheme('', load_from_safe_local, force=True)


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
