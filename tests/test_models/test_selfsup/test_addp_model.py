"""ADDP algorithm built from the tiny config: frozen parts, trainable set,
optimizer groups, the full-mask case, and the visualisation hook."""
import copy

import pytest
import torch
from helpers.addp import TINY_CFG, make_tiny_frozen_checkpoints, read_key_list
from mmengine.config import Config

import addp_mm  # noqa: F401
from mmpretrain.registry import MODELS


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    torch.set_num_threads(2)
    cfg = Config.fromfile(TINY_CFG)
    tok, tp = make_tiny_frozen_checkpoints(cfg.model, str(tmp_path_factory.mktemp('tiny_ckpt')))
    cfg.model.tokenizer.checkpoint = tok
    cfg.model.token_predictor.checkpoint = tp
    return cfg


def build(cfg, **overrides):
    model_cfg = copy.deepcopy(cfg.model)
    for k, v in overrides.items():
        model_cfg[k].update(v)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def _images(n=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def test_frozen_parts_and_modes(tiny):
    model = build(tiny)
    assert model.num_tokens == 64 and model.token_grid == (8, 8)
    assert model.neck.vocab_size == 64 + 10 + 1  # derived from the config
    frozen = [p for n, p in model.named_parameters() if n.startswith(('tokenizer.', 'token_predictor.'))]
    assert frozen and not any(p.requires_grad for p in frozen)
    model.train()
    assert model.backbone.training and model.neck.training
    assert not model.tokenizer.training and not model.token_predictor.training
    # the release behaviour: predictor dropout active during pretraining
    rel = build(tiny, token_predictor=dict(train_dropout=True))
    rel.train()
    assert rel.token_predictor.training and not rel.tokenizer.training
    rel.eval()
    assert not rel.token_predictor.training
    # the frozen weights come from the given checkpoints
    sd = torch.load(tiny.model.tokenizer.checkpoint, weights_only=True)['state_dict']
    assert torch.equal(model.tokenizer.codebook, sd['quantize.embedding.weight'])


def test_trainable_set_matches_official_minus_unused(tiny):
    model = build(tiny)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(('backbone.', 'neck.')) for n in trainable)
    own = {k for k in read_key_list('addp_vit_base_patch16.txt')
           if not k.startswith(('vqgan.', 'token_predictor.'))}
    unused = {'decoder_pos_embed', 'pos_token_embed', 'pos_mask_embed', 'decoder_pred.weight',
              'decoder_pred.bias'}
    names = {n.split('.', 1)[1] for n in trainable}
    # same names as the official file (up to block count), without the never-read ones
    norm = lambda ks: {k for k in ks if not k.startswith(('blocks.', 'decoder_blocks.'))}  # noqa: E731
    assert norm(names) == norm(own - unused)
    assert {k.split('.', 2)[2] for k in names if k.startswith('blocks.')} == \
        {k.split('.', 2)[2] for k in own if k.startswith('blocks.')}


@pytest.mark.parametrize('full_mask', [False, True])
def test_every_trainable_param_gets_a_gradient(tiny, full_mask):
    """DDP runs without find_unused_parameters: every trainable parameter is in
    the graph, also when m_t masks everything (~2.8% of official batches)."""
    model = build(tiny)
    model.train()
    images = _images()
    if full_mask:
        m_t = torch.ones(2, 64)
        m_n = torch.ones(2, 64)
    else:
        noise = torch.rand(2, 64, generator=torch.Generator().manual_seed(0))
        m_t = model.mask_generator.masks_from_noise(noise, 40)
        m_n = model.mask_generator.masks_from_noise(noise, 48)
    out = model.forward_train_step(images, m_t, m_n, return_intermediates=True)
    assert torch.isfinite(out['loss'])
    out['loss'].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    if full_mask:
        assert out['logits'].shape[1] == 1 + 64
        assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() == 0
    else:
        assert out['logits'].shape[1] == 1 + 64 + int((1 - m_t[0]).sum())
        assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_loss_entry_draws_masks_and_is_seeded(tiny):
    model = build(tiny)
    model.eval()
    x = _images()
    torch.manual_seed(5)
    a = model.loss(x, None)['loss']
    torch.manual_seed(5)
    b = model.loss([x], None)['loss']
    assert torch.equal(a, b)
    # mode='loss' through the data preprocessor (uint8 BGR -> RGB in [0,1])
    data = dict(inputs=(x.flip(1) * 255).round().to(torch.uint8), data_samples=None)
    proc = model.data_preprocessor(data, True)
    torch.testing.assert_close(proc['inputs'][0] if isinstance(proc['inputs'], list)
                               else proc['inputs'], (x * 255).round() / 255)
    feats = model(proc['inputs'], mode='tensor')
    assert feats.shape == (2, 65, 32)


