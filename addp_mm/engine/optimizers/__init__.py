from .layer_decay import *  # noqa: F401,F403
