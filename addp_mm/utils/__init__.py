from .checkpoint import (CheckpointError, check_state_dict,
                         first_disallowed_global, install_mmengine_loader,
                         load_external_state_dict, load_state_dict_strict, safe_torch_load,
                         strip_prefix)
from .outputs import (OutputError, atomic_torch_save, atomic_write, check_output_dir,
                      check_output_file, publish_dir)

__all__ = ['CheckpointError', 'check_state_dict', 'first_disallowed_global',
           'install_mmengine_loader', 'load_external_state_dict', 'load_state_dict_strict',
           'safe_torch_load', 'strip_prefix', 'OutputError', 'atomic_torch_save', 'atomic_write',
           'check_output_dir', 'check_output_file', 'publish_dir']
