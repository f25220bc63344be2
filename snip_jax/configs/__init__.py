"""The paper's experiments as config files: ``default.py`` and one file per row of its tables.

Each file has a ``get_config()`` that returns an ``ml_collections.ConfigDict`` (the default
config with what differs for its row); its docstring gives the command that runs it and the
paper's error. The CLI takes a config by name or by path (``snip-jax-train --config=lenet5_mnist``
or ``--config=path/to/my_config.py``), and so does :func:`snip_jax.train.load_config`;
:func:`snip_jax.train.config_names` lists the names. In a checkout, ``experiments/configs`` is a
link to this directory.
"""
