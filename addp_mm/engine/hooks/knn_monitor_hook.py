"""Online kNN monitor: a representation metric while pretraining runs.

Every ``interval`` training iterations (and once at the end of training) the
encoder embeds a small labelled *memory* split and a *query* split, both given
as dataloader configs, in eval mode, without gradients, on clean images. A
weighted k-nearest-neighbour classifier on the L2-normalised features (cosine
similarity, each of the ``k`` neighbours votes for its label with weight
``exp(sim / T)``, the protocol of the kNN evaluations of instance
discrimination, DINO and solo-learn; defaults ``k=20``, ``T=0.07``) gives the
top-1 / top-5 accuracy (in %) of the query split.

The values and the wall time of the evaluation go to the runner's message hub
(``knn/top1``, ``knn/top5``, ``knn/time``), to every visualizer backend
(the same json log as the loss, TensorBoard, W&B, ...) at the evaluated
iteration, and one line to the text log.

Features:

* ADDP pretraining models (anything with ``backbone`` and
  ``normalize_pixels``): the pixel encoder on ImageNet-normalised clean images,
  mean of the patch tokens (``pool='avg'``, the linear-probe feature) or the
  cls token (``pool='cls'``).
* Other mmpretrain models: ``model.extract_feat(inputs)``; the last output is
  pooled (spatial mean of ``[B, C, H, W]``, token mean / cls token of
  ``[B, T, D]``, ``[B, D]`` as is).

Distributed runs: every rank embeds its share, features and labels are
gathered and de-duplicated by dataset index (a distributed sampler pads the
last batch with repeated samples), so every rank computes the kNN of exactly
the single-process features. The evaluation is neutral for training: the
module modes are restored exactly, and the Python, NumPy and torch (CPU and
CUDA) random states are saved before and restored after it, so a run with the
hook gives the same losses as one without.
"""
import copy
import random
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dist import all_gather_object, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import Tensor, nn

__all__ = ['ADDPKNNMonitorHook', 'weighted_knn_accuracy', 'extract_features', 'rng_preserved']


# ---------------------------------------------------------------------- kNN
def weighted_knn_accuracy(train_feats: Tensor, train_labels: Tensor, val_feats: Tensor,
                          val_labels: Tensor, k: int = 20, temperature: float = 0.07,
                          topk: Sequence[int] = (1, 5), num_classes: Optional[int] = None,
                          chunk_size: int = 1024) -> Dict[int, float]:
    """Weighted kNN classification accuracy (in %) of ``val`` against ``train``.

    Features are L2-normalised; each of the ``k`` most cosine-similar memory
    samples adds ``exp(sim / temperature)`` to the score of its label; classes
    are ranked by score (ties broken by the lower class id).

    Args:
        train_feats (Tensor): Memory features ``[M, D]``.
        train_labels (Tensor): Memory labels ``[M]`` (int).
        val_feats (Tensor): Query features ``[Q, D]``.
        val_labels (Tensor): Query labels ``[Q]`` (int).
        k (int): Neighbours (clipped to ``M``). Defaults to 20.
        temperature (float): Vote temperature. Defaults to 0.07.
        topk (Sequence[int]): Accuracies to return. Defaults to ``(1, 5)``.
        num_classes (int, optional): Number of classes. Defaults to the
            largest label + 1.
        chunk_size (int): Queries per similarity block (bounds memory).
            Defaults to 1024.

    Returns:
        dict[int, float]: ``{k: top-k accuracy in %}``.
    """
    if train_feats.shape[0] == 0 or val_feats.shape[0] == 0:
        raise ValueError('kNN needs at least one memory and one query sample')
    if k < 1 or temperature <= 0:
        raise ValueError(f'k must be >= 1 and temperature > 0, got k={k}, T={temperature}')
    train_feats = F.normalize(train_feats.float(), dim=1)
    val_feats = F.normalize(val_feats.float(), dim=1)
    train_labels, val_labels = train_labels.long(), val_labels.long()
    if num_classes is None:
        num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    k = min(k, train_feats.shape[0])
    hits = {t: 0 for t in topk}
    for start in range(0, val_feats.shape[0], chunk_size):
        sim = val_feats[start:start + chunk_size] @ train_feats.T  # [q, M]
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        ranked = torch.sort(votes, dim=1, descending=True, stable=True).indices
        correct = ranked == val_labels[start:start + chunk_size, None]
        for t in topk:
            hits[t] += int(correct[:, :t].any(dim=1).sum())
    return {t: 100.0 * hits[t] / val_feats.shape[0] for t in topk}


