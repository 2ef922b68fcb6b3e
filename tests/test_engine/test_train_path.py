"""The fast training/sampling path (what ``tools/train.py --amp`` and
``tools/sample.py`` run) keeps the results, decides bf16 from the hardware,
and needs no host synchronisation inside the ADDP step.

Tolerances (tiny random models, fp32):

* ``static_decoder_length`` (padded decoder with masked keys): logits at the
  grid slots within 1e-5, loss within 1e-6 relative, gradients within 1e-5.
* ``channels_last='auto'`` on a CPU: the channels-last path, bitwise.
* ``frozen_dtype='auto'``: without autocast bitwise the fp32 path; under CPU
  autocast with native bf16 bitwise the explicit ``'bf16'`` path.
* sampler ``precision='auto'`` on a CPU: bitwise the fp32 result.
"""
import copy
import logging

import pytest
import torch

from addp_mm.models.utils.performance import PRESETS, configure_performance, describe_performance
from addp_mm.utils import precision
from addp_mm.utils.precision import bf16_choice, resolve_frozen_dtype
from helpers.performance import build_tiny_addp, images, make_mage, make_vqgan, random_mask

torch.set_num_threads(1)


# ------------------------------------------------------------------ bf16 decision
@pytest.fixture
def cpu_caps(monkeypatch):
    """Set the CPU capability torch reports and whether bf16 is native; the
    log lines of the decisions are collected in ``set_caps.logged``."""
    monkeypatch.delenv('ADDP_BF16', raising=False)
    monkeypatch.setattr(precision, '_LOGGED', set())
    logged = []
    monkeypatch.setattr(precision, 'print_log',
                        lambda msg, logger=None, level=logging.INFO: logged.append((msg, level)))

    def set_caps(capability: str, native_bf16: bool = False):
        monkeypatch.setattr(precision, '_cpu_capability', lambda: capability)
        for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported'):
            monkeypatch.setattr(torch.cpu, name, lambda: native_bf16, raising=False)
    set_caps.logged = logged
    return set_caps


def test_bf16_decision_follows_the_cpu_capability(cpu_caps, monkeypatch):
    cpu_caps('AVX2')
    assert precision.cpu_bf16_native()[0] is False
    assert bf16_choice('cpu', 'AMP') is False
    assert bf16_choice('cpu', 'AMP') is False
    # one line, saying why and how to force it
    msgs = [m for m, level in cpu_caps.logged if m.startswith('AMP:')]
    assert len(msgs) == 1 and 'AVX2' in msgs[0] and 'ADDP_BF16=1' in msgs[0]
    assert all(level == logging.WARNING for _, level in cpu_caps.logged)
    cpu_caps('AVX512', native_bf16=False)  # AVX-512 without the BF16 extension: emulated
    assert bf16_choice('cpu', log=False) is False
    cpu_caps('AVX512', native_bf16=True)
    assert bf16_choice('cpu') is True
    # forced on / off
    cpu_caps('AVX2')
    monkeypatch.setenv('ADDP_BF16', '1')
    assert bf16_choice('cpu', 'x') is True
    assert any('forced' in m for m, _ in cpu_caps.logged)
    cpu_caps('AVX512', native_bf16=True)
    monkeypatch.setenv('ADDP_BF16', '0')
    assert bf16_choice('cpu') is False
    monkeypatch.delenv('ADDP_BF16')
    # CUDA: the device's own bf16 support
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: False)
    assert bf16_choice('cuda', log=False) is False
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    assert bf16_choice('cuda') is True


