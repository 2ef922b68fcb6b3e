"""Exact resume: every random state of the training process goes into the checkpoint.

:class:`ADDPRandomStateHook` saves, with each checkpoint, the states of
Python's ``random``, NumPy's global generator, torch's CPU generator and every
CUDA device's generator, for every process of the run. On ``--resume`` it puts
them back at the point where the interrupted run would have gone on:

* iteration-based loops (``IterBasedTrainLoop``): right after mmengine has
  replayed the ``iter`` batches that were already trained. The replay moves
  the data sampler to its position and takes the dataloader workers (seeded
  by mmengine from the run's seed, the worker id and the rank) through the
  same samples, so their random states come out as they were; the replay's
  own draws in the main process (``num_workers=0``) are then overwritten;
* epoch-based loops: at the start of the next epoch, before its dataloader
  iterator is created (that draws the workers' base seed from torch). With
  persistent workers, which would carry their states from epoch to epoch while
  a resumed run starts them afresh, each worker seeds its generators from
  ``(seed, epoch, rank, worker id)`` before the epoch's first sample (a wrapper
  around the dataset's pipeline), and the states are restored at the first
  iteration instead (starting the workers draws from torch once more).

Validation does not move the training stream: the states are put back after
every validation run, so a run resumed from a checkpoint after which the
interrupted run validated still draws the same numbers. The ADDP mask sampler
and mmpretrain's Mixup/CutMix draw from these global generators, so they are
covered.

The hook also records the number of processes, the dataloader workers and
the torch version, and warns on resume when one of them differs (the numbers
drawn then differ as well). A checkpoint loaded with ``load_from`` (weights
only) leaves the random states alone.
"""
import multiprocessing
import random
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

#: Checkpoint key of the saved states.
STATE_KEY = 'addp_random_state'
_FORMAT = 1


def capture_random_state() -> Dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) generators.

    Everything is stored as tensors and plain Python values, so the
    checkpoint still loads with ``torch.load(weights_only=True)``.

    Returns:
        dict: ``python``, ``numpy``, ``torch`` and ``cuda`` entries.
    """
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return dict(
        python=dict(version=int(version), internal=torch.tensor(internal, dtype=torch.int64),
                    gauss_next=gauss_next),
        numpy=dict(kind=str(kind), keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached)),
        torch=torch.get_rng_state(),
        cuda=[s.cpu() for s in cuda])


def restore_random_state(state: Dict[str, Any]) -> List[str]:
    """Put back the states of :func:`capture_random_state`.

    Args:
        state (dict): A captured state.

    Returns:
        list[str]: What could not be restored (CUDA states for a different
        number of devices); empty when everything was.
    """
    py = state['python']
    random.setstate((py['version'], tuple(int(x) for x in py['internal'].tolist()),
                     py['gauss_next']))
    nps = state['numpy']
    np.random.set_state((nps['kind'], nps['keys'].cpu().numpy().astype(np.uint32), nps['pos'],
                         nps['has_gauss'], nps['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    cuda = list(state.get('cuda') or [])
    if not cuda:
        return []
    if not torch.cuda.is_available() or torch.cuda.device_count() != len(cuda):
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f'CUDA generators ({len(cuda)} saved, {have} devices here)']
    torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    return []


class _RestoreAfterReplay:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator`` during the
    loop's replay of the trained batches; after the last replayed batch it
    calls ``on_done`` and hands the loop its iterator back."""

    def __init__(self, loop: Any, replay: int, on_done: Callable[[], None]) -> None:
        self._loop = loop
        self._inner: Iterator = loop.dataloader_iterator
        self._left = replay
        self._on_done = on_done

    def __iter__(self) -> '_RestoreAfterReplay':
        return self

    def __next__(self) -> Any:
        batch = next(self._inner)
        self._left -= 1
        if self._left <= 0:
            self._loop.dataloader_iterator = self._inner
            self._on_done()
        return batch


