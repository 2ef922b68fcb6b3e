from .addp import *  # noqa: F401,F403
