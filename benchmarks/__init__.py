"""The speed and memory benchmarks of snip-jax: ``python benchmarks/run.py`` -> BENCHMARKS.md."""
