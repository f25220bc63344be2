"""The benchmark sections, by name: what ``benchmarks.run --sections`` and the GPU check accept.

Standard library only, so that the GPU check can refuse an unknown section before it installs
anything or imports JAX.
"""

#: Section name -> module, in BENCHMARKS.md's order.
SECTIONS = {
  "train_step": "bench_step",
  "pruning": "bench_pruning",
  "selection": "bench_selection",
  "pipeline": "bench_pipeline",
  "memory": "bench_memory",
  "conv": "bench_conv",
  "inference": "bench_inference",
  "training": "bench_training",
}
#: The sections with sizes for a GPU: their ``run(quick, gpu)`` takes ``gpu``; the others are
#: CPU measurements, ``run(quick)``.
GPU_SECTIONS = ("train_step", "pruning", "selection", "inference", "training")
