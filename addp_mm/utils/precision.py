"""Precision and compilation helpers of the run-time performance switches.

The low-level half of :mod:`addp_mm.models.utils.performance`: whether bf16
may be used on a device (:func:`bf16_choice`), the precision of the frozen
parts (:func:`parse_frozen_dtype`, :func:`resolve_frozen_dtype`,
:func:`frozen_precision`) and ``torch.compile`` with an eager fallback
(:func:`compile_enabled`, :func:`maybe_compile`, :class:`LazyCompiled`). It
depends on torch and mmengine only, so the models and the engine (AMP) share
it.

**bf16 on CPUs.** A CPU without native bf16 instructions (no AVX-512 BF16, no
AMX; ``torch.backends.cpu.get_cpu_capability()`` reports ``AVX2`` or less)
emulates bf16 and runs it several times slower than fp32. No automatic
setting (``'auto'``, ``tools/train.py --amp``) chooses bf16 there; the
choice and its reason are logged once. ``ADDP_BF16=1`` in the environment
forces bf16 anyway, ``ADDP_BF16=0`` disables every automatic bf16 choice (see
:func:`bf16_choice`).
"""
import logging
import os
from contextlib import nullcontext
from typing import Callable, ContextManager, Dict, Optional, Tuple, Union

import torch
from mmengine.logging import print_log

__all__ = [
    'UNSET', 'Unset', 'AUTO', 'BF16_ENV', 'FROZEN_DTYPES', 'parse_frozen_dtype',
    'resolve_frozen_dtype', 'frozen_precision', 'maybe_compile', 'compile_enabled', 'LazyCompiled',
    'cpu_bf16_native', 'bf16_choice'
]


class Unset:
    """The type of :data:`UNSET`."""

    def __repr__(self) -> str:
        return 'UNSET'


#: Marker for "leave this switch as it is" (``None`` is a valid frozen_dtype).
UNSET = Unset()

#: The value of a switch that is resolved at run time from the device.
AUTO = 'auto'

#: Environment variable overriding the automatic bf16 decisions: ``1`` forces
#: bf16 where an automatic setting asks for it (also on CPUs without native
#: bf16), ``0`` disables it everywhere.
BF16_ENV = 'ADDP_BF16'


# ----------------------------------------------------------------- bf16 decisions
def _cpu_capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # pragma: no cover - very old torch
        return 'unknown'


