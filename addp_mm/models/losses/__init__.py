from .vqgan_losses import *  # noqa: F401,F403
