"""A dataset of ``N`` empty items that drives unconditional sampling in a test loop.

Unconditional generation needs no data, but mmengine's ``TestLoop`` iterates a
dataloader and calls ``model.test_step`` per batch. Each item here is a
placeholder input plus a ``DataSample`` carrying ``sample_idx``; ADDP's
``predict`` ignores the input and the sampler seeds sample ``i`` with
``seed + i``, so results do not depend on the batch size or process count.
"""
from typing import Sequence

import torch
from mmpretrain.registry import DATASETS
from mmpretrain.structures import DataSample
from torch.utils.data import Dataset

__all__ = ['ADDPGenerationDataset']


@DATASETS.register_module()
class ADDPGenerationDataset(Dataset):
    """``num_samples`` placeholder items for generation.

    Args:
        num_samples (int): How many images to generate (the paper uses
            50,000, one per ImageNet val image). Defaults to 50000.
        placeholder_shape (Sequence[int]): Shape of the dummy uint8 input each
            item carries so that the data preprocessor has something to
            stack. Defaults to ``(3, 1, 1)``.
        metainfo (dict, optional): Returned as ``dataset.metainfo``.
        pipeline (list, optional): Ignored; accepted so configs that set a
            pipeline out of habit still build. Defaults to None.
    """

    def __init__(self,
                 num_samples: int = 50000,
                 placeholder_shape: Sequence[int] = (3, 1, 1),
                 metainfo: dict = None,
                 pipeline: list = None) -> None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f'num_samples must be a positive integer, got {num_samples!r}')
        self.num_samples = num_samples
        self.placeholder_shape = tuple(placeholder_shape)
        self._metainfo = dict(metainfo or {}, task='unconditional generation')

    @property
    def metainfo(self) -> dict:
        return dict(self._metainfo)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, idx: int) -> dict:
        if not -self.num_samples <= idx < self.num_samples:
            raise IndexError(idx)
        idx = idx % self.num_samples
        sample = DataSample(metainfo=dict(sample_idx=idx))
        return dict(inputs=torch.zeros(self.placeholder_shape, dtype=torch.uint8), data_samples=sample)
