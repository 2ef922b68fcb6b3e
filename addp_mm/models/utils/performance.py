"""Run-time performance switches for ADDP models (no effect on the state dict).

Every switch also exists as a constructor argument, so a config can set it
(e.g. ``model.tokenizer.channels_last=True``); :func:`configure_performance`
flips them on an already built model (used by ``tools/benchmark.py`` and
``tools/gpu_check.sh``), and ``ADDP(performance=...)`` applies a preset or a
dict of switches at build time. Switches left as ``UNSET`` are not touched.

==========================  ===============================================  ==================
switch                      where                                            numerics
==========================  ===============================================  ==================
``sdpa``                    every :class:`~addp_mm.models.layers.Attention`  fp32: ~1e-6
                            (ADDP encoder/decoder, MAGE predictor)
``channels_last``           VQGAN convolutions (``'auto'``: CPU only)        fp32: kernel rounding
``fused_act``               VQGAN SiLU (``F.silu``, in place w/o autograd)   fp32: last bit
``frozen_dtype``            VQGAN + MAGE predictor precision                 bf16: see tests
                            (``'auto'``: bf16 under autocast where native)
``batch_predictor_passes``  ADDP: both predictor passes in one batch         fp32 eval: exact
``skip_fully_masked``       sampler: no encoder / VQ decode while all masked  exact
``compile``                 ``torch.compile`` of the VQGAN and the predictor  kernel rounding
                            (``'auto'``: on CUDA only)
``static_decoder_length``   ADDP decoder padded to the longest sequence the  fp32: ~1e-6
                            mask schedule can give (masked keys), so every
                            training step has the same shapes (``'auto'``:
                            only while the decoder blocks run compiled)
``compile_trainable``       ``torch.compile`` of the ADDP encoder and the    kernel rounding
                            decoder blocks
``sampler_precision``       sampler: autocast over each sampling run          bf16: see tests
                            (``'auto'``: bf16 on CUDA)
==========================  ===============================================  ==================

Presets (:data:`PRESETS`): ``plain`` turns every switch off (the fp32 eager
path of the parity tests); ``fast`` turns on every switch that keeps fp32
numerics; ``auto`` is ``fast`` plus the device-dependent choices (bf16 frozen
parts under AMP on hardware with native bf16, compiled frozen parts, NCHW
VQGAN and bf16 sampling on CUDA, channels-last on CPUs, a padded decoder
where the decoder is compiled). The real-scale
pretraining and generation configs use ``auto``.

The bf16 decisions, the frozen-part precision and the compile helpers live
in :mod:`addp_mm.utils.precision`.
"""
from typing import Dict, Optional, Union

from torch import nn

from addp_mm.models.layers import Attention, set_sdpa
from addp_mm.utils.precision import AUTO, UNSET, Unset

__all__ = ['UNSET', 'AUTO', 'PRESETS', 'configure_performance', 'describe_performance']

#: Named switch sets. ``plain`` is the straightforward fp32 eager path (every
#: switch off); ``fast`` enables every switch that keeps fp32 numerics;
#: ``auto`` adds the device-dependent choices (see the module docstring).
PRESETS: Dict[str, dict] = {
    'plain': dict(sdpa=False, channels_last=False, fused_act=False, frozen_dtype=None,
                  batch_predictor_passes=False, skip_fully_masked=False, compile=False,
                  static_decoder_length=False, compile_trainable=False, sampler_precision=None),
    'fast': dict(sdpa=True, channels_last=True, fused_act=True, frozen_dtype=None,
                 batch_predictor_passes=True, skip_fully_masked=True, compile=False,
                 static_decoder_length=False, compile_trainable=False, sampler_precision=None),
    'auto': dict(sdpa=True, channels_last=AUTO, fused_act=True, frozen_dtype=AUTO,
                 batch_predictor_passes=True, skip_fully_masked=True, compile=AUTO,
                 static_decoder_length=AUTO, compile_trainable=False, sampler_precision=AUTO),
}


