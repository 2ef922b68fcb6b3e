from .vqgan import *  # noqa: F401,F403
