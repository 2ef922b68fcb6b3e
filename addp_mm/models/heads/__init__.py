from .addp_head import *  # noqa: F401,F403