def _cpu_flags() -> set:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_native() -> Tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and a short reason.

    Native means AVX-512 BF16 or AMX instructions. ``AVX2`` (or less) as
    torch's CPU capability means bf16 is emulated (several times slower than
    fp32). On an AVX-512 CPU the ``avx512_bf16`` / ``amx_bf16`` feature flags
    decide (torch's own probes when present, else ``/proc/cpuinfo``).
    """
    cap = _cpu_capability()
    if not cap.upper().startswith('AVX512'):
        return False, f'torch CPU capability {cap} (no AVX-512 BF16 / AMX: bf16 is emulated)'
    probes = []
    for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported'):
        fn = getattr(torch.cpu, name, None) or getattr(getattr(torch._C, '_cpu', None), name, None)
        if fn is not None:
            try:
                probes.append(bool(fn()))
            except Exception:  # pragma: no cover
                pass
    if probes:
        native = any(probes)
    else:
        native = bool(_cpu_flags() & {'avx512_bf16', 'amx_bf16'})
    if native:
        return True, f'torch CPU capability {cap} with AVX-512 BF16 / AMX'
    return False, f'torch CPU capability {cap} without AVX-512 BF16 / AMX (bf16 is emulated)'


_LOGGED: set = set()


def _log_once(msg: str) -> None:
    """Log a precision/compile fallback once per process (warning level: the
    user asked for something faster than what runs)."""
    if msg not in _LOGGED:
        _LOGGED.add(msg)
        print_log(msg, logger='current', level=logging.WARNING)


def bf16_choice(device_type: str, what: str = 'bf16', log: bool = True) -> bool:
    """Decide whether an *automatic* setting may use bf16 on ``device_type``.

    ``ADDP_BF16=1`` forces yes and ``ADDP_BF16=0`` forces no; otherwise CUDA
    says yes when ``torch.cuda.is_bf16_supported()``, a CPU when
    :func:`cpu_bf16_native`, anything else no. A "no" (and a forced "yes" on a
    CPU without native bf16) is logged once with its reason.

    Args:
        device_type (str): ``'cuda'``, ``'cpu'``, ...
        what (str): What the decision is for, used in the log line.
            Defaults to ``'bf16'``.
        log (bool): Log the fallback. Defaults to True.

    Returns:
        bool: True to use bf16.
    """
    env = os.environ.get(BF16_ENV, '').strip().lower()
    if env in ('0', 'false', 'no', 'off'):
        if log:
            _log_once(f'{what}: bf16 disabled by {BF16_ENV}={env}; using fp32')
        return False
    forced = env in ('1', 'true', 'yes', 'on', 'force')
    if device_type == 'cuda':
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if not ok and log and not forced:
            _log_once(f'{what}: this GPU has no bf16 support; using fp32 (fp16 for AMP)')
        return ok or forced
    if device_type == 'cpu':
        native, why = cpu_bf16_native()
        if native:
            return True
        if forced:
            if log:
                _log_once(f'{what}: bf16 forced by {BF16_ENV}={env} although {why}')
            return True
        if log:
            _log_once(f'{what}: using fp32 instead of bf16: {why}; set {BF16_ENV}=1 to force bf16')
        return False
    return forced


# --------------------------------------------------------------- frozen precision
#: Precision names accepted by ``frozen_dtype`` (VQGAN and MAGE predictor).
FROZEN_DTYPES: Dict[str, torch.dtype] = {
    'fp32': torch.float32, 'float32': torch.float32,
    'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16,
    'fp16': torch.float16, 'float16': torch.float16,
}


def parse_frozen_dtype(
        frozen_dtype: Optional[Union[str, torch.dtype]]) -> Optional[Union[str, torch.dtype]]:
    """Validate a ``frozen_dtype`` switch: None, ``'auto'``, a name of
    :data:`FROZEN_DTYPES` or a torch float dtype (names become dtypes)."""
    if frozen_dtype is None or isinstance(frozen_dtype, torch.dtype):
        if frozen_dtype is not None and frozen_dtype not in FROZEN_DTYPES.values():
            raise ValueError(f'frozen_dtype {frozen_dtype} is not supported; use one of '
                             f'{sorted(set(FROZEN_DTYPES))}, {AUTO!r} or None')
        return frozen_dtype
    if frozen_dtype == AUTO:
        return AUTO
    if frozen_dtype not in FROZEN_DTYPES:
        raise ValueError(f'frozen_dtype must be None (follow the caller\'s autocast), {AUTO!r} '
                         f'(bf16 under autocast where bf16 is native) or one of '
                         f'{sorted(FROZEN_DTYPES)}, got {frozen_dtype!r}')
    return FROZEN_DTYPES[frozen_dtype]


def resolve_frozen_dtype(setting: Optional[Union[str, torch.dtype]],
                         device_type: str) -> Optional[torch.dtype]:
    """The dtype a frozen module runs at for ``setting`` on ``device_type``.

    ``'auto'`` becomes bf16 while an autocast is active on that device and
    :func:`bf16_choice` allows bf16 there (on CUDA: the GPU supports bf16; on a
    CPU: native bf16), else None (follow the caller: fp32 without autocast).
    An explicit bf16 on a CPU without native bf16 falls back to fp32 with one
    log line unless ``ADDP_BF16=1``.
    """
    if setting == AUTO:
        try:
            autocast_on = torch.is_autocast_enabled(device_type)
        except RuntimeError:  # a device type without autocast (e.g. meta)
            autocast_on = False
        if autocast_on and bf16_choice(device_type, 'frozen_dtype=auto'):
            return torch.bfloat16
        return None
    if setting == torch.bfloat16 and device_type == 'cpu' and \
            not bf16_choice('cpu', "frozen_dtype='bf16'"):
        return torch.float32
    return setting


def frozen_precision(dtype: Optional[torch.dtype], device_type: str) -> ContextManager:
    """Context for running a frozen module at ``dtype``.

    ``None``: no change (the caller's autocast state applies); float32:
    autocast disabled; bf16/fp16: ``torch.autocast(device_type, dtype)``
    (matmuls and convolutions in low precision, norms and softmax in fp32).
    """
    if dtype is None:
        return nullcontext()
    if dtype == torch.float32:
        return torch.autocast(device_type=device_type, enabled=False)
    return torch.autocast(device_type=device_type, dtype=dtype)


# ------------------------------------------------------------------- compilation
def compile_enabled(setting: Union[bool, str, dict], device_type: str) -> bool:
    """Whether a ``compile`` switch asks for compilation on ``device_type``
    (``'auto'``: on CUDA only)."""
    if setting == AUTO:
        return device_type == 'cuda'
    return bool(setting)


def maybe_compile(module: Callable, compile_cfg: Union[bool, str, dict]) -> Callable:
    """``torch.compile(module, **cfg)`` (``True``/``'auto'`` = defaults) or the module."""
    if not compile_cfg:
        return module
    kwargs = {} if compile_cfg in (True, AUTO) else dict(compile_cfg)
    return torch.compile(module, **kwargs)


class LazyCompiled:
    """A callable compiled on its first call, falling back to eager when the
    compilation itself fails (e.g. no C compiler / Triton on the machine).

    The fallback is decided on the first call only and logged once; later
    errors propagate. Kept in plain attributes (not a submodule), so it never
    changes a state dict.

    Args:
        fn (Callable): The eager function or module.
        compile_cfg (bool | str | dict): See :func:`maybe_compile`.
        name (str): Name used in the log line.
        defaults (dict, optional): ``torch.compile`` keyword defaults merged
            under ``compile_cfg``. Defaults to None.
    """

    def __init__(self, fn: Callable, compile_cfg: Union[bool, str, dict], name: str,
                 defaults: Optional[dict] = None) -> None:
        self.fn = fn
        self.name = name
        cfg = dict(defaults or {})
        if isinstance(compile_cfg, dict):
            cfg.update(compile_cfg)
        self.kwargs = cfg
        self.compiled: Optional[Callable] = None
        self.failed = False
        self.calls = 0

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.fn(*args, **kwargs)
        if self.compiled is None:
            self.compiled = torch.compile(self.fn, **self.kwargs)
        self.calls += 1
        if self.calls > 1:
            return self.compiled(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:  # first call: compilation problems
            self.failed = True
            _log_once(f'torch.compile of {self.name} failed ({type(err).__name__}: '
                      f'{str(err).splitlines()[0] if str(err) else ""}); running it eagerly')
            return self.fn(*args, **kwargs)
