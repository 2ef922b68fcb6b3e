"""Remote checkpoints: downloaded as mmengine does, read as a local file is.

A remote name is anything mmengine's ``CheckpointLoader`` has a scheme for:
``http(s)://``, ``torchvision://`` and ``modelzoo://`` (torchvision's model
URLs), ``open-mmlab://`` / ``openmmlab://`` and ``mmcls://`` (mmengine's URL
maps, including ``$MMENGINE_HOME/open_mmlab.json``), ``s3://`` / ``petrel://``
(mmengine's file backends) and ``pavi://``. Names are resolved with mmengine's
own maps; HTTP downloads go where mmengine puts them (torch hub's cache,
``$TORCH_HOME/hub/checkpoints``; rank 0 first in a distributed run), written
under a temporary name and renamed when complete. This module only fetches:
:func:`addp_mm.utils.checkpoint.load_remote` then reads the file with
:func:`~addp_mm.utils.checkpoint.safe_torch_load`, exactly like a local one, so
a hostile file on a server runs nothing, and deletes a fetched file that is
refused or unreadable from the cache again.
"""
import os
import os.path as osp
import re
import tempfile
from typing import Any, Dict, Tuple
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

from .errors import CheckpointError

_REMOTE_RE = re.compile(r'^(\S+:)?[A-Za-z][A-Za-z0-9+.-]*://')


def is_remote(name: Any) -> bool:
    """Whether ``name`` is a remote name (``scheme://...``) rather than a path."""
    return isinstance(name, str) and _REMOTE_RE.match(name) is not None


def cache_dir() -> str:
    """Where HTTP downloads go: mmengine's (torch hub's) checkpoint cache."""
    import torch
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def _download(url: str, name: str) -> Tuple[str, bool]:
    """``(cached path, downloaded now)`` of an ``http(s)://`` URL."""
    import torch
    folder = cache_dir()
    cached = osp.join(folder, osp.basename(urlparse(url).path) or 'checkpoint.pth')
    if osp.isfile(cached):
        return cached, False
    try:
        os.makedirs(folder, exist_ok=True)
        # torch writes <cached>.<uuid>.partial and renames it when complete
        torch.hub.download_url_to_file(url, cached, progress=False)
    except (URLError, OSError, ValueError) as err:
        if isinstance(err, HTTPError):
            reason = f'HTTP {err.code} {err.reason}'
        else:
            reason = str(getattr(err, 'reason', None) or err).splitlines()[0]
        where = f' ({url})' if url != name else ''
        raise CheckpointError(
            f'cannot download {name!r}{where}: {reason or type(err).__name__}. Check the address '
            'and the network, or download the file and give its local path.') from None
    return cached, True


def _download_once(url: str, name: str) -> Tuple[str, bool]:
    """Rank 0 downloads first; the other ranks then read the cached file."""
    from mmengine.dist import barrier, get_dist_info
    rank, world_size = get_dist_info()
    if world_size == 1:
        return _download(url, name)
    result = _download(url, name) if rank == 0 else None
    barrier()
    return result if result is not None else _download(url, name)


def _lookup(table: Dict[str, str], key: str, name: str, what: str) -> str:
    if key not in table:
        raise CheckpointError(f'{name!r}: {key!r} is not a known {what} name (mmengine has '
                              f'{len(table)} of them); check the spelling or give a URL or path.')
    return table[key]


def _from_openmmlab(name: str) -> Tuple[str, bool, bool]:
    from mmengine.runner import checkpoint as mm
    key = name.split('://', 1)[1]
    key = mm.get_deprecated_model_names().get(key, key)
    target = _lookup(mm.get_external_models(), key, name, 'open-mmlab model')
    if target.startswith(('http://', 'https://')):
        return _download_once(target, name) + (False, )
    path = osp.join(mm._get_mmengine_home(), target)
    if not osp.isfile(path):
        raise CheckpointError(f'{name!r} maps to {path!r}, which does not exist.')
    return path, False, False


def _from_backend(name: str) -> Tuple[str, bool, bool]:
    """``s3://`` / ``petrel://``: fetched with mmengine's file backend into a temporary file."""
    from mmengine.fileio import get_file_backend
    try:
        data = get_file_backend(name, backend_args={'backend': 'petrel'}).get(name)
    except Exception as err:  # backend missing or the object cannot be fetched
        raise CheckpointError(f'cannot fetch {name!r}: {type(err).__name__}: '
                              f'{str(err).splitlines()[0] if str(err) else ""}') from None
    folder = tempfile.mkdtemp(prefix='addp_mm_fetch_')
    path = osp.join(folder, osp.basename(name.rstrip('/')) or 'checkpoint.pth')
    with open(path, 'wb') as f:
        f.write(data)
    return path, True, True


def _from_pavi(name: str) -> Tuple[str, bool, bool]:
    try:
        from pavi import modelcloud
    except ImportError:
        raise CheckpointError(f'{name!r} needs the pavi package (pip install pavi).') from None
    model = modelcloud.get(name[len('pavi://'):])
    folder = tempfile.mkdtemp(prefix='addp_mm_fetch_')
    path = osp.join(folder, osp.basename(model.name))
    model.download(path)
    return path, True, True


def fetch(name: str) -> Tuple[str, bool, bool]:
    """The local file behind a remote name.

    Args:
        name (str): A remote name (see the module documentation).

    Returns:
        tuple: ``(path, fetched_now, temporary)``: the local file, whether it
        was fetched by this call (and may be deleted if it is refused), and
        whether it lives in a temporary folder of its own (deleted after reading).

    Raises:
        CheckpointError: One line: unknown scheme or model name, or the
            download failed (unreachable host, HTTP error).
    """
    from mmengine.runner import checkpoint as mm
    scheme = name.split('://', 1)[0].lower()
    if scheme in ('http', 'https'):
        return _download_once(name, name) + (False, )
    if scheme in ('torchvision', 'modelzoo'):
        url = _lookup(mm.get_torchvision_models(), name.split('://', 1)[1], name,
                      'torchvision model')
        return _download_once(url, name) + (False, )
    if scheme in ('open-mmlab', 'openmmlab'):
        return _from_openmmlab(name)
    if scheme == 'mmcls':
        url = _lookup(mm.get_mmcls_models(), name.split('://', 1)[1], name, 'mmcls model')
        return _download_once(url, name) + (False, )
    if scheme.endswith(('s3', 'petrel')):
        return _from_backend(name)
    if scheme == 'pavi':
        return _from_pavi(name)
    raise CheckpointError(f'{name!r}: no safe reader for the scheme {scheme}://; download the '
                          'file and give its local path.')


#: mmengine's remote scheme prefixes (regular expressions, as registered) served by
#: :func:`addp_mm.utils.checkpoint.load_from_safe_remote`
REMOTE_SCHEMES = ('http://', 'https://', 'torchvision://', 'modelzoo://', 'open-mmlab://',
                  'openmmlab://', 'mmcls://', 'pavi://', r'(\S+\:)?s3://', r'(\S+\:)?petrel://')