def test_amp_wrapper_dtype_and_fallback(cpu_caps):
    import addp_mm  # noqa: F401
    from mmengine.registry import OPTIM_WRAPPERS

    from addp_mm.engine.amp import resolve_amp_dtype
    cpu_caps('AVX2')
    assert resolve_amp_dtype('auto', 'cpu') == torch.float32
    assert resolve_amp_dtype('bfloat16', 'cpu') == torch.float32  # explicit, still not silent
    model = torch.nn.Linear(4, 2)
    wrapper = OPTIM_WRAPPERS.build(dict(type='ADDPAmpOptimWrapper', optimizer=torch.optim.SGD(
        model.parameters(), lr=0.1)))
    assert wrapper.cast_dtype == torch.float32 and wrapper.loss_scaler is None
    with wrapper.optim_context(model):
        assert model(torch.randn(3, 4)).dtype == torch.float32
    cpu_caps('AVX512', native_bf16=True)
    assert resolve_amp_dtype('auto', 'cpu') == torch.bfloat16
    wrapper = OPTIM_WRAPPERS.build(dict(type='ADDPAmpOptimWrapper', optimizer=torch.optim.SGD(
        model.parameters(), lr=0.1)))
    with wrapper.optim_context(model):
        out = model(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16 and wrapper.loss_scaler is None  # bf16: no loss scaling
    with pytest.raises(ValueError, match='dtype'):
        resolve_amp_dtype('int8', 'cpu')


def test_amp_wrapper_grad_norm_logged_every_n_steps_and_checkpoints(cpu_caps):
    import addp_mm  # noqa: F401
    from mmengine.logging import MessageHub
    from mmengine.registry import OPTIM_WRAPPERS
    cpu_caps('AVX2')
    hub = MessageHub.get_instance('addp_test_grad_norm')
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    wrapper = OPTIM_WRAPPERS.build(dict(
        type='ADDPAmpOptimWrapper', grad_norm_interval=3, clip_grad=dict(max_norm=0.1),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    wrapper.message_hub = hub
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    norms = []
    for i in range(6):
        x = torch.randn(5, 4)
        with wrapper.optim_context(model):
            loss = model(x).square().mean()
        wrapper.update_params(loss)
        ref_loss = ref(x).square().mean()
        ref_opt.zero_grad()
        ref_loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.1)))
        ref_opt.step()
        logged = hub.log_scalars.get('train/grad_norm')
        assert (logged is not None) == (i >= 2)  # first read after 3 steps, not every step
    # same clipped updates as a plain optimizer; the log holds the means of 3 norms
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
    buf = hub.log_scalars['train/grad_norm'].data[0]
    assert list(buf) == pytest.approx([sum(norms[:3]) / 3, sum(norms[3:]) / 3], rel=1e-6)
    # checkpoints: an fp16 AmpOptimWrapper state (with loss_scaler) loads; none is written
    state = wrapper.state_dict()
    assert 'loss_scaler' not in state
    state['loss_scaler'] = {'scale': 1024.}
    wrapper.load_state_dict(state)


def test_train_tool_amp_config(cpu_caps):
    from addp_mm.engine.amp import amp_optim_wrapper_cfg
    plain = dict(type='OptimWrapper', optimizer=dict(type='AdamW'))
    got = amp_optim_wrapper_cfg(plain, 'mmpretrain', amp=True, cuda_available=True)
    assert got['type'] == 'ADDPAmpOptimWrapper' and got['dtype'] == 'auto'
    assert plain['type'] == 'OptimWrapper'  # input untouched
    # detection/segmentation keep mmengine's fp16 wrapper (mmcv ops lack bf16 kernels)
    assert amp_optim_wrapper_cfg(plain, 'mmdet', True, True)['type'] == 'AmpOptimWrapper'
    assert amp_optim_wrapper_cfg(plain, 'mmdet', True, False)['type'] == 'ADDPAmpOptimWrapper'
    assert amp_optim_wrapper_cfg(plain, 'mmpretrain', False, True) == plain
    with pytest.raises(ValueError, match='--amp needs'):
        amp_optim_wrapper_cfg(dict(type='ApexOptimWrapper'), 'mmpretrain', True, True)


# ------------------------------------------------------------ frozen 'auto' switches
def test_frozen_auto_switches_on_cpu(cpu_caps):
    img = images(2, 16)
    ref = make_vqgan()
    with torch.no_grad():
        ids0, quant = ref.encode(img)
        rec0 = ref.decode(quant)
    # channels_last='auto' on a CPU is the channels-last path
    cl, auto = make_vqgan(channels_last=True), make_vqgan(channels_last='auto')
    assert auto.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(auto.decode(quant), cl.decode(quant))
    # frozen_dtype='auto' without autocast: fp32, bitwise
    tok = make_vqgan(frozen_dtype='auto')
    with torch.no_grad():
        ids, rec = tok.encode(img)[0], tok.decode(quant)
    assert torch.equal(ids, ids0) and torch.equal(rec, rec0)
    # under autocast with native bf16: exactly the explicit bf16 path
    cpu_caps('AVX512', native_bf16=True)
    bf16 = make_vqgan(frozen_dtype='bf16')
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert resolve_frozen_dtype('auto', 'cpu') == torch.bfloat16
        rec_auto, rec_bf16 = tok.decode(quant), bf16.decode(quant)
    assert rec_auto.dtype == torch.float32 and torch.equal(rec_auto, rec_bf16)
    # without native bf16: 'auto' adds nothing, an explicit 'bf16' runs fp32 (logged)
    cpu_caps('AVX2')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert resolve_frozen_dtype('auto', 'cpu') is None
    assert resolve_frozen_dtype(torch.bfloat16, 'cpu') == torch.float32
    with torch.no_grad():
        assert torch.equal(bf16.decode(quant), rec0)
    mage = make_mage(frozen_dtype='auto')
    mask = random_mask(2, 16, 9)
    with torch.no_grad():
        assert torch.equal(mage.predict_probs(ids0, mask), make_mage().predict_probs(ids0, mask))


