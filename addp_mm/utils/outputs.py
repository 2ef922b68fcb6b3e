"""Output paths: checked before any work starts, written atomically.

Tools call :func:`check_output_file` / :func:`check_output_dir` right after
parsing their arguments, so an unwritable destination fails in a second with
one line instead of after an evaluation or a sampling run. Files are written
to a temporary name in the same folder and renamed into place
(:func:`atomic_write`), so an interrupted run never leaves a half-written file
under the final name, and the file gets the permissions the umask gives
(0644 under umask 022), as a plain ``open`` would. Folders of files are staged
in ``<path>.partial`` (:func:`staged_dirs`): it starts empty, is removed if the
run fails and is moved into place by :func:`publish_dir` when it succeeds, so a
failed run never adds a file to a later one.
"""
import contextlib
import os
import os.path as osp
import shutil
import tempfile
from typing import Any, Iterator, List, Optional


class OutputError(ValueError):
    """An output path cannot be written."""


def _nearest_existing(path: str) -> str:
    cur = osp.abspath(path)
    while not osp.exists(cur):
        parent = osp.dirname(cur)
        if parent == cur:
            break
        cur = parent
    return cur


def _probe_writable(folder: str, what: str, path: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=folder)
    except OSError as err:
        raise OutputError(f'{what} {path!r} is not writable: cannot create files in '
                          f'{folder!r} ({err.strerror or err}). Choose another path.') from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str, what: str = 'output folder') -> None:
    """Fail now if ``path`` cannot be (created and) written as a folder.

    Nothing is created: the nearest existing ancestor must be a writable
    folder, and ``path`` itself, if it exists, must be one.

    Args:
        path (str): The folder.
        what (str): How the user named it (e.g. ``'--show-dir'``), for messages.

    Raises:
        OutputError: With one line naming ``path`` and the reason.
    """
    if not path:
        raise OutputError(f'{what} is empty')
    base = _nearest_existing(path)
    if not osp.isdir(base):
        raise OutputError(f'{what} {path!r} cannot be created: {base!r} is a file, not a folder.')
    _probe_writable(base, what, path)


def check_output_file(path: str, what: str = 'output file') -> None:
    """Fail now if the file ``path`` cannot be written (see :func:`check_output_dir`)."""
    if not path:
        raise OutputError(f'{what} is empty')
    if osp.isdir(path):
        raise OutputError(f'{what} {path!r} is a folder; give a file name.')
    check_output_dir(osp.dirname(osp.abspath(path)), what=f'folder of {what}')


def current_umask() -> int:
    """The process umask (read without changing it where ``/proc`` allows)."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, and set it back at once
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open(path, 'w')`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb') -> Iterator[Any]:
    """Open a temporary file next to ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    The file gets the mode of :func:`new_file_mode` (``mkstemp`` alone would
    give 0600).
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        if hasattr(os, 'fchmod'):
            os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    import torch
    with atomic_write(path) as f:
        torch.save(obj, f)


def partial_dir(path: str) -> str:
    """The staging folder :func:`publish_dir` moves into ``path``."""
    return osp.abspath(path).rstrip(os.sep) + '.partial'


def clear_dir(path: str) -> None:
    """Remove the folder (or file) ``path`` if it exists."""
    if osp.isdir(path) and not osp.islink(path):
        shutil.rmtree(path)
    elif osp.lexists(path):
        os.unlink(path)


@contextlib.contextmanager
def staged_dirs(*paths: Optional[str]) -> Iterator[List[str]]:
    """Fresh staging folders (:func:`partial_dir`) for output folders.

    A staging folder left by an earlier run that was killed is removed on
    entry, so it starts empty; if the block raises (or the process exits with
    an error), the staging folders are removed again. On success they are left
    for :func:`publish_dir`.

    Args:
        *paths (str | None): Output folders; ``None`` entries are skipped.

    Yields:
        list[str]: The staging folder of each given path, in order.
    """
    staging = [partial_dir(p) for p in paths if p]
    for folder in staging:
        clear_dir(folder)
    try:
        yield staging
    except BaseException:
        for folder in staging:
            with contextlib.suppress(OSError):
                clear_dir(folder)
        raise


def publish_dir(staging: str, path: str) -> Optional[str]:
    """Move the files of ``staging`` into ``path`` (renames), then remove ``staging``.

    Returns:
        str | None: ``path`` if anything was moved, else None.
    """
    if not osp.isdir(staging):
        return None
    if not osp.exists(path):
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        os.rename(staging, path)
        return path
    for root, _, files in os.walk(staging):
        rel = osp.relpath(root, staging)
        dst_root = osp.normpath(osp.join(path, rel))
        os.makedirs(dst_root, exist_ok=True)
        for name in files:
            os.replace(osp.join(root, name), osp.join(dst_root, name))
    shutil.rmtree(staging, ignore_errors=True)
    return path
