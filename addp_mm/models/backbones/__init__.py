from .addp_vision_transformer import *  # noqa: F401,F403
from .addp_vitdet import *  # noqa: F401,F403
from .addp_vit import *  # noqa: F401,F403
