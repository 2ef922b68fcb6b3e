"""VQGANTrainer: VQ losses on hand-checked inputs, training progress on a fixed
batch of real photo crops, dead codes, optional perceptual/adversarial
losses, and the checkpoint format the ADDP config reads."""
import os.path as osp

import numpy as np
import pytest
import torch

import addp_mm  # noqa: F401
from addp_mm.engine.optimizers import VQGANMultiOptimWrapperConstructor
from addp_mm.models.losses import hinge_d_loss, vq_losses
from addp_mm.models.selfsup import VQGANTrainer
from addp_mm.testing import save_runner_checkpoint
from addp_mm.utils.checkpoint import CheckpointError
from helpers.tokenizers import TINY_TOK, photo_batch
from mmpretrain.registry import MODELS


def build(**kwargs) -> VQGANTrainer:
    torch.manual_seed(0)
    model = MODELS.build(dict(dict(type='VQGANTrainer', tokenizer=TINY_TOK), **kwargs))
    model.init_weights()
    return model.train()


def test_vq_losses_hand_checked():
    h = torch.tensor([1., 2.]).view(1, 2, 1, 1).requires_grad_()
    q = torch.tensor([0.5, 3.]).view(1, 2, 1, 1).requires_grad_()
    codebook, commit, st = vq_losses(h, q)
    # mean over the 2 elements of (0.5^2, 1^2)
    assert codebook.item() == pytest.approx(0.625)
    assert commit.item() == pytest.approx(0.625)
    assert torch.equal(st.detach(), q.detach())  # forward value = the code
    g_q, = torch.autograd.grad(codebook, q, retain_graph=True)
    assert torch.allclose(g_q.flatten(), torch.tensor([-0.5, 1.0]))  # (q - h)
    assert torch.autograd.grad(codebook, h, retain_graph=True, allow_unused=True)[0] is None
    g_h, = torch.autograd.grad(commit, h, retain_graph=True)
    assert torch.allclose(g_h.flatten(), torch.tensor([0.5, -1.0]))  # (h - q)
    assert torch.autograd.grad(commit, q, retain_graph=True, allow_unused=True)[0] is None
    g_st, = torch.autograd.grad(st.sum(), h)  # straight-through: identity to h
    assert torch.equal(g_st, torch.ones_like(h))
    with pytest.raises(ValueError, match='same shape'):
        vq_losses(h, q.view(1, 1, 2, 1))


def test_hinge_d_loss_hand_checked():
    real = torch.tensor([2., 0.5])
    fake = torch.tensor([-2., 0.5])
    # relu(1-real) = [0, .5] -> .25 ; relu(1+fake) = [0, 1.5] -> .75 ; 0.5 * (.25 + .75)
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5)


def test_reconstruct_quantises_to_nearest_code_and_losses_match():
    model = build(codebook_init='none', dead_code_restart=None)
    x = photo_batch(4)
    out = model.reconstruct(x)
    ids, quant = model.tokenizer.encode(x)
    assert torch.equal(out['indices'], ids)
    assert torch.allclose(out['quant'], quant)
    h = out['latents']
    assert out['loss_codebook'].item() == pytest.approx(((h - quant)**2).mean().item(), rel=1e-5)
    assert out['loss_commit'].item() == pytest.approx(out['loss_codebook'].item(), rel=1e-6)
    # the decoder gets the codes (straight-through), so the eval path is identical
    assert torch.allclose(out['rec'], model.tokenizer.decode(quant), atol=1e-5)


def test_loss_decreases_on_fixed_batch():
    model = build(dead_code_restart=dict(interval=5, threshold=0.1))
    x = photo_batch(8)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    totals, recs = [], []
    for _ in range(40):
        losses = model.loss(x)
        total = sum(v for k, v in losses.items() if k.startswith('loss'))
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
        recs.append(losses['loss_rec'].item())
    assert np.mean(recs[-5:]) < 0.6 * np.mean(recs[:3]), recs
    assert np.mean(totals[-5:]) < 0.7 * np.mean(totals[:3]), totals
    assert int(model.num_steps) == 40
    # the tokenizer itself changed and stays usable frozen-style
    ids, _ = model.tokenizer.encode(x)
    assert ids.shape == (8, 64)  # 16 px / 2


def test_data_init_puts_every_code_on_an_encoder_output():
    model = build(codebook_init='data', dead_code_restart=None)
    x = photo_batch(8)
    with torch.no_grad():
        h = model.tokenizer.encoder(x)
    model.loss(x)  # first training step: data init happens before quantisation
    flat = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
    d = (model.tokenizer.codebook.detach()[:, None] - flat[None]).norm(dim=-1)  # exact
    assert torch.all(d.min(dim=1).values < 1e-5)


