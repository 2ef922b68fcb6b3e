"""Run-time performance switches for ADDP models (no effect on the state dict).

Every switch also exists as a constructor argument, so a config can set it
(e.g. ``model.tokenizer.channels_last=True``); :func:`configure_performance`
flips them on an already built model (used by ``tools/benchmark.py`` and
``tools/gpu_check.sh``). Switches left as ``UNSET`` are not touched.

==========================  ===============================================  ==================
switch                      where                                            numerics
==========================  ===============================================  ==================
``sdpa``                    every :class:`~addp_mm.models.layers.Attention`  fp32: ~1e-6
                            (ADDP encoder/decoder, MAGE predictor)
``channels_last``           VQGAN convolutions                               fp32: kernel rounding
``fused_act``               VQGAN SiLU (``F.silu``, in place w/o autograd)   fp32: last bit
``frozen_dtype``            VQGAN + MAGE predictor precision                 bf16: see tests
``batch_predictor_passes``  ADDP: both predictor passes in one batch         fp32 eval: exact
``skip_fully_masked``       sampler: no encoder / VQ decode while all masked  exact
``compile``                 ``torch.compile`` of the VQGAN and the predictor  kernel rounding
==========================  ===============================================  ==================
"""
from typing import Dict, Optional, Union

from torch import nn

from addp_mm.models.layers import set_sdpa

__all__ = ['UNSET', 'PRESETS', 'configure_performance', 'describe_performance']


class _Unset:

    def __repr__(self) -> str:
        return 'UNSET'


#: Marker for "leave this switch as it is" (``None`` is a valid frozen_dtype).
UNSET = _Unset()

#: Named switch sets. ``plain`` is the straightforward fp32 eager path (every
#: switch off); ``fast`` enables every switch that keeps fp32 numerics.
PRESETS: Dict[str, dict] = {
    'plain': dict(sdpa=False, channels_last=False, fused_act=False, frozen_dtype=None,
                  batch_predictor_passes=False, skip_fully_masked=False, compile=False),
    'fast': dict(sdpa=True, channels_last=True, fused_act=True, frozen_dtype=None,
                 batch_predictor_passes=True, skip_fully_masked=True, compile=False),
}


def configure_performance(model: nn.Module,
                          sdpa: Union[bool, _Unset] = UNSET,
                          channels_last: Union[bool, _Unset] = UNSET,
                          fused_act: Union[bool, _Unset] = UNSET,
                          frozen_dtype: Union[Optional[str], _Unset] = UNSET,
                          batch_predictor_passes: Union[bool, _Unset] = UNSET,
                          skip_fully_masked: Union[bool, _Unset] = UNSET,
                          compile: Union[bool, dict, _Unset] = UNSET) -> Dict[str, object]:
    """Set performance switches on every matching submodule of ``model``.

    Args:
        model (nn.Module): An ADDP model (or any module containing VQGAN /
            MAGE / attention modules).
        sdpa (bool): ``F.scaled_dot_product_attention`` in all attention layers.
        channels_last (bool): Channels-last VQGAN convolutions.
        fused_act (bool): Fused SiLU in the VQGAN.
        frozen_dtype (str, optional): Precision of the frozen VQGAN and token
            predictor (None = follow the caller's autocast; 'fp32'; 'bf16').
        batch_predictor_passes (bool): ADDP runs both predictor passes as one
            batched call (only where the model has that switch).
        skip_fully_masked (bool): The sampler skips the encoder and the VQ
            decode while all tokens are masked.
        compile (bool | dict): ``torch.compile`` for the VQGAN encoder/decoder
            and the predictor forward (dict = keyword arguments).

    Returns:
        dict: The switches that were applied (name -> value), for reports.
    """
    from addp_mm.models.target_generators import MAGETokenPredictor
    from addp_mm.models.tokenizers import VQGANTokenizer
    applied = {}
    if sdpa is not UNSET:
        set_sdpa(model, bool(sdpa))
        applied['sdpa'] = bool(sdpa)
    for m in model.modules():
        if isinstance(m, VQGANTokenizer):
            if channels_last is not UNSET:
                m.set_channels_last(bool(channels_last))
            if fused_act is not UNSET:
                m.set_fused_act(bool(fused_act))
            if frozen_dtype is not UNSET:
                m.set_frozen_dtype(frozen_dtype)
            if compile is not UNSET:
                m.compile, m._compiled = compile, {}
        elif isinstance(m, MAGETokenPredictor):
            if frozen_dtype is not UNSET:
                m.set_frozen_dtype(frozen_dtype)
            if compile is not UNSET:
                m.compile, m._compiled = compile, {}
        if batch_predictor_passes is not UNSET and hasattr(m, 'batch_predictor_passes'):
            m.batch_predictor_passes = bool(batch_predictor_passes)
            applied['batch_predictor_passes'] = bool(batch_predictor_passes)
        sampler = getattr(m, 'sampler', None)
        if skip_fully_masked is not UNSET and sampler is not None and hasattr(sampler, 'skip_fully_masked'):
            sampler.skip_fully_masked = bool(skip_fully_masked)
            applied['skip_fully_masked'] = bool(skip_fully_masked)
    for name, value in (('channels_last', channels_last), ('fused_act', fused_act),
                        ('frozen_dtype', frozen_dtype), ('compile', compile)):
        if value is not UNSET:
            applied[name] = value
    return applied


def describe_performance(model: nn.Module) -> Dict[str, object]:
    """The current switch values found in ``model`` (first occurrence each)."""
    from addp_mm.models.layers import Attention
    from addp_mm.models.tokenizers import VQGANTokenizer
    out: Dict[str, object] = {}
    for m in model.modules():
        if isinstance(m, Attention):
            out.setdefault('sdpa', m.use_sdpa)
        elif isinstance(m, VQGANTokenizer):
            out.setdefault('channels_last', m.channels_last)
            out.setdefault('fused_act', m.fused_act)
            out.setdefault('frozen_dtype', m.frozen_dtype)
            out.setdefault('compile', m.compile)
        if hasattr(m, 'batch_predictor_passes'):
            out.setdefault('batch_predictor_passes', m.batch_predictor_passes)
        sampler = getattr(m, 'sampler', None)
        if sampler is not None and hasattr(sampler, 'skip_fully_masked'):
            out.setdefault('skip_fully_masked', sampler.skip_fully_masked)
    return out
