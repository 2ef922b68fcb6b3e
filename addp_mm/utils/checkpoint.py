"""The one way addp_mm reads checkpoint files.

Policy: every file is read with ``torch.load(..., weights_only=True)``, or,
for a ``.safetensors`` file, with ``safetensors.torch.load_file`` (tensors
only, no unpickling at all). Besides tensors and plain containers, torch's
restricted unpickler admits only the few types an mmengine Runner checkpoint
(``iter_N.pth``, ``epoch_N.pth``) really holds, registered through
:func:`torch.serialization.safe_globals`: mmengine's ``HistoryBuffer`` (the
message hub's logged scalars) and the numpy array, scalar and dtype types their
values are stored as (see :func:`runner_safe_globals`). There is no fallback to
a permissive unpickler, so loading a file never runs code from it. A refused
file gives a one-line :class:`CheckpointError` naming the file and the first
global it would need; a file that is not a checkpoint at all (random bytes, a
truncated archive) is called that.

Remote names (``https://``, ``open-mmlab://``, ``torchvision://`` ...) are
downloaded as mmengine downloads them and then read by the same function
(:mod:`addp_mm.utils.downloads`). :func:`install_mmengine_loader` routes
mmengine's own reads (``load_from``, ``--resume``,
``init_cfg=dict(type='Pretrained')``, ``load_checkpoint``) through it;
importing ``addp_mm`` installs it.
"""
import contextlib
import os
import os.path as osp
import pickle
import zipfile
from typing import Any, Dict, Iterable, Mapping, Optional

import torch
from torch import Tensor

from .errors import CheckpointError
from .pickle_scan import first_disallowed_global, is_malformed_pickle
from .state_dict import (DEFAULT_FIT_HINT, check_state_dict, load_state_dict_strict,  # noqa: F401
                         state_dict_problems, strip_prefix)

__all__ = ['CheckpointError', 'runner_safe_globals', 'first_disallowed_global', 'is_safetensors',
           'safe_torch_load', 'project_checkpoint_kind', 'read_checkpoint', 'load_remote',
           'load_external_state_dict', 'install_mmengine_loader', 'strip_prefix',
           'state_dict_problems', 'check_state_dict', 'load_state_dict_strict']




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


def _first_line(err: BaseException, limit: int = 160) -> str:
    """The informative first line of an error (torch's unpickler reason if any)."""
    text = str(err).strip()
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1].strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)
    return line if len(line) <= limit else line[:limit].rsplit(' ', 1)[0] + ' ...'


def is_safetensors(path: str) -> bool:
    """Whether ``path`` is (named or laid out as) a ``.safetensors`` file.

    A safetensors file starts with the little-endian length of its JSON
    header, then ``{``; a torch file starts with ``PK`` (zip) or a pickle
    protocol byte, so the two cannot be confused.
    """
    if str(path).endswith('.safetensors'):
        return True
    try:
        with open(path, 'rb') as f:
            head = f.read(9)
        size = osp.getsize(path)
    except OSError:
        return False
    header_len = int.from_bytes(head[:8], 'little') if len(head) == 9 else 0
    return head[8:9] == b'{' and 2 <= header_len <= size - 8


def _safetensors_load(path: str, map_location: Any) -> Dict[str, Tensor]:
    from safetensors.torch import load_file
    device = map_location if isinstance(map_location, (str, torch.device)) else 'cpu'
    try:
        return load_file(path, device=str(device))
    except Exception as err:  # SafetensorError, OSError, ValueError, ...: all unreadable
        raise CheckpointError(
            f'cannot read checkpoint {path!r}: not a checkpoint: unreadable safetensors file '
            f'({type(err).__name__}: {_first_line(err)}). It is truncated or corrupt; '
            're-download or re-create it.') from None


def _unreadable(path: str, err: BaseException) -> CheckpointError:
    detail = f': {_first_line(err)}' if str(err).strip() else ''
    kind = 'zip' if zipfile.is_zipfile(path) else 'pickle/zip'
    return CheckpointError(
        f'cannot read checkpoint {path!r}: not a checkpoint: unreadable {kind} '
        f'({type(err).__name__}{detail}). The file is truncated, corrupt or not a torch '
        'checkpoint (re-download or re-create it).')


