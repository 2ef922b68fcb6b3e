"""Mixed precision on the CPU.

mmengine's ``AmpOptimWrapper`` refuses to run without CUDA/NPU/MLU. Current
x86 CPUs run bfloat16 matmuls and convolutions much faster than float32
(AMX/AVX-512-BF16), so ``tools/train.py --amp`` on a CPU-only machine switches
to this wrapper. bfloat16 keeps float32's exponent range, so no loss scaling
is needed.
"""
from contextlib import contextmanager
from typing import Iterator

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn


@OPTIM_WRAPPERS.register_module()
class ADDPCPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward runs under ``torch.autocast('cpu')``.

    Args:
        dtype (str): Autocast dtype, ``'bfloat16'`` or ``'float16'``.
            Defaults to ``'bfloat16'``.
        **kwargs: Passed to :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self, dtype: str = 'bfloat16', **kwargs) -> None:
        super().__init__(**kwargs)
        if dtype not in ('bfloat16', 'float16'):
            raise ValueError(f"dtype must be 'bfloat16' or 'float16', got {dtype!r}")
        self.cast_dtype = getattr(torch, dtype)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield
