"""Mixed-precision optimizer wrappers (``tools/train.py --amp``).

:class:`ADDPAmpOptimWrapper` replaces mmengine's ``AmpOptimWrapper`` for
ADDP training:

* **bf16 by default where the hardware has it** (``dtype='auto'``): on a GPU
  with bf16 support bf16 autocast without loss scaling (bf16 keeps fp32's
  exponent range), on older GPUs fp16 with a ``GradScaler``; on a CPU bf16
  only when it is native (AVX-512 BF16 / AMX), otherwise fp32 with one log
  line saying why (``ADDP_BF16=1`` forces bf16, ``ADDP_BF16=0`` disables it;
  see :func:`addp_mm.utils.precision.bf16_choice`). mmengine's
  wrapper always builds a ``GradScaler`` and defaults to fp16.
* **No host synchronisation in the step.** mmengine converts the gradient
  norm to a Python float after every clip (and its ``GradScaler`` reads the
  inf flags): both stop the host until the device has finished the backward
  pass. Here the norms stay on the device and are averaged into the
  ``train/grad_norm`` log every ``grad_norm_interval`` updates; bf16 needs no
  scaler at all.
* It also runs on CPU-only machines (mmengine's refuses to), so the same
  config trains everywhere.

Checkpoints stay interchangeable with ``AmpOptimWrapper``/``OptimWrapper``:
the optimizer state is the same; a ``loss_scaler`` entry is written only
when fp16 loss scaling is active and ignored on load when it is not.
"""
from contextlib import contextmanager
from typing import Iterator, Optional, Union

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import Tensor, nn

from addp_mm.utils.precision import bf16_choice

__all__ = ['ADDPAmpOptimWrapper', 'ADDPCPUAmpOptimWrapper', 'resolve_amp_dtype', 'amp_optim_wrapper_cfg']

_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16, 'float16': torch.float16,
           'fp16': torch.float16, 'float32': torch.float32, 'fp32': torch.float32}


def resolve_amp_dtype(dtype: Union[str, torch.dtype], device_type: str) -> torch.dtype:
    """The autocast dtype an AMP wrapper uses on ``device_type``.

    Args:
        dtype (str | torch.dtype): ``'auto'``, ``'bfloat16'``, ``'float16'`` or
            ``'float32'`` (or the torch dtype).
        device_type (str): ``'cuda'`` or ``'cpu'``.

    Returns:
        torch.dtype: ``'auto'`` gives bf16 where :func:`bf16_choice` allows it,
        else fp16 on CUDA and fp32 on a CPU. An explicit bf16 on a CPU without
        native bf16 falls back to fp32 (logged) unless ``ADDP_BF16=1``.
    """
    if isinstance(dtype, str) and dtype != 'auto':
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
        dtype = _DTYPES[dtype]
    if dtype == 'auto':
        if bf16_choice(device_type, 'AMP'):
            return torch.bfloat16
        return torch.float16 if device_type == 'cuda' else torch.float32
    if dtype == torch.bfloat16 and device_type == 'cpu' and not bf16_choice('cpu', 'AMP (bfloat16)'):
        return torch.float32
    return dtype


