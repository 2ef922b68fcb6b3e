from .checkpoint import (CheckpointError, check_state_dict, load_external_state_dict,
                         load_state_dict_strict, strip_prefix)

__all__ = ['CheckpointError', 'check_state_dict', 'load_external_state_dict',
           'load_state_dict_strict', 'strip_prefix']
