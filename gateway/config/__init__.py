"""Settings: the one reader of the environment, the command line and the YAML model file.

options.py      every option, declared once: flag, env name, parser, help and default
settings.py     Settings, ModelConfig and InputPolicy, defaulted from the options
load.py         precedence (default < YAML < environment < command line) and validation
model_files.py  built-in model paths, a folder's sentence-transformers prompts, memory shares
parsers.py      option value parsers
"""

from gateway.config.load import add_arguments, load_settings
from gateway.config.model_files import resolve_model_path
from gateway.config.options import OPTIONS, ConfigError, Option
from gateway.config.settings import InputPolicy, ModelConfig, Settings

__all__ = [
    "OPTIONS",
    "ConfigError",
    "InputPolicy",
    "ModelConfig",
    "Option",
    "Settings",
    "add_arguments",
    "load_settings",
    "resolve_model_path",
]
