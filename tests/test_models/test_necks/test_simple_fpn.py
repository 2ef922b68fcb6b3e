"""ADDPSimpleFPN: strides 4/8/16/32(/64) from a stride-16 map, exact values for
identity weights, mmpretrain's LN2d in mmdet configs."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models.utils.norm import LayerNorm2d

from addp_mm.models.necks import ADDPSimpleFPN

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.mark.parametrize('hw', [(7, 11), (8, 8), (5, 3)])
def test_strides_and_shapes(hw):
    neck = ADDPSimpleFPN(backbone_channel=32, out_channels=16, num_outs=5)
    assert neck.in_channels == [8, 16, 32, 32]
    x = torch.randn(2, 32, *hw)
    outs = neck((x,))
    h, w = hw
    expect = [(4 * h, 4 * w), (2 * h, 2 * w), (h, w), (h // 2, w // 2),
              ((h // 2 + 1) // 2, (w // 2 + 1) // 2)]
    assert [tuple(o.shape[-2:]) for o in outs] == expect
    assert all(o.shape[:2] == (2, 16) for o in outs)


def _set_identity(neck):
    """Make every 1x1 / 3x3 conv the identity (needs in == out channels)."""
    with torch.no_grad():
        for seq in list(neck.lateral_convs) + list(neck.fpn_convs):
            conv = seq[0]
            conv.weight.zero_()
            k = conv.weight.shape[-1] // 2
            for c in range(conv.weight.shape[0]):
                conv.weight[c, c, k, k] = 1.
            if conv.bias is not None:
                conv.bias.zero_()


def test_values_with_identity_convs():
    neck = ADDPSimpleFPN(backbone_channel=8, in_channels=[8, 8, 8, 8], out_channels=8,
                         num_outs=5, norm_cfg=None)
    _set_identity(neck)
    x = torch.randn(1, 8, 6, 10)
    with torch.no_grad():
        outs = neck([torch.zeros(1, 8, 6, 10), x])  # the last map is used
    assert torch.allclose(outs[2], x, atol=1e-6)
    assert torch.allclose(outs[3], F.max_pool2d(x, 2, 2), atol=1e-6)
    assert torch.allclose(outs[4], outs[3][..., ::2, ::2], atol=1e-6)
    # stride 8: one 2x2 transposed conv, each input pixel -> its own 2x2 block
    deconv = neck.stages[1][0]
    expect = F.conv_transpose2d(x, deconv.weight, deconv.bias, stride=2)
    assert torch.allclose(outs[1], expect, atol=1e-5)


def test_ln2d_matches_layer_norm_over_channels():
    neck = ADDPSimpleFPN(backbone_channel=12, out_channels=6)
    ln = neck.stages[0][1]  # the LN2d after the first deconvolution, eps 1e-6 (ViTDet)
    assert isinstance(ln, LayerNorm2d) and ln.eps == 1e-6
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 6, 3, 5)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), ln.weight, ln.bias, 1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(ln(x), ref, atol=1e-6)


def test_bad_arguments_and_registration():
    with pytest.raises(ValueError, match='unsupported scale factors'):
        ADDPSimpleFPN(backbone_channel=8, scale_factors=(3,))
    with pytest.raises(ValueError, match='expects 8 input channels'):
        ADDPSimpleFPN(backbone_channel=8)(torch.zeros(1, 4, 2, 2))
    from mmdet.registry import MODELS
    assert MODELS.get('ADDPSimpleFPN') is ADDPSimpleFPN
    assert MODELS.get('LN2d') is LayerNorm2d
    from mmcv.cnn import build_norm_layer
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        name, layer = build_norm_layer(dict(type='LN2d', requires_grad=True), 16)
    assert isinstance(layer, LayerNorm2d) and layer.weight.requires_grad and name == 'ln'
