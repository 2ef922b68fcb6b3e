"""The registry scope the ADDP entry points build in.

mmengine resolves a registry name that has no ``scope.`` prefix in the
process's current ``DefaultScope``, and that scope is global: creating an
mmdet ``DetInferencer`` or an mmseg ``MMSegInferencer`` makes ``mmdet`` /
``mmseg`` current and leaves it so. A later build of an mmpretrain name
(``PackInputs``, an ADDP sampler) would then look in the wrong codebase. The
ADDP entry points build inside :func:`codebase_scope`, which sets the scope
for the block only and restores the previous one afterwards.
"""
import contextlib
from typing import Iterator, Optional

__all__ = ['codebase_scope']


@contextlib.contextmanager
def codebase_scope(scope: Optional[str] = 'mmpretrain') -> Iterator[None]:
    """Make ``scope`` the current default scope inside the block.

    Args:
        scope (str, optional): ``'mmpretrain'``, ``'mmdet'`` or ``'mmseg'``;
            None leaves the scope as it is. Defaults to ``'mmpretrain'``.

    Example::

        from mmpretrain.apis import ImageClassificationInferencer
        with codebase_scope('mmpretrain'):  # after an mmdet/mmseg inferencer
            inferencer = ImageClassificationInferencer(CFG, pretrained=CKPT)
    """
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        yield
