"""Validation of the ``out_indices`` argument of the ADDP encoders."""
import numbers
from typing import Sequence, Tuple, Union

_EXAMPLE = 'e.g. out_indices=-1 or [3, 5, 7, 11]'


def _is_index(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_out_indices(out_indices: Union[int, Sequence[int]], num_layers: int) -> Tuple[int, ...]:
    """Normalise ``out_indices`` (negatives allowed) to sorted block ids.

    Args:
        out_indices (int | Sequence[int]): One block index or a list/tuple of
            them (Python or NumPy integers).
        num_layers (int): Blocks of the encoder.

    Returns:
        tuple[int, ...]: Sorted, distinct, non-negative block ids.

    Raises:
        TypeError: One line if ``out_indices`` is not an int or a list/tuple
            of ints (a dict, a float, a string, a bool ...).
        ValueError: One line naming the valid range if an index is out of it,
            or if the list is empty.
    """
    if _is_index(out_indices):
        out_indices = [out_indices]
    elif not isinstance(out_indices, (list, tuple)):
        raise TypeError(f'out_indices must be an int or a list/tuple of ints, got '
                        f'{type(out_indices).__name__} {out_indices!r}; {_EXAMPLE}')
    out_indices = list(out_indices)
    wrong = [i for i in out_indices if not _is_index(i)]
    if wrong:
        raise TypeError(f'out_indices must hold ints, got {wrong[0]!r} '
                        f'({type(wrong[0]).__name__}) in {out_indices}; {_EXAMPLE}')
    if not out_indices:
        raise ValueError('out_indices is empty; give at least one block index')
    bad = [i for i in out_indices if not -num_layers <= int(i) < num_layers]
    if bad:
        raise ValueError(
            f'out_indices {out_indices} refer to blocks that do not exist: {bad}. The backbone '
            f'has num_layers={num_layers} blocks (valid indices 0..{num_layers - 1} or '
            f'-{num_layers}..-1); e.g. [3, 5, 7, 11] for ViT-B, [7, 11, 15, 23] for ViT-L.')
    return tuple(sorted({int(i) % num_layers for i in out_indices}))