# -------------------------------------------------------------------- the switches
def configure_performance(model: nn.Module,
                          sdpa: Union[bool, Unset] = UNSET,
                          channels_last: Union[bool, str, Unset] = UNSET,
                          fused_act: Union[bool, Unset] = UNSET,
                          frozen_dtype: Union[Optional[str], Unset] = UNSET,
                          batch_predictor_passes: Union[bool, Unset] = UNSET,
                          skip_fully_masked: Union[bool, Unset] = UNSET,
                          compile: Union[bool, str, dict, Unset] = UNSET,
                          static_decoder_length: Union[bool, str, Unset] = UNSET,
                          compile_trainable: Union[bool, dict, Unset] = UNSET,
                          sampler_precision: Union[Optional[str], Unset] = UNSET) -> Dict[str, object]:
    """Set performance switches on every matching submodule of ``model``.

    ``sdpa`` goes to every attention layer; ``channels_last``, ``fused_act``,
    ``frozen_dtype`` and ``compile`` to every submodule with a
    ``set_performance(**switches)`` method (the VQGAN tokenizer and the token
    predictor take the ones they have); the others to the submodules (and
    their ``sampler``) that have the attribute.

    Args:
        model (nn.Module): An ADDP model (or any module containing VQGAN /
            MAGE / attention modules).
        sdpa (bool): ``F.scaled_dot_product_attention`` in all attention layers.
        channels_last (bool | str): Channels-last VQGAN convolutions;
            ``'auto'`` = on CPUs only (CUDA's GroupNorm has no channels-last
            kernel and would transpose around every norm).
        fused_act (bool): Fused SiLU in the VQGAN.
        frozen_dtype (str, optional): Precision of the frozen VQGAN and token
            predictor (None = follow the caller's autocast; 'fp32'; 'bf16';
            'auto' = bf16 under autocast where bf16 is native).
        batch_predictor_passes (bool): ADDP runs both predictor passes as one
            batched call (only where the model has that switch).
        skip_fully_masked (bool): The sampler skips the encoder and the VQ
            decode while all tokens are masked.
        compile (bool | str | dict): ``torch.compile`` for the VQGAN
            encoder/decoder and the predictor forward (dict = keyword
            arguments; ``'auto'`` = on CUDA only).
        static_decoder_length (bool | str): ADDP pads its decoder sequence to
            the longest one the mask schedule can give (fixed shapes every
            step); ``'auto'`` = only while the decoder blocks run compiled
            (``compile_trainable``), an eager decoder runs on the real length.
        compile_trainable (bool | dict): ``torch.compile`` of the ADDP encoder
            and the decoder's block stack.
        sampler_precision (str, optional): Autocast of the generation sampler
            (None = the caller's; 'bf16'; 'auto' = bf16 on CUDA).

    Returns:
        dict: The switches that were applied (name -> value), for reports.
    """
    applied: Dict[str, object] = {}
    if sdpa is not UNSET:
        set_sdpa(model, bool(sdpa))
        applied['sdpa'] = bool(sdpa)
    # the frozen parts (VQGAN, token predictor) apply these through their own set_performance
    frozen = {name: value for name, value in (('channels_last', channels_last),
                                               ('fused_act', fused_act),
                                               ('frozen_dtype', frozen_dtype), ('compile', compile))
              if value is not UNSET}
    for m in model.modules():
        if frozen and callable(getattr(m, 'set_performance', None)):
            m.set_performance(**frozen)
        if batch_predictor_passes is not UNSET and hasattr(m, 'batch_predictor_passes'):
            m.batch_predictor_passes = bool(batch_predictor_passes)
            applied['batch_predictor_passes'] = bool(batch_predictor_passes)
        if static_decoder_length is not UNSET and hasattr(m, 'static_decoder_length'):
            value = AUTO if static_decoder_length == AUTO else bool(static_decoder_length)
            m.static_decoder_length = value
            applied['static_decoder_length'] = value
        if compile_trainable is not UNSET and hasattr(m, 'set_compile_trainable'):
            m.set_compile_trainable(compile_trainable)
            applied['compile_trainable'] = compile_trainable
        sampler = getattr(m, 'sampler', None)
        if sampler is not None:
            if skip_fully_masked is not UNSET and hasattr(sampler, 'skip_fully_masked'):
                sampler.skip_fully_masked = bool(skip_fully_masked)
                applied['skip_fully_masked'] = bool(skip_fully_masked)
            if sampler_precision is not UNSET and hasattr(sampler, 'set_precision'):
                sampler.set_precision(sampler_precision)
                applied['sampler_precision'] = sampler_precision
    applied.update(frozen)
    return applied


def describe_performance(model: nn.Module) -> Dict[str, object]:
    """The current switch values found in ``model`` (first occurrence each)."""
    out: Dict[str, object] = {}
    for m in model.modules():
        if isinstance(m, Attention):
            out.setdefault('sdpa', m.use_sdpa)
        elif callable(getattr(m, 'performance_state', None)):
            for name, value in m.performance_state().items():
                out.setdefault(name, value)
        for name in ('batch_predictor_passes', 'static_decoder_length', 'compile_trainable'):
            if hasattr(m, name):
                out.setdefault(name, getattr(m, name))
        sampler = getattr(m, 'sampler', None)
        if sampler is not None:
            if hasattr(sampler, 'skip_fully_masked'):
                out.setdefault('skip_fully_masked', sampler.skip_fully_masked)
            if hasattr(sampler, 'precision'):
                out.setdefault('sampler_precision', sampler.precision)
    return out