def test_optimizer_groups_weight_decay_and_no_frozen_state(tiny):
    from mmengine.optim import build_optim_wrapper
    model = build(tiny)
    wrapper = build_optim_wrapper(model, copy.deepcopy(tiny.optim_wrapper))
    wd = {}
    id2name = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            wd[id2name[id(p)]] = group['weight_decay']
    # reference ``main_pretrain.py`` (timm param_groups_weight_decay): decay on
    # ndim > 1 except *.bias (mlm_layer.bias is [1,1,V])
    for name in ('backbone.cls_token', 'backbone.pos_embed', 'backbone.patch_embed.proj.weight',
                 'backbone.blocks.0.attn.qkv.weight', 'neck.mask_token', 'neck.token_emb.weight',
                 'neck.decoder_pos_embed_learned', 'neck.decoder_pos_mask_embed',
                 'neck.decoder_pos_token_embed', 'neck.mlm_layer.fc.weight'):
        assert wd[name] == pytest.approx(0.05), name
    for name in ('neck.mlm_layer.bias', 'backbone.blocks.0.attn.qkv.bias', 'backbone.norm.weight',
                 'backbone.tokenizer_norm.weight', 'neck.mlm_layer.ln.weight',
                 'neck.decoder_embed.bias', 'backbone.patch_embed.proj.bias'):
        assert wd[name] == 0., name
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    for name in trainable:
        p = dict(model.named_parameters())[name]
        expected = 0.05 if (p.ndim > 1 and not name.endswith('.bias')) else 0.
        assert wd[name] == pytest.approx(expected), name
    model.train()
    loss = model.loss(_images(), None)['loss']
    wrapper.update_params(loss)
    state_names = {id2name[id(p)] for p in wrapper.optimizer.state}
    assert state_names == set(trainable)


def test_tokens_to_pixels_soft_and_hard(tiny):
    model = build(tiny)
    model.eval()
    z0, _ = model.tokenizer.encode(_images())
    mask = torch.zeros(2, 64)
    mask[:, :10] = 1
    one_hot = torch.nn.functional.one_hot(z0, 64).float()
    with torch.no_grad():
        hard = model.tokenizer.decode_indices(z0)
        # one-hot probabilities at masked positions == the hard decoding
        torch.testing.assert_close(model.tokens_to_pixels(z0, one_hot, mask), hard)
        uniform = torch.full((2, 64, 64), 1 / 64)
        soft = model.tokens_to_pixels(z0, uniform, mask)
        assert (soft - hard).abs().max() > 1e-3
        # the soft latent is the probability-weighted codebook mean
        z_soft = model.tokenizer.codebook.mean(0)
        lat = model.tokenizer.embed(z0)
        lat[:, :, 0, :] = z_soft[None, :, None]
        lat[:, :, 1, :2] = z_soft[None, :, None]
        torch.testing.assert_close(soft, model.tokenizer.decode(lat))


def test_visualization_hook_panels(tiny):
    from addp_mm.engine.hooks import ADDPVisualizationHook
    model = build(tiny)
    model.train()
    hook = ADDPVisualizationHook(interval=1, num_images=2)
    data = dict(inputs=(_images(3) * 255).to(torch.uint8), data_samples=None)
    rows = hook.make_panels(model, data, step=7)
    assert len(rows) == 2 and rows[0].shape == (64, 5 * 64, 3) and rows[0].dtype.name == 'uint8'
    assert model.training and model.backbone.training  # mode restored
    again = hook.make_panels(model, data, step=7)
    assert all((a == b).all() for a, b in zip(rows, again))  # fixed masks per step
    # the x_0 panel is the input image (RGB after the preprocessor's BGR->RGB flip)
    x0 = torch.from_numpy(rows[0][:, :64]).permute(2, 0, 1)
    assert torch.equal(x0, data['inputs'][0].flip(0))


