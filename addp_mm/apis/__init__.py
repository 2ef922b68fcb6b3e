"""Python entry points: the ``ADDPGenerator`` inferencer and the model index."""
from .generator import ADDPGenerator, load_generation_weights  # noqa: F401
from .model_index import (get_model, get_model_config, init_model, list_addp_models,  # noqa: F401
                          register_addp_model_index)
from .scope import codebase_scope  # noqa: F401

__all__ = ['ADDPGenerator', 'load_generation_weights', 'get_model', 'get_model_config',
           'init_model', 'list_addp_models', 'register_addp_model_index', 'codebase_scope']