def test_auto_preset_is_plain_numerics_without_autocast_on_cpu():
    plain = build_tiny_addp().eval()
    auto = copy.deepcopy(plain)
    configure_performance(auto, **PRESETS['auto'])
    got = describe_performance(auto)
    assert got['channels_last'] == 'auto' and got['compile'] == 'auto'
    assert got['static_decoder_length'] == 'auto' and got['sampler_precision'] == 'auto'
    assert not auto.tokenizer._compiled  # 'auto' compiles on CUDA only
    x = images(2, 16)
    g = torch.Generator().manual_seed(5)
    m_t, m_n = plain.mask_generator(2, plain.num_tokens, generator=g)
    with torch.no_grad():
        a = plain.forward_train_step(x, m_t, m_n)['loss']
        b = auto.forward_train_step(x, m_t, m_n)['loss']
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # sampler precision 'auto' is the caller's fp32 on a CPU
        ref = plain.sampler.sample(plain, seeds=[0, 1])
        out = auto.sampler.sample(auto, seeds=[0, 1])
    assert torch.equal(out['tokens'], ref['tokens'])
    torch.testing.assert_close(out['images'], ref['images'], atol=1e-4, rtol=1e-4)


def test_sampler_precision_bf16_and_fallback(cpu_caps):
    model = build_tiny_addp().eval()
    with pytest.raises(ValueError, match='precision'):
        model.sampler.set_precision('fp8')
    with torch.no_grad():
        ref = model.sampler.sample(model, seeds=[0, 1])
    cpu_caps('AVX2')
    model.sampler.set_precision('bf16')  # not native: fp32, bitwise
    with torch.no_grad():
        out = model.sampler.sample(model, seeds=[0, 1])
    assert torch.equal(out['images'], ref['images'])
    cpu_caps('AVX512', native_bf16=True)
    with torch.no_grad():
        out = model.sampler.sample(model, seeds=[0, 1])
    assert out['images'].dtype == torch.float32
    assert not torch.equal(out['images'], ref['images'])  # really ran in bf16


# -------------------------------------------------------------- the decoder padding
def _decoder_inputs(model, n_masked, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, N = 2, model.num_tokens
    latent = torch.randn(B, N + 1, model.backbone.embed_dims, generator=g)
    tokens = torch.randint(0, model.num_codes, (B, N), generator=g)
    mask = model.mask_generator.masks_from_noise(torch.rand(B, N, generator=g), n_masked)
    return latent, tokens, mask


@pytest.mark.parametrize('sdpa', [False, True])
def test_padded_decoder_same_logits_and_gradients(sdpa):
    model = build_tiny_addp().eval()
    configure_performance(model, sdpa=sdpa)
    neck, N = model.neck, model.num_tokens
    latent, tokens, mask = _decoder_inputs(model, n_masked=11)
    n_vis = N - 11
    lat_a = latent.clone().requires_grad_(True)
    ref = neck(lat_a, tokens, mask)
    assert ref.shape[1] == 1 + N + n_vis
    lat_b = latent.clone().requires_grad_(True)
    padded = neck(lat_b, tokens, mask, pad_to=N - 2)
    assert padded.shape[1] == 1 + N + N - 2
    torch.testing.assert_close(padded[:, :1 + N], ref[:, :1 + N], atol=1e-5, rtol=1e-5)
    # the visible appended slots match too; the padding slots never reach the grid slots
    torch.testing.assert_close(padded[:, 1 + N:1 + N + n_vis], ref[:, 1 + N:], atol=1e-5, rtol=1e-5)
    ref[:, 1:1 + N].square().mean().backward()
    padded[:, 1:1 + N].square().mean().backward()
    torch.testing.assert_close(lat_b.grad, lat_a.grad, atol=1e-5, rtol=1e-4)
    # unequal visible counts per sample are fine when padded (not otherwise)
    mask2 = mask.clone()
    mask2[0, mask2[0].argmin()] = 1.
    with pytest.raises(ValueError, match='same number of visible'):
        neck(latent, tokens, mask2)
    neck(latent, tokens, mask2, pad_to=N - 2)


def test_static_decoder_length_same_training_step():
    model = build_tiny_addp().train()
    model.token_predictor.train_dropout = False
    for m in model.modules():  # deterministic: compare the maths, not dropout draws
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.
    padded = copy.deepcopy(model)
    configure_performance(padded, static_decoder_length=True)
    assert padded.max_visible == model.num_tokens - 9  # ceil(16 * 0.5090) = 9 masked at least
    x = images(2, 16)
    outs = []
    for m in (model, padded):
        m.zero_grad(set_to_none=True)
        loss = m.forward_train_step(x, generator=torch.Generator().manual_seed(7))['loss']
        loss.backward()
        outs.append((loss.detach(), {n: p.grad for n, p in m.named_parameters()
                                     if p.grad is not None}))
    (l0, g0), (l1, g1) = outs
    torch.testing.assert_close(l1, l0, rtol=1e-6, atol=1e-6)
    assert set(g0) == set(g1)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-4, msg=n)


