"""Key accounting of a state dict against a model: the one strict check.

Every whole-model load (``load_from``, ``--resume``, ``tools/test.py``, the
model index's ``pretrained=``, generation, the converters) refuses a file that
does not fit with the one line :func:`check_state_dict` writes, so each refusal
reads the same.
"""
from typing import Any, Dict, Iterable, List, Mapping

import torch
from torch import Tensor

from .errors import CheckpointError


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> Dict[str, Tensor]:
    """Return the entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


#: The fix named when a checkpoint does not fit (see :func:`check_state_dict`).
DEFAULT_FIT_HINT = 'Check that the model config (sizes, depths, codebook) matches the file.'


def state_dict_problems(module: torch.nn.Module,
                        state_dict: Mapping[str, Any],
                        ignore: Iterable[str] = (),
                        ignore_missing: Iterable[str] = (),
                        max_report: int = 5) -> List[str]:
    """The key accounting of ``state_dict`` against ``module``.

    Args:
        module (nn.Module): The model the weights are meant for.
        state_dict (Mapping): The weights (non-tensor values are skipped).
        ignore (Iterable[str]): Key prefixes that may be missing or extra
            (documented as unused or set by the config). Defaults to ``()``.
        ignore_missing (Iterable[str]): Key prefixes that may only be
            missing. Defaults to ``()``.
        max_report (int): How many offending keys to name. Defaults to 5.

    Returns:
        list[str]: One phrase per problem (shape mismatches, missing keys,
        unexpected keys, too few parameters loaded); empty if it fits.
    """
    ignore = tuple(ignore)
    may_miss = ignore + tuple(ignore_missing)
    sd = {k: v for k, v in state_dict.items() if isinstance(v, Tensor)}
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith(may_miss)]
    unexpected = [k for k in sd if k not in own and not k.startswith(ignore)]
    mismatched = [f'{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}' for k, v in own.items()
                  if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    params = {k: p.numel() for k, p in module.named_parameters()}
    total = sum(params.values())
    loaded = sum(n for k, n in params.items()
                 if k in sd and tuple(sd[k].shape) == tuple(own[k].shape))
    problems = []
    if mismatched:
        problems.append(f'{len(mismatched)} shape mismatch(es) (file vs model), e.g. '
                        + ', '.join(mismatched[:max_report]))
    if missing:
        problems.append(f'{len(missing)} missing key(s) (in the model, missing from the file), '
                        f'e.g. {missing[:max_report]}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected key(s) (in the file, not in the model), '
                        f'e.g. {unexpected[:max_report]}')
    if problems and total and loaded < 0.5 * total:
        problems.append(f'only {100.0 * loaded / total:.1f}% of the parameters would be loaded')
    return problems


def check_state_dict(module: torch.nn.Module,
                     state_dict: Mapping[str, Any],
                     source: str,
                     ignore_unexpected: Iterable[str] = (),
                     max_report: int = 5,
                     ignore_missing: Iterable[str] = (),
                     hint: str = DEFAULT_FIT_HINT) -> None:
    """Strictly compare ``state_dict`` with ``module``'s keys and shapes.

    The one check every whole-model load uses (``load_from``, ``--resume``,
    ``tools/test.py``, ``pretrained=`` of the model index, generation, the
    converters), so each refusal reads the same.

    Args:
        module (nn.Module): The model the weights are meant for.
        state_dict (Mapping[str, Tensor]): The weights.
        source (str): A name for the file, used in messages.
        ignore_unexpected (Iterable[str]): Key prefixes documented as unused,
            which may be present without a counterpart (or absent).
            Defaults to ``()``.
        max_report (int): How many offending keys to name. Defaults to 5.
        ignore_missing (Iterable[str]): Key prefixes that may be absent from
            the file. Defaults to ``()``.
        hint (str): The fix, appended to the message. Defaults to
            :data:`DEFAULT_FIT_HINT`.

    Raises:
        CheckpointError: One line on missing keys, undocumented unexpected
            keys or shape mismatches, naming the first offending keys.
    """
    problems = state_dict_problems(module, state_dict, ignore_unexpected, ignore_missing,
                                   max_report)
    if problems:
        raise CheckpointError(
            f'checkpoint {source} does not fit the model (it does not match '
            f'{type(module).__name__}): ' + '; '.join(problems) + f'. {hint}')


def load_state_dict_strict(module: torch.nn.Module,
                           state_dict: Mapping[str, Tensor],
                           source: str,
                           ignore_unexpected: Iterable[str] = ()) -> None:
    """``check_state_dict`` then load, copying values into ``module``.

    Keys under ``ignore_unexpected`` that the file lacks keep the model's values.
    """
    check_state_dict(module, state_dict, source, ignore_unexpected)
    own = module.state_dict()
    values = {k: v for k, v in own.items() if k not in state_dict}
    values.update({k: v for k, v in state_dict.items() if k in own})
    module.load_state_dict(values, strict=True)
