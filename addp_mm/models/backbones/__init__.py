from .addp_vision_transformer import *  # noqa: F401,F403
from .addp_vitdet import *  # noqa: F401,F403
from .addp_pretrain_encoder import *  # noqa: F401,F403
