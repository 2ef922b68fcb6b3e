from .addp_visualization_hook import *  # noqa: F401,F403
