"""Crash-safe checkpoints: a kill while saving leaves the previous checkpoint intact.

:class:`ADDPCheckpointHook` is mmengine's ``CheckpointHook`` with three
changes to how a checkpoint reaches the disk:

1. the checkpoint file is written to a temporary file in the same folder,
   flushed, fsynced and renamed into place (:class:`ADDPAtomicLocalBackend`,
   through :func:`addp_mm.utils.outputs.atomic_write`), so the final name only
   ever holds a complete file;
2. the ``last_checkpoint`` pointer is written the same way, after the
   checkpoint it names is complete;
3. checkpoints beyond ``max_keep_ckpts`` are removed only after the new one
   and the pointer are in place (mmengine removes them first, so a kill in
   between can leave no checkpoint at all).

Files get the mode the umask gives, like a plain ``open``. Checkpoints to a
remote ``out_dir`` (``s3://`` ...) are written by that storage's backend as
before.
"""
import os
import os.path as osp
from typing import Optional, Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from addp_mm.utils.outputs import atomic_write

#: Name of :class:`ADDPAtomicLocalBackend` in mmengine's file-backend registry.
ATOMIC_BACKEND = 'addp_atomic_local'


class ADDPAtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put`` / ``put_text``.

    The data goes to a temporary file next to ``filepath`` that is flushed,
    fsynced and renamed over ``filepath``; on an error the temporary file is
    removed and ``filepath`` keeps its previous content.
    """

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        with atomic_write(str(filepath), 'wb') as f:
            f.write(obj)

    def put_text(self, obj: str, filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


register_backend(ATOMIC_BACKEND, ADDPAtomicLocalBackend, force=True)


def _is_local(path: Optional[str]) -> bool:
    return path is None or '://' not in str(path)


@HOOKS.register_module()
class ADDPCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that writes checkpoints and ``last_checkpoint`` atomically.

    Takes the arguments of mmengine's ``CheckpointHook``. ``tools/train.py``
    uses it in place of ``CheckpointHook`` for every config.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.backend_args is None and self.file_client_args is None and \
                _is_local(self.out_dir):
            # every checkpoint this hook writes (also the best ones) goes through it
            self.backend_args = dict(backend=ATOMIC_BACKEND)

    def _save_checkpoint_with_step(self, runner, step, meta):
        outdated = self._track_kept(runner, step)
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        with atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
            f.write(str(self.last_ckpt))
        if outdated is not None:
            self._remove_step(outdated)

    def _track_kept(self, runner, step) -> Optional[int]:
        """Record ``step`` among the kept checkpoints; return the step that
        falls out of ``max_keep_ckpts`` (removed once the new one is saved)."""
        if self.max_keep_ckpts <= 0:
            return None
        if self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step:
            return None  # a second save of this step (e.g. the best checkpoint)
        outdated = None
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            outdated = self.keep_ckpt_ids.popleft()
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return outdated

    def _remove_step(self, step) -> None:
        path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step))
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed are folders
            self.file_backend.rmtree(path)


__all__ = ['ADDPAtomicLocalBackend', 'ADDPCheckpointHook', 'ATOMIC_BACKEND']
