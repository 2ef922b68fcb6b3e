"""ADDPViTDetBackbone: shapes at odd sizes, window locality, rel-pos, pos-embed,
checkpoint loading with full key accounting, clear errors."""
import pytest
import torch
from helpers.detection import make_encoder_sd, save_official, save_ours

from addp_mm.models.backbones import ADDPViTDetBackbone
from addp_mm.utils.checkpoint import CheckpointError

pytestmark = pytest.mark.usefixtures('one_thread')

TINY = dict(embed_dims=32, num_layers=4, num_heads=2, mlp_ratio=2.)


def tiny(**kw):
    cfg = dict(arch=TINY, img_size=128, pretrain_img_size=64, window_size=3,
               global_attn_indexes=(1, 3), drop_path_rate=0.1)
    cfg.update(kw)
    torch.manual_seed(0)
    m = ADDPViTDetBackbone(**cfg)
    m.init_weights()
    return m.eval()


@pytest.mark.parametrize('hw', [(112, 176), (100, 150), (80, 48), (16, 16)])
def test_output_stride16_shapes_odd_sizes(hw):
    m = tiny(out_indices=(1, -1))
    x = torch.randn(2, 3, *hw)
    outs = m(x)
    h, w = -(-hw[0] // 16), -(-hw[1] // 16)
    assert len(outs) == 2
    for o in outs:
        assert o.shape == (2, 32, h, w)
        assert torch.isfinite(o).all()


def test_window_blocks_are_local_and_global_blocks_are_not():
    # grid 6x6, window 3: patch (0,0) and patch (5,5) are in different windows
    local = tiny(global_attn_indexes=(), use_rel_pos=True)
    glob = tiny(global_attn_indexes=(3,))
    glob.load_state_dict({k: v for k, v in local.state_dict().items() if 'rel_pos' not in k},
                         strict=False)
    x = torch.randn(1, 3, 96, 96)
    x2 = x.clone()
    x2[:, :, :16, :16] += 1.0  # perturb patch (0, 0) only
    with torch.no_grad():
        a, b = local(x)[0], local(x2)[0]
        assert (a[..., 0, 0] - b[..., 0, 0]).abs().max() > 1e-3
        # window (3..5, 3..5) never sees patch (0, 0)
        assert torch.equal(a[..., 3:, 3:], b[..., 3:, 3:])
        # its own window does
        assert (a[..., :3, :3] - b[..., :3, :3]).abs().amax() > 1e-4
        ga, gb = glob(x)[0], glob(x2)[0]
        assert (ga[..., 3:, 3:] - gb[..., 3:, 3:]).abs().amax() > 1e-4


def test_window_padding_keeps_windows_independent():
    # 80 px -> 5x5 grid, window 3 -> padded to 6x6; window (0..2, 0..2) has no padding
    m = tiny(global_attn_indexes=())
    x = torch.randn(1, 3, 80, 80)
    x_out = x.clone()
    x_out[..., 48:, 48:] += 3.0  # patches (3..4, 3..4): outside window (0, 0)
    with torch.no_grad():
        out, out2 = m(x)[0], m(x_out)[0]
    assert out.shape == (1, 32, 5, 5)
    assert torch.equal(out[..., :3, :3], out2[..., :3, :3])
    assert (out[..., 3:, 3:] - out2[..., 3:, 3:]).abs().amax() > 1e-3


def test_zero_rel_pos_is_identity_and_nonzero_changes_output():
    with_rp = tiny(use_rel_pos=True)
    no_rp = tiny(use_rel_pos=False)
    sd = {k: v for k, v in with_rp.state_dict().items() if 'rel_pos' not in k}
    no_rp.load_state_dict(sd)
    x = torch.randn(1, 3, 112, 80)
    with torch.no_grad():
        assert torch.allclose(with_rp(x)[0], no_rp(x)[0], atol=1e-6)
        for n, p in with_rp.named_parameters():
            if 'rel_pos' in n:
                p.normal_(0, 0.5)
        # global blocks were sized for 8x8 (img 128): 7x5 needs interpolated tables
        assert (with_rp(x)[0] - no_rp(x)[0]).abs().max() > 1e-3
    shapes = {n: tuple(p.shape) for n, p in with_rp.named_parameters() if 'rel_pos_h' in n}
    assert shapes['blocks.0.attn.rel_pos_h'] == (5, 16)  # window 3 -> 2*3-1
    assert shapes['blocks.1.attn.rel_pos_h'] == (15, 16)  # global, 128/16=8 -> 15


def test_pos_embed_resized_from_pretraining_grid_without_cls():
    from mmpretrain.models.utils import resize_pos_embed
    m = tiny()
    assert m.pos_embed.shape == (1, 16, 32)  # 64 px pretraining -> 4x4, no cls
    x = torch.randn(1, 3, 96, 128)  # 6x8 grid
    with torch.no_grad():
        tokens, hw = m._embed(x)
        patches = m.patch_embed(x).flatten(2).transpose(1, 2)
        pos = resize_pos_embed(m.pos_embed, (4, 4), (6, 8), 'bicubic', 0)
    assert hw == (6, 8)
    assert torch.allclose(tokens, patches + pos, atol=1e-6)


@pytest.mark.parametrize('fmt', ['ours', 'official'])
def test_load_addp_checkpoint_every_key_accounted(tmp_path, fmt):
    sd = make_encoder_sd(embed_dims=32, depth=4, grid=4)
    path = str(tmp_path / f'{fmt}.pth')
    (save_ours if fmt == 'ours' else save_official)(sd, path)
    m = ADDPViTDetBackbone(arch=TINY, img_size=128, pretrain_img_size=64, window_size=3,
                           global_attn_indexes=(1, 3), pretrained=path)
    m.init_weights()
    rep = m.pretrained_report
    own = set(m.state_dict())
    # every checkpoint key is loaded or deliberately unused; every model key is loaded
    # or a documented fresh parameter
    ignored = {k for k, _ in rep['ignored']}
    assert set(rep['loaded']) | ignored == set(sd)
    assert ignored == {'cls_token', 'norm.weight', 'norm.bias',
                       'tokenizer_norm.weight', 'tokenizer_norm.bias'}
    assert set(rep['loaded']) | set(rep['fresh']) == own
    assert rep['fresh'] and all('rel_pos' in k for k in rep['fresh'])
    msd = m.state_dict()
    for k in rep['loaded']:
        if k != 'pos_embed':
            assert torch.equal(msd[k], sd[k]), k
    assert torch.equal(msd['pos_embed'], sd['pos_embed'][:, 1:])  # cls row dropped


def test_load_resizes_pos_embed_and_keeps_tokenizer_norm(tmp_path):
    from mmpretrain.models.utils import resize_pos_embed
    sd = make_encoder_sd(embed_dims=32, depth=4, grid=4)
    path = save_ours(sd, str(tmp_path / 'c.pth'))
    m = ADDPViTDetBackbone(arch=TINY, img_size=128, pretrain_img_size=96, window_size=3,
                           global_attn_indexes=(1, 3), use_tokenizer_norm=True,
                           init_cfg=dict(type='Pretrained', checkpoint=path))
    m.init_weights()
    expect = resize_pos_embed(sd['pos_embed'][:, 1:], (4, 4), (6, 6), 'bicubic', 0)
    assert torch.allclose(m.pos_embed.data, expect, atol=1e-6)
    assert torch.equal(m.tokenizer_norm.weight.data, sd['tokenizer_norm.weight'])
    assert 'tokenizer_norm.weight' in m.pretrained_report['loaded']


def test_embed_dim_mismatch_is_a_clear_error(tmp_path):
    path = save_ours(make_encoder_sd(embed_dims=48, depth=4), str(tmp_path / 'wide.pth'))
    m = ADDPViTDetBackbone(arch=TINY, img_size=128, pretrain_img_size=64, window_size=3,
                           pretrained=path)
    with pytest.raises(CheckpointError, match=r'embed dim 48.*embed_dims=32'):
        m.init_weights()


def test_depth_mismatch_is_a_clear_error(tmp_path):
    path = save_ours(make_encoder_sd(embed_dims=32, depth=3), str(tmp_path / 'shallow.pth'))
    m = ADDPViTDetBackbone(arch=TINY, img_size=128, pretrain_img_size=64, window_size=3,
                           pretrained=path)
    with pytest.raises(CheckpointError, match=r'3 transformer blocks.*num_layers=4'):
        m.init_weights()


def test_window_size_not_dividing_without_padding_errors():
    # at construction: 128 px -> 8x8 grid, window 3
    with pytest.raises(ValueError, match=r'window_size=3 does not divide the 8x8.*window_padding'):
        ADDPViTDetBackbone(arch=TINY, img_size=128, pretrain_img_size=64, window_size=3,
                           window_padding=False)
    # at run time: built for 96 px (6x6 ok), fed 112x96 (7x6)
    m = ADDPViTDetBackbone(arch=TINY, img_size=96, pretrain_img_size=64, window_size=3,
                           global_attn_indexes=(3,), window_padding=False)
    m(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match=r'window_size=3 does not divide the 7x6 token map'):
        m(torch.randn(1, 3, 112, 96))


def test_bad_out_indices_and_arch():
    with pytest.raises(ValueError, match=r'out_indices .* do not exist: \[4\].*num_layers=4'):
        ADDPViTDetBackbone(arch=TINY, img_size=64, pretrain_img_size=64, out_indices=(4,))
    with pytest.raises(ValueError, match='unknown arch'):
        ADDPViTDetBackbone(arch='xl')


def test_real_size_archs_build_lazily():
    # parameter counts of the real configurations (no forward: keep it cheap)
    b = ADDPViTDetBackbone(arch='b', img_size=1024)
    n = sum(p.numel() for n_, p in b.named_parameters() if 'rel_pos' not in n_)
    D = 768
    block = 4 * D + (3 * D * D + 3 * D) + (D * D + D) + 2 * (4 * D * D) + 4 * D + D
    # patch embed + 16x16 pos embed (no cls row) + 12 blocks; the ADDP encoder's
    # 85.85M (ADDP-B encoder) adds cls token, cls pos row, tokenizer_norm and norm (5 x 768)
    assert n == (D * 3 * 256 + D) + 256 * D + 12 * block
    assert n + 5 * D == pytest.approx(85.85e6, abs=0.01e6)
    assert b.global_attn_indexes == (2, 5, 8, 11)
    assert [blk.window_size for blk in b.blocks][:4] == [14, 14, 0, 14]
    assert b.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)


def test_layer_depth():
    m = tiny()
    assert m.get_layer_depth('backbone.pos_embed', 'backbone.') == (0, 6)
    assert m.get_layer_depth('backbone.patch_embed.proj.weight', 'backbone.') == (0, 6)
    assert m.get_layer_depth('backbone.blocks.0.attn.qkv.weight', 'backbone.') == (1, 6)
    assert m.get_layer_depth('backbone.blocks.3.mlp.fc1.bias', 'backbone.') == (4, 6)
    assert m.get_layer_depth('neck.lateral_convs.0.0.weight', 'backbone.') == (5, 6)


def test_registered_in_all_codebases():
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as PRE
    from mmseg.registry import MODELS as SEG
    for reg in (DET, SEG, PRE):
        assert reg.get('ADDPViTDetBackbone') is ADDPViTDetBackbone


def test_sdpa_path_matches_explicit_attention_with_rel_pos():
    from addp_mm.models.layers import set_sdpa
    m = tiny(use_rel_pos=True)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if 'rel_pos' in n:
                p.normal_(0, 0.3)
        x = torch.randn(1, 3, 112, 80)
        ref = m(x)[0]
        set_sdpa(m, True)
        out = m(x)[0]
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()
