from .mage_predictor import *  # noqa: F401,F403
