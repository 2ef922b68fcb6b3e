"""The ADDP decoder is padded to a static length only where a compiled
decoder uses it: with ``performance='auto'`` an eager decoder (every CPU run
by default) sees the real sequence length, a compiled one the padded length,
and the loss is the same either way."""
import copy

import torch

from addp_mm.models.utils.performance import PRESETS, configure_performance, describe_performance
from helpers.performance import build_tiny_addp, images

torch.set_num_threads(1)


def _no_dropout(model):
    model.token_predictor.train_dropout = False
    for m in model.modules():  # compare the maths, not dropout draws
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.
    return model


def _decoder_lengths(model, x, seeds):
    """Per seed: the decoder's sequence length, the real visible count and the loss."""
    out = []
    for seed in seeds:
        r = model.forward_train_step(x, generator=torch.Generator().manual_seed(seed),
                                     return_intermediates=True)
        visible = (r['mask_t'] < 0.5).sum(dim=1)
        assert bool((visible == visible[0]).all())
        out.append((r['logits'].shape[1], int(visible[0]), r['loss'].detach()))
    return out


def test_auto_preset_runs_the_eager_decoder_on_the_real_length():
    model = _no_dropout(build_tiny_addp(performance='auto').train())
    assert describe_performance(model)['static_decoder_length'] == 'auto'
    assert not model.pads_decoder()
    N = model.num_tokens
    runs = _decoder_lengths(model, images(2, 16), range(6))
    for length, visible, _ in runs:
        assert length == 1 + N + visible  # [cls, N grid slots, the visible tokens]
    # the draws include shorter sequences than the longest one a padded decoder would use
    assert min(visible for _, visible, _ in runs) < model.max_visible


def test_auto_preset_pads_a_compiled_decoder_with_the_same_loss():
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    eager = _no_dropout(build_tiny_addp().train())
    configure_performance(eager, **PRESETS['auto'])
    compiled = copy.deepcopy(eager)
    configure_performance(compiled, compile_trainable=dict(backend=counting_backend))
    assert compiled.pads_decoder() and not eager.pads_decoder()
    N, x = eager.num_tokens, images(2, 16)
    for (l_pad, v_pad, loss_pad), (l_eager, v_eager, loss_eager) in zip(
            _decoder_lengths(compiled, x, range(4)), _decoder_lengths(eager, x, range(4))):
        assert v_pad == v_eager
        assert l_pad == 1 + N + compiled.max_visible and l_eager == 1 + N + v_eager
        torch.testing.assert_close(loss_pad, loss_eager, rtol=1e-6, atol=1e-6)
    assert len(graphs) == 2  # encoder + decoder blocks, one graph each for every length
    # a compilation that fell back to eager runs on the real length again
    compiled.neck.__dict__['_compiled_blocks'].failed = True
    assert not compiled.pads_decoder()
    torch._dynamo.reset()


def test_explicit_switch_still_pads_everywhere():
    model = _no_dropout(build_tiny_addp().train())
    configure_performance(model, static_decoder_length=True)
    assert model.pads_decoder()
    N = model.num_tokens
    for length, _, _ in _decoder_lengths(model, images(2, 16), range(3)):
        assert length == 1 + N + model.max_visible
    configure_performance(model, static_decoder_length=False)
    assert not model.pads_decoder()
