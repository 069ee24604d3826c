"""Loads ``configs/models/decoder.py`` by path (config files are not an installed package)."""

import importlib.util
import os

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "configs",
                     "models", "decoder.py")


def load():
    spec = importlib.util.spec_from_file_location("lsc_configs_models_decoder", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


presets = load()
