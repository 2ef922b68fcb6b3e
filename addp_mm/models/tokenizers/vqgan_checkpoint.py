"""Reading VQGAN weights: the official checkpoint layout and its mapping onto
:class:`~addp_mm.models.tokenizers.vqgan.VQGANTokenizer` keys (used by the
tokenizer's loader and by the model converters under
``tools/model_converters/``).

Checkpoint formats accepted by
:meth:`~addp_mm.models.tokenizers.vqgan.VQGANTokenizer.load_checkpoint` (all read
with ``torch.load(weights_only=True)`` through
:func:`addp_mm.utils.checkpoint.load_external_state_dict`):

* the official taming/MAGE file ``vqgan_jax_strongaug.ckpt`` with the tensors
  at the top level or under ``'state_dict'`` (``encoder.*``, ``decoder.*``,
  ``quantize.embedding.weight``); ``loss.*`` entries (discriminator /
  perceptual-loss weights of taming training checkpoints) are documented as
  unused and dropped;
* an mmengine checkpoint written by ``tools/model_converters/vqgan_to_mm.py``
  (``{'state_dict': ..., 'meta': ...}``);
* files where the VQGAN sits under a prefix: ``tokenizer.`` (a converted ADDP
  checkpoint) or ``vqgan.`` (the official MAGE / ADDP releases, which embed a
  copy of the tokenizer). Only the keys under that prefix are read, and the
  choice is logged. This happens only when the user points the *tokenizer's*
  ``checkpoint`` at such a file; the token predictor never loads ``vqgan.*``
  (see :mod:`addp_mm.models.target_generators.mage_predictor`).
"""
from typing import Dict, List, Optional, Tuple

from torch import Tensor

from addp_mm.utils.checkpoint import CheckpointError

__all__ = ['convert_vqgan_state_dict', 'VQGAN_UNUSED_PREFIXES']

#: Key prefixes of an official VQGAN file that no computation reads
#: (training-loss / discriminator weights of taming checkpoints).
VQGAN_UNUSED_PREFIXES: Tuple[str, ...] = ('loss.', )

#: Prefixes under which a VQGAN may be stored inside a larger checkpoint, tried
#: in order when the file has no top-level ``encoder.*`` keys.
_VQGAN_CONTAINER_PREFIXES: Tuple[str, ...] = ('tokenizer.', 'vqgan.')


def convert_vqgan_state_dict(
        state_dict: Dict[str, Tensor],
        prefix: Optional[str] = None) -> Tuple[Dict[str, Tensor], List[str], str]:
    """Map an official (or converted) VQGAN state dict onto
    :class:`VQGANTokenizer` keys.

    The official key names are kept one to one, so the mapping only selects
    the right sub-dict and drops documented-unused entries.

    Args:
        state_dict (dict[str, Tensor]): The flat state dict of the file (after
            unwrapping ``'state_dict'``/``'model'``).
        prefix (str, optional): Prefix of the VQGAN keys inside the file, e.g.
            ``'vqgan.'``. ``None`` detects it: top-level ``encoder.*`` keys, else
            ``'tokenizer.'`` (our ADDP checkpoints), else ``'vqgan.'`` (the MAGE
            and ADDP releases). Defaults to None.

    Returns:
        tuple: ``(converted, dropped, prefix)``: the tokenizer state dict, the
        names of the documented-unused keys that were dropped, and the prefix
        that was used.

    Raises:
        CheckpointError: If no VQGAN keys are found.
    """
    if prefix is None:
        if any(k.startswith('encoder.') for k in state_dict):
            prefix = ''
        else:
            prefix = next((p for p in _VQGAN_CONTAINER_PREFIXES
                           if any(k.startswith(p + 'encoder.') for k in state_dict)), None)
            if prefix is None:
                raise CheckpointError(
                    'no VQGAN weights found: expected keys "encoder.*", "decoder.*", '
                    '"quantize.embedding.weight" at the top level (or under "state_dict", '
                    f'"tokenizer." or "vqgan."); the first keys are {list(state_dict)[:5]}. '
                    'Pass the VQGAN file (vqgan_jax_strongaug.ckpt) as the tokenizer checkpoint.')
    converted, dropped = {}, []
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue  # another model's weights inside a bigger file
        name = key[len(prefix):]
        if name.startswith(VQGAN_UNUSED_PREFIXES):
            dropped.append(key)
            continue
        converted[name] = value
    return converted, dropped, prefix
