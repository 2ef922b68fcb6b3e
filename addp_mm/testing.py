"""Helpers for tests and smoke checks (like ``mmdet.testing``).

The helpers that need a source checkout (the repository root, the test
fixtures, running the tools) live in ``tests/helpers/checkout.py``.
"""


def save_runner_checkpoint(state_dict: dict, path: str, hub_name: str, it: int = 1) -> str:
    """Write ``state_dict`` the way mmengine's Runner does (meta + a message hub
    holding a ``HistoryBuffer``), to test loaders against real Runner files.

    Args:
        state_dict (dict): Model weights.
        path (str): Output file.
        hub_name (str): Name of the MessageHub instance to create.
        it (int): Iteration recorded in ``meta``. Defaults to 1.

    Returns:
        str: ``path``.
    """
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint
    hub = MessageHub.get_instance(hub_name)
    hub.update_scalar('train/loss', 1.0)
    save_checkpoint(dict(meta=dict(iter=it), state_dict=state_dict,
                         message_hub=hub.state_dict()), path)
    return path
