"""The training engine shared by every trainer (pretraining methods, fine-tuning).

:mod:`~cover.engine.loop` holds the one training loop (:class:`~cover.engine.loop.Engine`) and
the :class:`~cover.engine.loop.Task` a trainer supplies. Around it: crash-safe checkpoints and
exact resume (:mod:`~cover.engine.checkpoint`, :mod:`~cover.engine.sampler`), mixed precision
(:mod:`~cover.engine.precision`), stop signals and non-finite guards (:mod:`~cover.engine.guards`),
DDP helpers (:mod:`~cover.engine.distributed`, :mod:`~cover.engine.launch`), the learning-rate
schedule, memory estimate, memory layout, run logging (:mod:`~cover.engine.logger`) and loss
curves (:mod:`~cover.engine.curves`). It imports nothing from the trainers above it.
"""