# ------------------------------------------------------------ RNG neutrality
class rng_preserved:
    """Context manager restoring the Python, NumPy and torch RNG states on exit."""

    def __enter__(self) -> 'rng_preserved':
        self.states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
                       torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)
        return self

    def __exit__(self, *exc) -> None:
        py, np_state, cpu, cuda = self.states
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


class modes_preserved:
    """Context manager: ``model.eval()`` inside, every module's own mode restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        for module, mode in self.modes:
            module.training = mode


# ----------------------------------------------------------------- features
def _pool(out, pool: str, prefix_tokens: int) -> Tensor:
    """Reduce a model output to ``[B, D]`` features."""
    if isinstance(out, (tuple, list)):
        out = out[-1]
    if isinstance(out, (tuple, list)):  # mmpretrain ViT 'cls_token' style nested outputs
        out = out[-1]
    if out.dim() == 4:  # [B, C, H, W]
        return out.mean(dim=(2, 3))
    if out.dim() == 3:  # [B, T, D]
        return out[:, 0] if pool == 'cls' else out[:, prefix_tokens:].mean(dim=1)
    if out.dim() == 2:
        return out
    raise ValueError(f'cannot pool a model output of shape {tuple(out.shape)} to features')


@torch.no_grad()
def embed_batch(model: nn.Module, data_batch: dict, pool: str = 'avg',
                prefix_tokens: int = 1) -> Tensor:
    """``[B, D]`` features of one collated batch (model already in eval mode)."""
    data = model.data_preprocessor(data_batch, False)
    inputs = data['inputs']
    if isinstance(inputs, (list, tuple)):  # self-supervised pre-processors: a list of views
        inputs = inputs[0] if inputs[0].dim() == 4 else torch.stack(list(inputs))
    if hasattr(model, 'normalize_pixels') and hasattr(model, 'backbone'):
        out = model.backbone(model.normalize_pixels(inputs))  # ADDP: the plain pixel encoder
    else:
        out = model.extract_feat(inputs)
    return _pool(out, pool, prefix_tokens).float().cpu()


def _labels_and_indices(data_samples: list, start: int) -> Tuple[List[int], List[int]]:
    labels, indices = [], []
    for i, sample in enumerate(data_samples):
        label = sample.gt_label
        labels.append(int(label.reshape(-1)[0]) if isinstance(label, Tensor) else int(label))
        idx = sample.metainfo.get('sample_idx')
        indices.append(start + i if idx is None else int(idx))
    return labels, indices


def extract_features(model: nn.Module, dataloader, pool: str = 'avg',
                     prefix_tokens: int = 1) -> Tuple[Tensor, Tensor]:
    """Features and labels of a whole (non-shuffled) dataloader, in dataset order.

    In a distributed run each rank embeds its share; the results are gathered
    and de-duplicated by the ``sample_idx`` of the data samples, so every rank
    returns the features of each dataset sample exactly once.

    Returns:
        tuple[Tensor, Tensor]: ``[N, D]`` float features and ``[N]`` labels.
    """
    feats, labels, indices, indexed = [], [], [], True
    for data_batch in dataloader:
        feats.append(embed_batch(model, data_batch, pool, prefix_tokens))
        lab, idx = _labels_and_indices(data_batch['data_samples'], len(indices))
        labels += lab
        indices += idx
        indexed &= all('sample_idx' in s.metainfo for s in data_batch['data_samples'])
    if get_world_size() > 1:
        if not indexed:
            raise ValueError('the kNN monitor needs `sample_idx` in the data samples of a '
                             'distributed run (keep it in PackInputs meta_keys)')
        parts = all_gather_object((torch.cat(feats) if feats else None, labels, indices))
        feats = [p[0] for p in parts if p[0] is not None]
        labels = [x for p in parts for x in p[1]]
        indices = [x for p in parts for x in p[2]]
    feat = torch.cat(feats)
    idx = torch.tensor(indices)
    order = torch.argsort(idx, stable=True)
    keep = torch.ones(len(order), dtype=torch.bool)
    keep[1:] = idx[order][1:] != idx[order][:-1]  # drop the padding repeats
    order = order[keep]
    return feat[order], torch.tensor(labels)[order]


# --------------------------------------------------------------------- hook
def _knn_loader_cfg(cfg: dict, name: str) -> dict:
    """Copy a dataloader config, default to an ordered sampler and stacking
    collate, and refuse shuffling / infinite samplers."""
    cfg = copy.deepcopy(dict(cfg))
    sampler = dict(cfg.get('sampler') or dict(type='DefaultSampler', shuffle=False))
    if sampler.get('type') == 'InfiniteSampler' or sampler.get('shuffle', False):
        raise ValueError(f'{name} of ADDPKNNMonitorHook must not shuffle: use '
                         "sampler=dict(type='DefaultSampler', shuffle=False)")
    sampler.setdefault('shuffle', False)
    cfg['sampler'] = sampler
    cfg.setdefault('collate_fn', dict(type='default_collate'))
    cfg.setdefault('batch_size', 64)
    cfg.setdefault('num_workers', 0)
    return cfg


@HOOKS.register_module()
class ADDPKNNMonitorHook(Hook):
    """Weighted kNN accuracy of the encoder during training (see the module doc).

    Args:
        train_dataloader (dict): Dataloader config of the labelled memory split
            (test pipeline, no shuffling; ``sampler`` defaults to an ordered
            ``DefaultSampler``, ``collate_fn`` to ``default_collate``).
        val_dataloader (dict): Dataloader config of the query split.
        interval (int): Evaluate every ``interval`` training iterations.
            Defaults to 1000.
        k (int): Neighbours. Defaults to 20.
        temperature (float): Vote temperature ``T`` of ``exp(sim / T)``.
            Defaults to 0.07.
        topk (Sequence[int]): Accuracies to log. Defaults to ``(1, 5)``.
        pool (str): ``'avg'`` (mean of the patch tokens) or ``'cls'``.
            Defaults to ``'avg'``.
        prefix_tokens (int): Leading non-patch tokens of a ``[B, T, D]``
            output, skipped by ``'avg'``. Defaults to 1.
        eval_at_start (bool): Also evaluate before the first iteration (step
            0: the encoder as initialised or resumed). Defaults to False.
        eval_at_end (bool): Evaluate after the last iteration (unless it was
            just evaluated). Defaults to True.
        prefix (str): Name prefix of the logged scalars. Defaults to ``'knn'``.
        cache_data (bool): Keep the collated batches of both splits in memory
            after the first evaluation (no image decoding afterwards; for
            small splits with a deterministic pipeline). Defaults to False.
    """

    priority = 'LOW'

    def __init__(self, train_dataloader: dict, val_dataloader: dict, interval: int = 1000,
                 k: int = 20, temperature: float = 0.07, topk: Sequence[int] = (1, 5),
                 pool: str = 'avg', prefix_tokens: int = 1, eval_at_start: bool = False,
                 eval_at_end: bool = True, prefix: str = 'knn', cache_data: bool = False) -> None:
        if interval < 1 or k < 1 or temperature <= 0:
            raise ValueError(f'need interval >= 1, k >= 1 and temperature > 0, got '
                             f'interval={interval}, k={k}, temperature={temperature}')
        if pool not in ('avg', 'cls'):
            raise ValueError(f"pool must be 'avg' or 'cls', got {pool!r}")
        self.loader_cfgs = dict(train=_knn_loader_cfg(train_dataloader, 'train_dataloader'),
                                val=_knn_loader_cfg(val_dataloader, 'val_dataloader'))
        self.interval, self.k, self.temperature = interval, k, temperature
        self.topk = tuple(int(t) for t in topk)
        self.pool, self.prefix_tokens, self.prefix = pool, prefix_tokens, prefix
        self.eval_at_start, self.eval_at_end = eval_at_start, eval_at_end
        self.cache_data = cache_data
        self._loaders: Optional[dict] = None
        self._cache: Dict[str, list] = {}
        self._last_step: Optional[int] = None
        #: ``(step, {name: value})`` of every evaluation of this run
        self.history: List[Tuple[int, Dict[str, float]]] = []

    # ------------------------------------------------------------ triggers
    def before_train(self, runner) -> None:
        if self.eval_at_start:
            self.evaluate(runner, step=runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self.evaluate(runner, step=runner.iter + 1)

    def after_train(self, runner) -> None:
        if self.eval_at_end and self._last_step != runner.iter:
            self.evaluate(runner, step=runner.iter)

    # ---------------------------------------------------------- evaluation
    def _batches(self, runner, name: str):
        """The dataloader of split ``name`` (built once), or its cached batches."""
        if name in self._cache:
            return self._cache[name]
        if self._loaders is None:
            self._loaders = {n: runner.build_dataloader(cfg, seed=runner.seed)
                             for n, cfg in self.loader_cfgs.items()}
        if self.cache_data:
            self._cache[name] = list(self._loaders[name])
            return self._cache[name]
        return self._loaders[name]

    def compute(self, runner) -> Dict[str, float]:
        """Embed both splits and return ``{'<prefix>/top<k>': %, '<prefix>/time': s}``;
        RNG states and module modes are left as they were."""
        t0 = time.perf_counter()
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        with rng_preserved(), modes_preserved(model):
            train = extract_features(model, self._batches(runner, 'train'), self.pool,
                                     self.prefix_tokens)
            val = extract_features(model, self._batches(runner, 'val'), self.pool,
                                   self.prefix_tokens)
        acc = weighted_knn_accuracy(*train, *val, k=self.k, temperature=self.temperature,
                                    topk=self.topk)
        values = {f'{self.prefix}/top{t}': v for t, v in acc.items()}
        values[f'{self.prefix}/time'] = time.perf_counter() - t0
        self._sizes = (len(train[1]), len(val[1]))
        return values

    def evaluate(self, runner, step: int) -> Dict[str, float]:
        """Run :meth:`compute` and publish the values for ``step``."""
        values = self.compute(runner)
        for name, value in values.items():
            runner.message_hub.update_scalar(name, value)
        json_log = next((getattr(h, 'json_log_path', None) for h in runner.hooks
                         if type(h).__name__ == 'LoggerHook'), None)
        kwargs = dict(file_path=json_log) if json_log else {}
        runner.visualizer.add_scalars(values, step=step, **kwargs)
        accs = ' '.join(f'top{t}: {values[f"{self.prefix}/top{t}"]:.2f}' for t in self.topk)
        runner.logger.info(
            f'kNN monitor (k={self.k}, T={self.temperature}) at iter {step}: {accs} '
            f'({self._sizes[0]} memory / {self._sizes[1]} query samples, '
            f'{values[f"{self.prefix}/time"]:.2f} s)')
        self._last_step = step
        self.history.append((step, values))
        return values
