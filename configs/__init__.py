"""Experiment configs: one ``get_config(arg)`` file per experiment (``python -m lsc.main
--config=configs/<dir>/<file>.py[:arg]``); shared sections in :mod:`configs.common`."""