class _EpochSeededPipeline:
    """A dataset's pipeline that, in a dataloader worker, seeds the worker's
    generators from ``(seed, epoch, rank, worker id)`` before the epoch's first
    sample. Persistent workers then start every epoch from a known state, as
    the fresh workers of a resumed run do.

    Args:
        pipeline (callable): The dataset's pipeline.
        epoch: Shared ``multiprocessing`` value holding the current epoch.
        seed (int): The run's seed.
        rank (int): The process's rank.
    """

    def __init__(self, pipeline: Callable, epoch: Any, seed: int, rank: int) -> None:
        self.pipeline = pipeline
        self._epoch = epoch
        self._seed = int(seed) % 2**32
        self._rank = rank
        self._seen: Optional[int] = None

    def __call__(self, results: dict) -> Any:
        info = torch.utils.data.get_worker_info()
        if info is not None and self._epoch.value != self._seen:
            self._seen = self._epoch.value
            seed = int(np.random.SeedSequence(
                [self._seed, self._seen, self._rank, info.id]).generate_state(1)[0])
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        return self.pipeline(results)

    def __getattr__(self, name: str) -> Any:
        if name.startswith('__') or 'pipeline' not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__['pipeline'], name)

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.pipeline!r})'


def _leaf_datasets(dataset: Any) -> Iterator[Any]:
    """The datasets inside mmengine's dataset wrappers (Concat, Repeat, ...)."""
    if hasattr(dataset, 'datasets'):
        for inner in dataset.datasets:
            yield from _leaf_datasets(inner)
    elif hasattr(dataset, 'dataset') and not hasattr(dataset, 'pipeline'):
        yield from _leaf_datasets(dataset.dataset)
    else:
        yield dataset


def seed_persistent_workers_per_epoch(runner: Any) -> Optional[Any]:
    """Make persistent dataloader workers reseed at every epoch (epoch-based loops).

    Returns:
        The shared epoch value to update at each epoch, or None where the
        train dataloader has no persistent workers (or no pipelines to wrap).
    """
    loader = runner.train_dataloader
    if not (getattr(loader, 'num_workers', 0) and getattr(loader, 'persistent_workers', False)):
        return None
    leaves = list(_leaf_datasets(loader.dataset))
    if not all(callable(getattr(d, 'pipeline', None)) for d in leaves):
        runner.logger.warning(
            'persistent dataloader workers and a dataset without a pipeline: the workers are '
            'not reseeded per epoch, so --resume is not exact for their augmentations')
        return None
    epoch = multiprocessing.RawValue('q', -1)
    for dataset in leaves:
        if not isinstance(dataset.pipeline, _EpochSeededPipeline):
            dataset.pipeline = _EpochSeededPipeline(dataset.pipeline, epoch, runner.seed,
                                                    get_rank())
    return epoch


def _checkpoint_due(runner: Any, by_epoch: bool) -> bool:
    """Whether a checkpoint hook saves at the end of this iteration / epoch."""
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or bool(hook.by_epoch) != by_epoch:
            continue
        if by_epoch:
            due = hook.every_n_epochs(runner, hook.interval, hook.save_begin) or (
                hook.save_last and hook.is_last_train_epoch(runner))
        else:
            due = hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or (
                hook.save_last and hook.is_last_train_iter(runner))
        if due:
            return True
    return False


