"""Experiment configs: one ``get_config()`` per experiment of the paper."""
