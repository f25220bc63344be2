"""The speed and memory benchmarks of snip-jax: ``python -m benchmarks.run`` -> BENCHMARKS.md."""
