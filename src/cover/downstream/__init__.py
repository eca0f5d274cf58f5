"""Downstream use of pretrained backbones: fine-tune, linear probe, evaluate, predict.

- :mod:`cover.downstream.finetune`: ``finetune`` (``cover finetune``), config in
  :mod:`cover.downstream.config`.
- :mod:`cover.downstream.evaluate`: ``evaluate`` (``cover evaluate``): Dice/HD95 or AUC.
- :mod:`cover.downstream.predict`: ``predict`` (``cover predict``): masks in the input's format.

Building blocks: ``cases`` (labeled cases, the seeded split), ``loading`` (reading through the
data layer), ``batches``, ``augment``, ``optim``, ``inference`` (sliding windows), ``metrics``,
``figures``, ``outputs``. The task networks and their checkpoints are in :mod:`cover.models`, the
commands in :mod:`cover.cli`.
"""