def test_without_reliable_token_conditioning(tiny):
    """The paper's ablation: visible ids reach the prediction only through x_t."""
    images = _images()
    noise = torch.rand(2, 64, generator=torch.Generator().manual_seed(1))
    ref = build(tiny)
    m_t = ref.mask_generator.masks_from_noise(noise, 40)
    m_n = ref.mask_generator.masks_from_noise(noise, 48)
    model = build(tiny, neck=dict(use_reliable_tokens=False))
    # same parameters (checkpoints load either way); two of them are frozen
    assert model.state_dict().keys() == ref.state_dict().keys()
    frozen = {n for n, p in model.neck.named_parameters() if not p.requires_grad}
    assert frozen == {'token_emb.weight', 'decoder_pos_token_embed'}
    model.train()
    out = model.forward_train_step(images, m_t, m_n, return_intermediates=True)
    assert out['logits'].shape[1] == 1 + 64  # nothing appended
    out['loss'].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    # the visible token ids themselves are not read: other ids, same logits
    model.eval()
    ref.eval()
    with torch.no_grad():
        z = out['z0']
        other = (z + 1) % 64
        a = model.predict_logits(out['x_t'], z, m_t)
        b = model.predict_logits(out['x_t'], other, m_t)
        assert torch.equal(a, b)
        # ... while the reference decoder does read them
        assert not torch.allclose(ref.predict_logits(out['x_t'], z, m_t),
                                  ref.predict_logits(out['x_t'], other, m_t))


def test_performance_argument(tiny):
    from addp_mm.models.utils.performance import PRESETS, describe_performance
    model = build(tiny)
    assert describe_performance(model)['sdpa'] is False
    fast_cfg = copy.deepcopy(tiny.model)
    fast_cfg.performance = 'fast'
    torch.manual_seed(0)
    fast = MODELS.build(fast_cfg)
    got = describe_performance(fast)
    for k in ('sdpa', 'channels_last', 'fused_act', 'batch_predictor_passes'):
        assert got[k] == PRESETS['fast'][k], k
    # same parameters and the same deterministic eval-mode predictions (fp32)
    fast.init_weights()
    fast.load_state_dict(model.state_dict())
    model.eval()
    fast.eval()
    noise = torch.rand(2, 64, generator=torch.Generator().manual_seed(2))
    m_t = model.mask_generator.masks_from_noise(noise, 40)
    m_n = model.mask_generator.masks_from_noise(noise, 48)
    with torch.no_grad():
        a = model.forward_train_step(_images(), m_t, m_n)['loss']
        b = fast.forward_train_step(_images(), m_t, m_n)['loss']
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    dict_cfg = copy.deepcopy(tiny.model)
    dict_cfg.performance = dict(sdpa=True)
    assert describe_performance(MODELS.build(dict_cfg))['sdpa'] is True
    for bad, msg in (('fastest', 'unknown performance preset'),
                     (dict(sdpa=True, flash=True), 'unknown performance switch')):
        bad_cfg = copy.deepcopy(tiny.model)
        bad_cfg.performance = bad
        with pytest.raises(ValueError, match=msg):
            MODELS.build(bad_cfg)


def test_frozen_aware_constructor_same_groups_one_log_line(tiny):
    """The configs' constructor builds mmengine's default groups without a
    warning per frozen tensor."""
    import logging

    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper
    assert tiny.optim_wrapper.constructor == 'ADDPFrozenAwareOptimWrapperConstructor'
    model = build(tiny)

    def groups(constructor):
        cfg = copy.deepcopy(tiny.optim_wrapper)
        cfg.constructor = constructor
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logger = MMLogger.get_current_instance()
        logger.addHandler(handler)
        try:
            wrapper = build_optim_wrapper(model, cfg)
        finally:
            logger.removeHandler(handler)
        out = [(tuple(id(p) for p in g['params']), g['lr'], g['weight_decay'])
               for g in wrapper.optimizer.param_groups]
        warnings = [r for r in records if r.levelno >= logging.WARNING]
        return out, warnings, records

    ours, ours_warn, ours_logs = groups('ADDPFrozenAwareOptimWrapperConstructor')
    default, default_warn, _ = groups('DefaultOptimWrapperConstructor')
    assert ours == default
    n_frozen = sum(1 for p in model.parameters() if not p.requires_grad)
    assert len(default_warn) == n_frozen > 50
    assert ours_warn == []
    assert any(f'{n_frozen} frozen parameter tensors' in r.getMessage() for r in ours_logs)


