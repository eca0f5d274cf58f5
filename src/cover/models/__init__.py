"""Checkpoint <-> model.

- :mod:`cover.models.loading`: the one checkpoint -> model loader.
- :mod:`cover.models.export`: the export formats (``cover export``, :func:`cover.load_pretrained`).
"""
