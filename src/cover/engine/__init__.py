"""The training engine shared by every trainer (pretraining methods, fine-tuning).

Infrastructure below the trainers: crash-safe checkpoints and exact resume
(:mod:`~cover.engine.checkpoint`, :mod:`~cover.engine.sampler`), mixed precision
(:mod:`~cover.engine.precision`), stop signals and non-finite guards
(:mod:`~cover.engine.guards`), DDP helpers (:mod:`~cover.engine.distributed`,
:mod:`~cover.engine.launch`), the learning-rate schedule, memory estimate, memory layout and
run logging. It imports nothing from the trainers above it.
"""
