from .addp import *  # noqa: F401,F403
from .vqgan_training import *  # noqa: F401,F403
from .mage_training import *  # noqa: F401,F403
from .mask_schedule import *  # noqa: F401,F403
