from .mage_predictor import *  # noqa: F401,F403
from .vqgan import *  # noqa: F401,F403
