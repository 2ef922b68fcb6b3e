"""``out_indices`` of the ADDP backbones: a wrong type is refused in one line."""
import numpy as np
import pytest

from addp_mm.models.utils.out_indices import check_out_indices

BAD_TYPES = [{1: 1}, 1.0, '1', '3,5', True, [1, 2.0], (1, '2'), [[1]], None, {1, 2}]


@pytest.mark.parametrize('value', BAD_TYPES, ids=repr)
def test_check_out_indices_refuses_wrong_types(value):
    with pytest.raises(TypeError, match='out_indices must') as exc:
        check_out_indices(value, 12)
    assert '\n' not in str(exc.value) and 'e.g. out_indices=' in str(exc.value)


@pytest.mark.parametrize('value,expect', [
    (-1, (11, )), ([3, 5, 7, 11], (3, 5, 7, 11)), ((11, -1, 2), (2, 11)),
    (np.int64(4), (4, )), ([np.int32(0), -12], (0, ))])
def test_check_out_indices_accepts_ints(value, expect):
    assert check_out_indices(value, 12) == expect


@pytest.mark.parametrize('value', [{1: 1}, 1.5, '1'], ids=repr)
def test_vision_transformer_refuses_wrong_types(value):
    from addp_mm.models.backbones import ADDPVisionTransformer
    with pytest.raises(TypeError, match='out_indices must be an int or a list/tuple of ints'):
        ADDPVisionTransformer(arch='b', out_indices=value)


@pytest.mark.parametrize('value', [{1: 1}, 2.0, '-1'], ids=repr)
def test_vitdet_refuses_wrong_types(value):
    from addp_mm.models.backbones import ADDPViTDetBackbone
    arch = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.)
    with pytest.raises(TypeError, match='out_indices must be an int or a list/tuple of ints'):
        ADDPViTDetBackbone(arch=arch, img_size=64, pretrain_img_size=64, out_indices=value)
