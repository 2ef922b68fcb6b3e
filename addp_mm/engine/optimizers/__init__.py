from .frozen_aware import *  # noqa: F401,F403
from .layer_decay import *  # noqa: F401,F403
from .vqgan_constructor import *  # noqa: F401,F403
