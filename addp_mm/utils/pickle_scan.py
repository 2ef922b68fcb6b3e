"""Read-only inspection of pickle streams (never unpickled).

Used by :mod:`addp_mm.utils.checkpoint` to name the first global a refused
file needs and to tell a malformed file from a refused one.
"""
import io
import pickletools
import zipfile
from typing import Any, Dict, Iterator, List, Optional


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
    except Exception:  # noqa: B902 - an unreadable archive names no global
        return None
    return None


def is_malformed_pickle(path: str) -> bool:
    """Whether the pickle streams of ``path`` cannot even be disassembled."""
    try:
        for data in _pickles_in(path):
            for _ in pickletools.genops(io.BytesIO(data)):
                pass
    except Exception:  # noqa: B902 - any disassembly failure means malformed
        return True
    return False
