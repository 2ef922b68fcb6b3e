from .sampler import *  # noqa: F401,F403
from .schedule import *  # noqa: F401,F403
