"""Validation of the ``out_indices`` argument of the ADDP encoders."""
from typing import Sequence, Tuple, Union


def check_out_indices(out_indices: Union[int, Sequence[int]], num_layers: int) -> Tuple[int, ...]:
    """Normalise ``out_indices`` (negatives allowed) to sorted block ids, or
    raise a ValueError naming the valid range."""
    if isinstance(out_indices, int):
        out_indices = [out_indices]
    out_indices = list(out_indices)
    if not out_indices:
        raise ValueError('out_indices is empty; give at least one block index')
    bad = [i for i in out_indices if not -num_layers <= int(i) < num_layers]
    if bad:
        raise ValueError(
            f'out_indices {out_indices} refer to blocks that do not exist: {bad}. The backbone '
            f'has num_layers={num_layers} blocks (valid indices 0..{num_layers - 1} or '
            f'-{num_layers}..-1); e.g. [3, 5, 7, 11] for ViT-B, [7, 11, 15, 23] for ViT-L.')
    return tuple(sorted({int(i) % num_layers for i in out_indices}))