def test_loss_head_is_label_smoothed_soft_cross_entropy_bitwise():
    """The head's registry loss (mmpretrain LabelSmoothLoss, mode='original') gives
    the tensors of the reference's ``F.cross_entropy(..., label_smoothing=0.1)``
    averaged over the masked positions: loss and gradient, bit for bit."""
    import torch.nn.functional as F
    head = MODELS.build(dict(type='ADDPLossHead'))
    g = torch.Generator().manual_seed(0)
    B, N, V, K = 2, 9, 37, 24
    logits = (torch.randn(B, N, V, generator=g) * 3).requires_grad_()
    target = torch.softmax(torch.randn(B, N, K, generator=g) * 2, -1)
    mask = (torch.rand(B, N, generator=g) < 0.6).float()
    loss = head.loss(logits, target, mask)
    per_pos = F.cross_entropy(logits.reshape(B * N, V), F.pad(target, (0, V - K)).reshape(B * N, V),
                              reduction='none', label_smoothing=0.1)
    ref = (per_pos * mask.reshape(-1)).sum() / mask.sum()
    assert torch.equal(loss, ref)
    grad, = torch.autograd.grad(loss, logits)
    ref_grad, = torch.autograd.grad(ref, logits)
    assert torch.equal(grad, ref_grad)
    # unmasked positions do not enter; no masked position gives 0, not NaN
    assert head.loss(logits, target, torch.zeros(B, N)).item() == 0.


def test_pixel_encoder_pretrained_init_cfg_goes_through_the_key_accounting(tmp_path):
    """``ADDPPretrainEncoder(init_cfg=dict(type='Pretrained', ...))`` reads an official release
    with the shared encoder reader: every encoder tensor loaded, the rest counted."""
    from helpers.addp import load_fixture
    fx = load_fixture()
    a = fx['meta']['config']['addp']
    sd = fx['state_dict']['addp']
    path = str(tmp_path / 'official.pth')
    torch.save({'model': dict(sd)}, path)
    enc = MODELS.build(dict(type='ADDPPretrainEncoder', img_size=a['img_size'],
                            patch_size=a['patch_size'], embed_dims=a['embed_dim'],
                            num_layers=a['depth'], num_heads=a['num_heads'],
                            mlp_ratio=a['mlp_ratio'],
                            init_cfg=[dict(type='Pretrained', checkpoint=path)]))
    enc.init_weights()
    rep = enc.pretrained_report
    assert set(rep['loaded']) == set(enc.state_dict()) and rep['ignored'] == []
    assert rep['not_encoder']['vqgan'] > 0 and rep['not_encoder']['token_predictor'] > 0
    assert len(rep['loaded']) + sum(rep['not_encoder'].values()) == len(sd)
    assert all(torch.equal(v, sd[k]) for k, v in enc.state_dict().items())


def test_blocks_are_timm_layers_with_the_reference_attention_path():
    """timm's Block / Mlp / DropPath with the reference's parameter names; under
    autocast the attention logits and softmax stay in float32 (reference
    ``models_addp.py``), unlike timm's own non-fused path."""
    import timm.layers
    import timm.models.vision_transformer as tvit

    from addp_mm.models.layers import Attention, Block
    blk = Block(16, 2, drop_path=0.1)
    assert isinstance(blk, tvit.Block) and isinstance(blk.attn, Attention)
    assert isinstance(blk.mlp, timm.layers.Mlp) and isinstance(blk.drop_path1, timm.layers.DropPath)
    assert sorted(blk.state_dict()) == sorted(
        f'{m}.{p}' for m in ('norm1', 'attn.qkv', 'attn.proj', 'norm2', 'mlp.fc1', 'mlp.fc2')
        for p in ('weight', 'bias'))
    attn = blk.attn.eval()
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = attn(x)
        q, k, v = attn.qkv_heads(x)  # bf16 under autocast
    logits = (q.float() @ k.float().transpose(-2, -1)) * attn.scale
    probs = (logits - logits.amax(-1, keepdim=True)).softmax(-1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        ref = attn.proj(((probs.to(v.dtype) @ v).transpose(1, 2)).reshape(2, 5, 16))
    assert torch.equal(got, ref)