# --------------------------------------------------------------- no host syncs
class _DeviceReads:
    """Dispatch mode recording every op that makes the host wait for a device
    tensor's values (``.item()``/``bool()``/``float()``, ``nonzero``, boolean
    indexing, ``torch.equal``), with a switch to ignore host-side work."""

    SYNC_OPS = ('_local_scalar_dense', 'nonzero', 'is_nonzero', 'masked_select', 'equal')

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        reads = self.reads = []
        self.paused = False
        outer = self

        class Mode(TorchDispatchMode):

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                if not outer.paused:
                    if name in outer.SYNC_OPS:
                        reads.append(name)
                    elif name == 'index' and any(
                            isinstance(i, torch.Tensor) and i.dtype == torch.bool
                            for i in (args[1] if len(args) > 1 else ()) if i is not None):
                        reads.append('boolean index')
                return func(*args, **(kwargs or {}))

        self.mode = Mode()


def test_training_step_reads_nothing_from_the_device():
    """Forward and backward of an ADDP step with drawn masks never wait for the
    device (the mask schedule's draws are host-side by design and excluded)."""
    model = build_tiny_addp().train()
    configure_performance(model, **PRESETS['auto'])
    x = images(2, 16)
    model.forward_train_step(x)  # the first batch's value-range check reads once, by design
    tracker = _DeviceReads()
    sampler = model.mask_generator
    draw = type(sampler).__call__

    class HostSideSampler(type(sampler)):

        def __call__(self, *args, **kwargs):
            tracker.paused = True
            try:
                return draw(self, *args, **kwargs)
            finally:
                tracker.paused = False

    sampler.__class__ = HostSideSampler
    model._images_checked = True
    with tracker.mode:
        tracker.paused = True
        pad = model.max_visible  # host arithmetic on the schedule's CPU table
        tracker.paused = False
        out = model.forward_train_step(x, generator=torch.Generator().manual_seed(0))
        out['loss'].backward()
    assert pad == model.num_tokens - 9
    assert tracker.reads == []
    # the tracker does see a read
    with tracker.mode:
        bool(out['loss'] > 0)
        model.forward_train_step(x, *sampler(2, 16))  # explicit masks are checked
    assert '_local_scalar_dense' in tracker.reads


def test_compile_trainable_does_not_recompile_per_step():
    """Padded decoder: one graph for every mask draw (eager backend: dynamo's
    graph capture without the C++ build)."""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    model = build_tiny_addp().train()
    for m in model.modules():  # same numbers eager and compiled: no dropout draws
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.
    configure_performance(model, sdpa=True, static_decoder_length=True,
                          compile_trainable=dict(backend=counting_backend))
    ref = copy.deepcopy(model)
    configure_performance(ref, compile_trainable=False)
    x = images(2, 16)
    for seed in range(4):  # different mask ratios, i.e. visible counts
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        loss = model.forward_train_step(x, generator=g)['loss']
        torch.manual_seed(seed)
        ref_loss = ref.forward_train_step(x, generator=torch.Generator().manual_seed(seed))['loss']
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        loss.backward()
    assert len(graphs) == 2  # encoder + decoder blocks, compiled once each
    assert list(model.state_dict()) == list(ref.state_dict())
    torch._dynamo.reset()


def test_merged_param_groups_same_updates():
    """merge_groups: one group per setting instead of one per tensor, the same
    AdamW updates bitwise."""
    from mmengine.optim import build_optim_wrapper
    model = build_tiny_addp().train()
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05),
               constructor='ADDPFrozenAwareOptimWrapperConstructor',
               paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.))
    merged_model = copy.deepcopy(model)
    per_tensor = build_optim_wrapper(model, copy.deepcopy(cfg))
    cfg['paramwise_cfg']['merge_groups'] = True
    merged = build_optim_wrapper(merged_model, cfg)
    n_trainable = sum(p.requires_grad for p in model.parameters())
    assert len(per_tensor.optimizer.param_groups) == n_trainable
    groups = merged.optimizer.param_groups
    assert len(groups) == 2 and {g['weight_decay'] for g in groups} == {0., 0.05}
    assert sum(len(g['params']) for g in groups) == n_trainable
    x = images(2, 16)
    for step in range(3):
        for m, w in ((model, per_tensor), (merged_model, merged)):
            torch.manual_seed(step)
            loss = m.forward_train_step(x, generator=torch.Generator().manual_seed(step))['loss']
            w.update_params(loss)
    for (n, p), q in zip(model.named_parameters(), merged_model.parameters()):
        assert torch.equal(p, q), n
