"""The ``cover`` console script: one module per sub-command, each thin over the Python API (:mod:`cover.api`).

- :mod:`cover.cli.console`: the typer app, ``--quiet``/``--verbose``, warnings, ``main`` (exit statuses);
- :mod:`cover.cli.options`: what the sub-commands share (YAML + options, ``--dry-run``, ``--intensity``);
- :mod:`cover.cli.flags`: command-line options made from config fields (``cover pretrain``, ``cover finetune``);
- :mod:`cover.cli.reference`: ``docs/options.md``, generated from the same fields;
- one module per sub-command: :mod:`~cover.cli.pretrain`, :mod:`~cover.cli.data`,
  :mod:`~cover.cli.finetune`, :mod:`~cover.cli.evaluate`, :mod:`~cover.cli.predict`,
  :mod:`~cover.cli.registration` (``cover register``), :mod:`~cover.cli.export`,
  :mod:`~cover.cli.analyze`, :mod:`~cover.cli.benchmark`; each has ``add_commands(app)``.

``cover.cli.main`` and ``cover.cli.app`` resolve lazily to :mod:`cover.cli.console`'s.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """``cover.cli.main`` / ``cover.cli.app`` (the console script of earlier installs imports ``cover.cli:main``)."""
    if name in ("main", "app"):
        import importlib

        return getattr(importlib.import_module("cover.cli.console"), name)
    raise AttributeError(f"module 'cover.cli' has no attribute {name!r}")