def test_dead_codes_are_restarted():
    model = build(codebook_init='none', dead_code_restart=dict(interval=3, threshold=0.5, decay=0.5))
    with torch.no_grad():  # every code but one far away: all others dead
        model.tokenizer.codebook.fill_(100.)
        model.tokenizer.codebook[0] = 0.
    x = photo_batch(8)
    with torch.no_grad():
        for _ in range(3):
            model.generator_losses(x)  # no_grad: statistics only, no restart
    assert int(model.num_restarted) == 0
    usage_before = model.loss(x)['usage'].item()  # step 3 (grad enabled): restart, then quantise
    assert int(model.num_restarted) == 15
    assert usage_before > 1 / 16
    assert (model.tokenizer.codebook.detach()[1:] < 50).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match='rec_loss'):
        build(rec_loss='huber')
    with pytest.raises(KeyError, match='unknown keys'):
        build(dead_code_restart=dict(every=3))
    with pytest.raises(TypeError, match='VQGANTokenizer'):
        VQGANTrainer(tokenizer=torch.nn.Linear(2, 2))


def test_perceptual_loss_needs_local_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match='VGG16 state dict'):
        build(perceptual_loss=dict(checkpoint=str(tmp_path / 'missing.pth')))
    from torchvision.models import vgg16
    torch.manual_seed(0)
    feats = vgg16(weights=None).features[:9]
    path = str(tmp_path / 'vgg16_head.pth')
    torch.save({f'features.{k}': v for k, v in feats.state_dict().items()}, path)
    model = build(perceptual_loss=dict(checkpoint=path, layer_ids=(3, 8)), perceptual_weight=0.5)
    assert torch.equal(model.perceptual_loss.features[0].weight, feats[0].weight)  # loaded
    assert not any(p.requires_grad for p in model.perceptual_loss.parameters())
    x = photo_batch(2)
    assert model.perceptual_loss(x, x).item() == pytest.approx(0., abs=1e-6)
    y = x.flip(-1).requires_grad_()
    d = model.perceptual_loss(x, y)
    assert d.item() > 0
    assert torch.autograd.grad(d, y)[0].abs().sum() > 0
    assert 'loss_perceptual' in model.loss(x)
    bad = str(tmp_path / 'not_vgg.pth')
    torch.save({'features.0.weight': torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match='VGG16'):
        build(perceptual_loss=dict(checkpoint=bad, layer_ids=(3, )))


def test_adversarial_training_two_optimizers():
    from mmengine.optim import OptimWrapperDict
    model = build(discriminator=dict(base_channels=8, num_layers=2, norm_num_groups=4),
                  disc_start_iter=1)
    wrappers = VQGANMultiOptimWrapperConstructor(dict(
        tokenizer=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3)),
        discriminator=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3))))(model)
    assert isinstance(wrappers, OptimWrapperDict)
    x = photo_batch(4)
    # what default_collate gives the data preprocessor: a BGR uint8 batch
    data = dict(inputs=(x * 255).round().to(torch.uint8).flip(1), data_samples=None)
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    log1 = model.train_step(data, wrappers)  # step 0: before disc_start_iter
    assert 'loss_disc' not in log1 and 'loss_adv' not in log1
    assert all(torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()))
    log2 = model.train_step(data, wrappers)
    assert 'loss_adv' in log2 and 'loss_disc' in log2
    assert torch.isfinite(log2['loss_disc'])
    assert any(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()))
    with pytest.raises(TypeError, match='two optimizers'):
        from mmengine.optim import OptimWrapper
        model.train_step(data, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    with pytest.raises(KeyError, match='sub-module'):
        VQGANMultiOptimWrapperConstructor(dict(generator=dict(optimizer=dict(type='SGD', lr=1)))
                                          )(model)


def test_runner_checkpoint_loads_as_tokenizer(tmp_path):
    """A Runner-format checkpoint (HistoryBuffer in the message hub) of the
    trainer is read by ``VQGANTokenizer(checkpoint=...)`` (keys under
    ``tokenizer.``), ignoring the discriminator."""
    model = build(discriminator=dict(base_channels=8, num_layers=2, norm_num_groups=4))
    model.loss(photo_batch(4))  # changes the codebook (data init)
    path = save_runner_checkpoint(model.state_dict(), str(tmp_path / 'iter_1.pth'), 'm_test_vq')
    tok = MODELS.build(dict(TINY_TOK, checkpoint=path))
    tok.init_weights()
    for k, v in model.tokenizer.state_dict().items():
        assert torch.equal(tok.state_dict()[k], v), k
    assert not any(p.requires_grad for p in tok.parameters())
    assert osp.isfile(path)


def test_fine_tuning_keeps_the_pretrained_codebook(tmp_path):
    """With tokenizer.checkpoint set, codebook_init='data' must not overwrite
    the loaded codes, and the loaded tokenizer is trainable."""
    torch.manual_seed(3)
    src = MODELS.build(TINY_TOK)
    path = str(tmp_path / 'tok.pth')
    torch.save({'state_dict': src.state_dict()}, path)
    model = MODELS.build(dict(type='VQGANTrainer', tokenizer=dict(TINY_TOK, checkpoint=path),
                              codebook_init='data', dead_code_restart=None))
    model.init_weights()
    model.train()
    assert torch.equal(model.tokenizer.codebook, src.codebook)
    assert all(p.requires_grad for p in model.tokenizer.parameters())
    model.loss(photo_batch(4))
    assert torch.equal(model.tokenizer.codebook.detach(), src.codebook)