@HOOKS.register_module()
class ADDPRandomStateHook(Hook):
    """Save all random states with each checkpoint and restore them on resume.

    ``tools/train.py`` adds it to every config as ``default_hooks.random_state``;
    set that entry to None to leave it out. See the module docstring for what is
    restored where.
    """

    priority = 'HIGHEST'

    def __init__(self) -> None:
        self._pending: Optional[Dict[str, Any]] = None  # to restore after a resume
        self._restore_after_replay = False
        self._restore_at_first_iter = False
        self._epoch: Any = None  # shared epoch value of persistent workers
        self._before_val: Optional[Dict[str, Any]] = None
        self._gathered: Optional[List[Dict[str, Any]]] = None

    # ------------------------------------------------------------------ saving
    def _gather_if_due(self, runner: Any, by_epoch: bool) -> None:
        """Every process's states, gathered where a checkpoint follows (the
        checkpoint is written by rank 0 only)."""
        self._gathered = None
        if get_world_size() > 1 and _checkpoint_due(runner, by_epoch):
            self._gathered = all_gather_object(capture_random_state())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._gather_if_due(runner, by_epoch=False)

    def after_train_epoch(self, runner) -> None:
        self._gather_if_due(runner, by_epoch=True)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        states = self._gathered
        if states is None or len(states) != get_world_size():
            # one process; or a save no gather foresaw (e.g. a best checkpoint)
            states = [self._before_val or capture_random_state()]
        loader = getattr(runner, 'train_dataloader', None)
        checkpoint[STATE_KEY] = dict(
            format=_FORMAT, world_size=get_world_size(), ranks=states,
            num_workers=int(getattr(loader, 'num_workers', 0) or 0),
            torch_version=str(torch.__version__))

    # --------------------------------------------------------------- restoring
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):
            return  # load_from: weights only
        saved = checkpoint.get(STATE_KEY) if isinstance(checkpoint, dict) else None
        if not isinstance(saved, dict) or saved.get('format') != _FORMAT:
            runner.logger.warning(
                'the checkpoint holds no random states (written without ADDPRandomStateHook): '
                'the resumed run draws other random numbers than the interrupted one would have')
            return
        self._warn_differences(runner, saved)
        ranks = saved.get('ranks') or []
        if len(ranks) != get_world_size():
            runner.logger.warning(
                f'the checkpoint holds the random states of {len(ranks)} process(es) and this '
                f'run has {get_world_size()}: random states are not restored')
            return
        self._pending = ranks[get_rank()]

    @staticmethod
    def _warn_differences(runner: Any, saved: dict) -> None:
        loader = getattr(runner, 'train_dataloader', None)
        now = dict(num_workers=int(getattr(loader, 'num_workers', 0) or 0),
                   torch_version=str(torch.__version__))
        for key, value in now.items():
            if key in saved and saved[key] != value:
                runner.logger.warning(
                    f'resuming with {key}={value} where the checkpoint was written with '
                    f'{key}={saved[key]}: the run goes on, but not bit for bit as it would have')

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        iter_based = hasattr(loop, 'dataloader_iterator')
        if not iter_based:
            self._epoch = seed_persistent_workers_per_epoch(runner)
        if self._pending is None:
            return
        if iter_based and loop.iter > 0:
            # IterBasedTrainLoop replays `iter` batches after before_train_epoch
            loop.dataloader_iterator = _RestoreAfterReplay(loop, loop.iter,
                                                           partial(self._restore, runner))
            self._restore_after_replay = True
        elif self._epoch is not None:
            # starting the persistent workers draws their base seed from torch, which the
            # interrupted run did only once; fetching with workers draws nothing here
            self._restore_at_first_iter = True

    def before_train_epoch(self, runner) -> None:
        if self._epoch is not None:
            self._epoch.value = runner.epoch
        if self._pending is not None and not (self._restore_after_replay or
                                              self._restore_at_first_iter):
            self._restore(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._restore_at_first_iter:
            self._restore(runner)

    def _restore(self, runner: Any = None) -> None:
        state, self._pending = self._pending, None
        self._restore_after_replay = self._restore_at_first_iter = False
        if state is None:
            return
        missing = restore_random_state(state)
        if missing and runner is not None:
            runner.logger.warning(f'not restored: {", ".join(missing)}')

    # -------------------------------------------- validation keeps the stream
    def before_val(self, runner) -> None:
        self._before_val = capture_random_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            restore_random_state(self._before_val)
            self._before_val = None


__all__ = ['ADDPRandomStateHook', 'capture_random_state', 'restore_random_state', 'STATE_KEY']