@OPTIM_WRAPPERS.register_module()
class ADDPAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` with autocast, bf16 by default, sync-free logging.

    Args:
        dtype (str): ``'auto'`` (bf16 where native, see the module docstring),
            ``'bfloat16'``, ``'float16'`` (CUDA; with loss scaling) or
            ``'float32'`` (autocast off). Defaults to ``'auto'``.
        loss_scale (str | float | dict): ``GradScaler`` settings, used only
            when the resolved dtype is fp16: ``'dynamic'``, a static scale or a
            dict of ``GradScaler`` arguments. Defaults to ``'dynamic'``.
        device_type (str, optional): ``'cuda'`` or ``'cpu'``; None takes the
            device of the first parameter being optimised. Defaults to None.
        grad_norm_interval (int): Log the mean gradient norm (``train/grad_norm``)
            every this many clipped updates; reading it waits for the device,
            so 1 gives mmengine's behaviour (one wait per step). Defaults to 10.
        **kwargs: Passed to :class:`mmengine.optim.OptimWrapper` (``optimizer``,
            ``clip_grad``, ``accumulative_counts``).
    """

    def __init__(self,
                 dtype: Union[str, torch.dtype] = 'auto',
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 device_type: Optional[str] = None,
                 grad_norm_interval: int = 10,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if grad_norm_interval < 1:
            raise ValueError(f'grad_norm_interval must be >= 1, got {grad_norm_interval}')
        if device_type is None:
            device_type = next((p.device.type for g in self.optimizer.param_groups
                                for p in g['params']), 'cpu')
        self.device_type = device_type
        self.cast_dtype = resolve_amp_dtype(dtype, device_type)
        self.grad_norm_interval = grad_norm_interval
        self._norm_sum: Optional[Tensor] = None
        self._norm_count = 0
        self._scale_update_param = None
        self.loss_scaler = None
        if self.cast_dtype == torch.float16:
            kw: dict = {}
            if isinstance(loss_scale, (int, float)) and not isinstance(loss_scale, bool):
                self._scale_update_param = float(loss_scale)
                kw = dict(init_scale=float(loss_scale))
            elif isinstance(loss_scale, dict):
                kw = dict(loss_scale)
            elif loss_scale != 'dynamic':
                raise TypeError(f'loss_scale must be "dynamic", a number or a dict, got {loss_scale!r}')
            self.loss_scaler = torch.amp.GradScaler(device_type, **kw)
        print_log(f'{type(self).__name__}: {device_type} autocast '
                  f'{str(self.cast_dtype).replace("torch.", "")}'
                  + (' with dynamic loss scaling' if self.loss_scaler is not None else '')
                  + ('' if self.cast_dtype != torch.float32 else ' (autocast off)'),
                  logger='current')

    # ------------------------------------------------------------- the step
    def backward(self, loss: Tensor, **kwargs) -> None:
        if self.loss_scaler is not None:
            loss = self.loss_scaler.scale(loss)
        loss.backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs) -> None:
        if self.loss_scaler is None:
            super().step(**kwargs)  # clip (if configured) + optimizer.step
            return
        if self.clip_grad_kwargs:
            self.loss_scaler.unscale_(self.optimizer)
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)

    def _clip_grad(self) -> None:
        """Clip like mmengine, but keep the norm on the device (see the class doc)."""
        if self.clip_func is not torch.nn.utils.clip_grad_norm_:
            super()._clip_grad()  # value clipping logs nothing
            return
        params = [p for group in self.optimizer.param_groups for p in group['params']
                  if p.requires_grad and p.grad is not None]
        if not params:
            return
        norm = self.clip_func(params, **self.clip_grad_kwargs).detach()
        self._norm_sum = norm if self._norm_sum is None else self._norm_sum + norm
        self._norm_count += 1
        if self._norm_count >= self.grad_norm_interval:
            self.message_hub.update_scalar('train/grad_norm',
                                           float(self._norm_sum) / self._norm_count)
            self._norm_sum, self._norm_count = None, 0

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        enabled = self.cast_dtype != torch.float32
        with super().optim_context(model), torch.autocast(
                self.device_type, dtype=self.cast_dtype if enabled else None, enabled=enabled,
                cache_enabled=False):
            yield

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.loss_scaler is not None:
            state['loss_scaler'] = self.loss_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        scaler_state = state_dict.pop('loss_scaler', None)
        if scaler_state is not None and self.loss_scaler is not None:
            self.loss_scaler.load_state_dict(scaler_state)
        if 'base_param_settings' in state_dict:
            self.base_param_settings = state_dict.pop('base_param_settings')
        self.optimizer.load_state_dict(state_dict)


@OPTIM_WRAPPERS.register_module()
class ADDPCPUAmpOptimWrapper(ADDPAmpOptimWrapper):
    """:class:`ADDPAmpOptimWrapper` on the CPU with bf16 asked for explicitly
    (kept for configs written for it). Without native bf16 it trains in fp32
    (logged) unless ``ADDP_BF16=1``.

    Args:
        dtype (str): Autocast dtype. Defaults to ``'bfloat16'``.
        **kwargs: Passed to :class:`ADDPAmpOptimWrapper`.
    """

    def __init__(self, dtype: str = 'bfloat16', **kwargs) -> None:
        if dtype not in ('bfloat16', 'float16', 'auto', 'float32'):
            raise ValueError(f"dtype must be 'bfloat16' or 'float16', got {dtype!r}")
        kwargs.setdefault('device_type', 'cpu')
        kwargs.setdefault('grad_norm_interval', 1)
        super().__init__(dtype=dtype, **kwargs)


def amp_optim_wrapper_cfg(optim_wrapper: dict, default_scope: str = 'mmpretrain',
                          amp: bool = True, cuda_available: Optional[bool] = None) -> dict:
    """The optimizer-wrapper config ``tools/train.py`` trains with.

    With ``amp`` (``--amp``), an ``OptimWrapper``/``AmpOptimWrapper`` becomes
    :class:`ADDPAmpOptimWrapper` (``dtype='auto'``) for mmpretrain configs,
    and mmengine's ``AmpOptimWrapper`` for detection/segmentation (mmcv's
    detection/segmentation ops have fp16 but no bf16 kernels). Without CUDA
    an ``AmpOptimWrapper`` (which mmengine refuses to build there) becomes
    :class:`ADDPAmpOptimWrapper` with ``dtype='auto'``.

    Args:
        optim_wrapper (dict): The config's ``optim_wrapper``.
        default_scope (str): The config's ``default_scope``. Defaults to
            ``'mmpretrain'``.
        amp (bool): ``--amp`` was given. Defaults to True.
        cuda_available (bool, optional): Defaults to ``torch.cuda.is_available()``.

    Returns:
        dict: A new config (the input is not changed).

    Raises:
        ValueError: ``amp`` with a wrapper type it cannot convert.
    """
    cfg = type(optim_wrapper)(optim_wrapper) if isinstance(optim_wrapper, dict) else dict(optim_wrapper)
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    wrapper = cfg.get('type', 'OptimWrapper')
    if amp:
        if wrapper not in ('OptimWrapper', 'AmpOptimWrapper', 'ADDPAmpOptimWrapper'):
            raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, got {wrapper!r}')
        if wrapper != 'ADDPAmpOptimWrapper':
            if (default_scope or 'mmpretrain') == 'mmpretrain':
                cfg['type'] = 'ADDPAmpOptimWrapper'
                cfg.setdefault('dtype', 'auto')
            else:
                cfg['type'] = 'AmpOptimWrapper'
            cfg.setdefault('loss_scale', 'dynamic')
    if cfg.get('type') == 'AmpOptimWrapper' and not cuda_available:
        cfg['type'] = 'ADDPAmpOptimWrapper'
        cfg['dtype'] = 'auto'
    return cfg
