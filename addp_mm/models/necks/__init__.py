from .simple_fpn import *  # noqa: F401,F403
