"""Models from checkpoints: :mod:`cover.models.loading` is the one checkpoint -> model loader."""
