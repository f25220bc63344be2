"""The experiments behind RESULTS.md, as library code: no CLI, nothing runs on import.

One module per experiment (``sweep``, ``random_labels``, ``mask_pictures``, ``ablations``,
``sparse_export``) holds what it trains or measures, how its raw results aggregate and its
figures; ``results_doc`` writes RESULTS.md and README's results blocks from the raw results and
``results_template.md``. The scripts ``experiments/<experiment>.py`` are thin CLIs over them.
"""