def safe_torch_load(path: str, map_location: Any = 'cpu', mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with Runner-checkpoint types allowed.

    A ``.safetensors`` file (see :func:`is_safetensors`) is read with
    ``safetensors.torch.load_file`` and gives its flat state dict.

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
            the first disallowed global) or not a checkpoint (unreadable).
    """
    if not path or not osp.isfile(path):
        raise CheckpointError(f'checkpoint file not found: {path!r}')
    if is_safetensors(path):
        return _safetensors_load(path, map_location)
    kwargs = dict(map_location=map_location, weights_only=True)
    if mmap and zipfile.is_zipfile(path):
        kwargs['mmap'] = True
    with torch.serialization.safe_globals(runner_safe_globals()):
        try:
            return torch.load(path, **kwargs)
        except pickle.UnpicklingError as err:
            bad = first_disallowed_global(path)
            if bad is None and is_malformed_pickle(path):
                raise _unreadable(path, err) from None
            what = (f'the global {bad}' if bad else f'more than tensors ({_first_line(err)})')
            raise CheckpointError(
                f'refusing to load {path!r}: it needs {what}, which torch.load(weights_only=True) '
                'does not allow. Only tensors, containers, numpy values and mmengine Runner state '
                'are read; loading a file never runs its code.') from None
        except Exception as err:  # noqa: B902 - torch raises many types on corrupt input
            raise _unreadable(path, err) from None


def _safetensors_converter(path: str) -> Optional[str]:
    """The converter recorded in a ``.safetensors`` file's metadata, if any."""
    import json

    from safetensors import safe_open
    try:
        with safe_open(path, framework='pt') as f:
            meta = json.loads((f.metadata() or {}).get('addp_mm_meta', 'null'))
    except Exception:  # noqa: B902 - unreadable metadata: not one of ours
        return None
    return meta.get('converter') if isinstance(meta, dict) else None


def project_checkpoint_kind(obj: Any) -> Optional[str]:
    """What wrote ``obj`` if this project did: a converter or ``tools/train.py``.

    Returns:
        str | None: ``'written by <converter>'`` for a converted file,
        ``'a Runner checkpoint written by tools/train.py'`` for a training
        checkpoint (``meta`` with ``epoch``/``iter`` and a ``state_dict``),
        else None.
    """
    if not isinstance(obj, Mapping) or not isinstance(obj.get('meta'), Mapping):
        return None
    meta = obj['meta']
    if isinstance(meta.get('converter'), str):
        return f'already converted, written by {meta["converter"]}'
    if 'iter' in meta and 'epoch' in meta and isinstance(obj.get('state_dict'), Mapping):
        return 'a Runner checkpoint written by tools/train.py'
    return None


def read_checkpoint(name: str, map_location: Any = 'cpu', mmap: bool = False) -> Any:
    """Read a local file or a remote name (downloaded first) through :func:`safe_torch_load`.

    Raises:
        CheckpointError: One line: not found, not downloadable, refused or
            unreadable.
    """
    from .downloads import is_remote
    if is_remote(name):
        return load_remote(name, map_location=map_location, mmap=mmap)
    if not name or not osp.isfile(osp.expanduser(name)):
        raise CheckpointError(
            f'checkpoint file not found: {name!r}. Give the path of an existing file '
            '(.pth or .safetensors) or a URL (https://, open-mmlab://, ...) to download.')
    return safe_torch_load(osp.expanduser(name), map_location=map_location, mmap=mmap)


def load_remote(name: str, map_location: Any = 'cpu', mmap: bool = False) -> Any:
    """Fetch a remote name (:func:`addp_mm.utils.downloads.fetch`) and read it
    with :func:`safe_torch_load`, like a local file.

    A file fetched by this call that is refused or unreadable is deleted again,
    so nothing hostile or broken stays in the cache.

    Raises:
        CheckpointError: One line naming the remote name.
    """
    import shutil

    from .downloads import fetch
    path, fresh, temporary = fetch(name)
    try:
        obj = safe_torch_load(path, map_location=map_location, mmap=mmap and not temporary)
    except CheckpointError as err:
        if fresh and not temporary:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise CheckpointError(f'{name!r} (fetched to {path!r}): {err}') from None
    finally:
        if temporary:  # a folder of its own (mkdtemp)
            shutil.rmtree(osp.dirname(path), ignore_errors=True)
    if name.lower().startswith('mmcls://'):
        from mmengine.runner.checkpoint import _process_mmcls_checkpoint
        obj = _process_mmcls_checkpoint(obj)
    return obj


