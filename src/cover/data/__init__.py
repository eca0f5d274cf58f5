"""Medical image data layer.

Modules (import what you need; nothing heavy is imported here):

- :mod:`cover.data.readers`: ``read_image`` -> ``ImageRecord``; ``write_like``.
- :mod:`cover.data.dicom`: DICOM files, multi-frame files and series folders.
- :mod:`cover.data.presets`: intensity presets (``ct``, ``mri``, ``xray``, ``zscore``, ...).
- :mod:`cover.data.discovery`: ``find_images`` and ``load_datalist``.
- :mod:`cover.data.store`: ``CachedVolumeStore``, the decode-once cache.
- :mod:`cover.data.datasets`: ``Slices2DDataset``, ``Patches3DDataset``,
  ``build_pretrain_dataset``.
- :mod:`cover.data.inspect`: ``inspect_data`` / ``run_inspect`` (``cover data inspect``).
- :mod:`cover.data.demo`: all built-in data (the MNI152 template, the demo's images and labeled
  slices, the benchmark's pseudo-subjects and built-in tasks).
"""
