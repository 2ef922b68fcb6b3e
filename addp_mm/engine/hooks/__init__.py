from .addp_visualization_hook import *  # noqa: F401,F403
from .knn_monitor_hook import ADDPKNNMonitorHook  # noqa: F401
from .checkpoint_hook import ADDPAtomicLocalBackend, ADDPCheckpointHook  # noqa: F401
from .random_state_hook import ADDPRandomStateHook  # noqa: F401
