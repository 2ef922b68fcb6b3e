from . import hooks, optimizers  # noqa: F401
from .amp import ADDPAmpOptimWrapper, ADDPCPUAmpOptimWrapper  # noqa: F401
