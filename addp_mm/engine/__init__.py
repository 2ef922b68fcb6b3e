from . import hooks, optimizers  # noqa: F401
from .amp import ADDPCPUAmpOptimWrapper  # noqa: F401
