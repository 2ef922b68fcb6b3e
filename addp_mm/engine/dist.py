"""CPU multi-process training support.

mmengine 0.10.7 assumes CUDA when launched with ``--launcher pytorch``: it calls
``torch.cuda.set_device`` in ``init_dist`` and always passes
``device_ids=[LOCAL_RANK]`` to DDP. ``tools/train.py`` therefore initialises a
gloo process group itself on a machine without CUDA (the Runner then skips its
own ``init_dist``) and swaps the model wrapper for this one.
"""
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from torch import nn


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel:
    """Build an :class:`MMDistributedDataParallel` without ``device_ids``.

    It is deliberately *not* a DDP subclass: the Runner injects
    ``device_ids`` only into DDP subclasses, and CPU modules reject them.
    """

    def __new__(cls, module: nn.Module, **kwargs) -> MMDistributedDataParallel:
        kwargs.pop('device_ids', None)
        kwargs.pop('output_device', None)
        return MMDistributedDataParallel(module=module, device_ids=None, **kwargs)