def load_external_state_dict(path: str,
                             keys: Iterable[str] = ('model', 'state_dict'),
                             map_location: str = 'cpu',
                             reject_converted: bool = False) -> Dict[str, Tensor]:
    """Read a checkpoint safely and return its flat state dict.

    Args:
        path (str): Path of the file given by the user (``.pth`` or
            ``.safetensors``), or a remote name, downloaded first (see
            :mod:`addp_mm.utils.downloads`).
        keys (Iterable[str]): Container keys to unwrap, tried in order
            (e.g. ``{'model': ...}`` for MAGE/ADDP releases, ``{'state_dict': ...}``
            for taming/mmengine files). A file whose tensors are top level is
            returned as is. Defaults to ``('model', 'state_dict')``.
        map_location (str): Passed to ``torch.load``. Defaults to ``'cpu'``.
        reject_converted (bool): Refuse a file this project wrote (a
            converter's output or a ``tools/train.py`` checkpoint): what a
            converter must not be given. Defaults to False.

    Returns:
        dict[str, Tensor]: The state dict.

    Raises:
        CheckpointError: If the file does not exist, is refused by
            :func:`safe_torch_load`, is unreadable, holds no tensors or (with
            ``reject_converted``) is already an addp_mm checkpoint.
    """
    obj = read_checkpoint(path, map_location=map_location)
    kind = project_checkpoint_kind(obj)
    if kind is None and reject_converted and isinstance(path, str) and osp.isfile(path) \
            and is_safetensors(path):
        converter = _safetensors_converter(path)
        kind = f'already converted, written by {converter}' if converter else None
    if reject_converted and kind:
        raise CheckpointError(
            f'{path!r} is already an addp_mm checkpoint ({kind}); use it as it is (load_from, '
            'tools/test.py, tools/sample.py), no conversion is needed.')
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
    return read_checkpoint(filename, map_location=map_location)


def load_from_safe_remote(filename: str, map_location: Any = None, *args, **kwargs) -> Any:
    """mmengine ``CheckpointLoader`` scheme for remote names (logged as ``safe_remote``)."""
    return load_remote(filename, map_location=map_location)


def load_from_unknown_scheme(filename: str, map_location: Any = None, *args, **kwargs) -> Any:
    """mmengine ``CheckpointLoader`` scheme without a safe reader: refused in one line."""
    raise CheckpointError(
        f'{filename!r}: addp_mm has no safe reader for this scheme (its loader would unpickle '
        'without restriction); download the file and give its local path.')


def install_mmengine_loader() -> None:
    """Make mmengine read every checkpoint through :func:`safe_torch_load`.

    mmengine's ``CheckpointLoader`` serves ``Runner.load_checkpoint``
    (``load_from``), ``Runner.resume`` and ``load_checkpoint``
    (``init_cfg=dict(type='Pretrained')``). Its local-file scheme is replaced
    by the safe loader; its remote schemes (``http://``, ``open-mmlab://``,
    ``torchvision://`` ...) by one that downloads as mmengine does and reads
    the file with the same safe loader
    (:func:`load_from_safe_remote`). A scheme another
    package registered, for which there is no safe reader, is refused with
    one line. Idempotent.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    from .downloads import REMOTE_SCHEMES
    prefixes = set(CheckpointLoader._schemes) | set(REMOTE_SCHEMES) | {''}
    for prefix in prefixes:
        loader = load_from_safe_local if prefix == '' else (
            load_from_safe_remote if prefix in REMOTE_SCHEMES else load_from_unknown_scheme)
        CheckpointLoader.register_scheme(prefix, loader, force=True)
