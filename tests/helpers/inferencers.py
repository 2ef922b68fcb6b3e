"""Models and checkpoints for the tests of the codebases' inferencers."""
import torch


def build_initialised(cfg):
    """``addp_mm.apis.init_model(cfg)`` with its weights initialised from seed 0."""
    from addp_mm.apis import init_model
    torch.manual_seed(0)
    model = init_model(cfg)
    model.init_weights()
    return model


def save_for_inferencer(model, path, dataset_meta) -> str:
    """Save ``model`` as an inferencer reads it: weights and ``meta.dataset_meta``."""
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': dataset_meta}}, path)
    return path
