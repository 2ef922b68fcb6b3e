from .simple_fpn import *  # noqa: F401,F403
from .addp_neck import *  # noqa: F401,F403
