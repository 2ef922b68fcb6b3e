"""Writing converted checkpoints as ``.pth`` or ``.safetensors``, atomically.

The converters in ``tools/model_converters`` write ``{'state_dict': ...,
'meta': ...}`` with ``torch.save``, or, with ``--format safetensors`` (or a
``.safetensors`` destination), the same tensors as a flat ``.safetensors`` file
whose metadata holds the ``meta`` dict as JSON under :data:`META_KEY`. Both go
through :func:`addp_mm.utils.outputs.atomic_write`: a temporary file beside the
destination, renamed into place when complete.
"""
import json
from typing import Any, Mapping, Optional

from torch import Tensor

from .errors import CheckpointError
from .outputs import atomic_torch_save, atomic_write

#: The safetensors metadata key that holds a converter's ``meta`` (JSON).
META_KEY = 'addp_mm_meta'
FORMATS = ('pth', 'safetensors')


def resolve_format(path: str, fmt: Optional[str] = None) -> str:
    """The format to write ``path`` in: ``fmt``, else from the extension.

    Raises:
        CheckpointError: If ``fmt`` contradicts the extension (a ``.safetensors``
            name written as a pickle, or the other way round).
    """
    by_ext = 'safetensors' if str(path).endswith('.safetensors') else 'pth'
    if fmt is None:
        return by_ext
    if fmt not in FORMATS:
        raise CheckpointError(f'--format must be one of {FORMATS}, got {fmt!r}')
    if fmt != by_ext:
        want = '.safetensors' if fmt == 'safetensors' else '.pth'
        raise CheckpointError(f'--format {fmt} does not match the destination {path!r}: name it '
                              f'*{want} or drop --format')
    return fmt


def save_converted(state_dict: Mapping[str, Tensor], meta: Mapping[str, Any], path: str,
                   fmt: Optional[str] = None) -> str:
    """Write a converted state dict and its ``meta`` to ``path`` atomically.

    Args:
        state_dict (Mapping[str, Tensor]): The converted weights.
        meta (Mapping): What the converter records (JSON-serialisable; other
            values are written as strings in a ``.safetensors`` file).
        path (str): Destination.
        fmt (str, optional): ``'pth'`` or ``'safetensors'``. Defaults to the
            one the extension names (see :func:`resolve_format`).

    Returns:
        str: The format written.
    """
    fmt = resolve_format(path, fmt)
    if fmt == 'pth':
        atomic_torch_save(dict(state_dict=dict(state_dict), meta=dict(meta)), path)
        return fmt
    save_safetensors(state_dict, path, {
        'format': 'pt',
        META_KEY: json.dumps(dict(meta), default=str, sort_keys=True)
    })
    return fmt


def save_safetensors(tensors: Mapping[str, Tensor], path: str,
                     metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``tensors`` as a ``.safetensors`` file at ``path`` atomically.

    Args:
        tensors (Mapping[str, Tensor]): Flat name -> tensor mapping (copied to
            contiguous CPU tensors; shared storage is allowed in the input).
        path (str): Destination.
        metadata (Mapping[str, str], optional): The file's string metadata.
            Defaults to None.
    """
    from safetensors.torch import save
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    data = save(flat, metadata=dict(metadata) if metadata else None)
    with atomic_write(path) as f:
        f.write(data)
