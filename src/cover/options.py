"""One declaration per option: a config dataclass field with its default, one-line help and flag.

A run's options are fields of a config dataclass (:class:`cover.config.PretrainConfig`,
:class:`cover.downstream.config.FinetuneConfig`, ...). Each is declared once, with
:func:`option` (or an :class:`Option` that several configs share), and everything else is
derived from that declaration: the command-line option and its ``--help`` line
(:func:`cover.cli.flags.command`), the allowed values checked when a YAML file or the
command line sets it (:func:`cover.config.update_dataclass`), the class docstring's
``Attributes:`` section (:func:`documented`) and the option tables of ``docs/options.md``
(:func:`option_table`).

Example::

    @documented
    @dataclass
    class TrainConfig:
        \"\"\"Everything ``cover train`` needs.\"\"\"

        steps: int = option(100, "Optimiser steps.")
        amp: str = option("auto", "Mixed precision: auto, none or bf16.", choices=("auto", "none", "bf16"))
"""

from __future__ import annotations

import dataclasses
import textwrap
import typing
from collections.abc import Callable, Iterator
from typing import Any

#: Metadata key of a field's :class:`Option`.
KEY = "option"


class _Unset:
    """No default declared (``dataclasses.MISSING`` cannot be a dataclass field's own default)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclasses.dataclass(frozen=True)
class Option:
    """How one config field is offered: help, command-line flag, allowed values.

    Calling an :class:`Option` gives the dataclass field, so an option that several configs
    share is declared once and used as ``seed: int = Loop.seed()`` in each (with its own default
    where they differ: ``Loop.keep_checkpoints(default=2)``; :mod:`cover.config`).

    Attributes:
        help: One line: the ``--help`` text and the first sentence of the field's documentation.
        default: The default value (:data:`UNSET` with ``default_factory``).
        default_factory: Makes the default of a mutable value (a mapping, a nested config).
        doc: Further sentences for the class docstring and ``docs/options.md`` (not ``--help``).
        cli: Offered on the command line (nested groups: their fields with ``cli`` are).
        flags: The command-line flags (typer's declarations, e.g. ``("--checkpoint", "--pretrained")``);
            empty: ``--NAME`` with ``_`` as ``-``, a bool field with default ``None`` also
            ``--no-NAME``.
        choices: The allowed values, checked when a value is set.
        hidden: Accepted on the command line but not listed by ``--help``.
    """

    help: str
    default: Any = UNSET
    default_factory: Any = UNSET
    doc: str = ""
    cli: bool = True
    flags: tuple[str, ...] = ()
    choices: tuple[Any, ...] | None = None
    hidden: bool = False

    def __call__(self, **changes: Any) -> Any:
        """The dataclass field of this option, with ``changes`` (e.g. ``default=2``, ``cli=False``)."""
        spec = dataclasses.replace(self, **changes) if changes else self
        if "default_factory" in changes:
            spec = dataclasses.replace(spec, default=UNSET)
        elif "default" in changes:
            spec = dataclasses.replace(spec, default_factory=UNSET)
        if spec.default is UNSET and spec.default_factory is UNSET:
            raise TypeError(f"option {spec.help!r}: no default")
        if spec.default_factory is not UNSET:
            return dataclasses.field(default_factory=spec.default_factory, metadata={KEY: spec})
        return dataclasses.field(default=spec.default, metadata={KEY: spec})


def option(default: Any = UNSET, help: str = "", **settings: Any) -> Any:
    """A config dataclass field declared with its default and one-line help (see :class:`Option`).

    Args:
        default: The default value; a nested config class or a mapping is given as
            ``default_factory=...`` instead.
        help: One line for ``--help``, the docstring and ``docs/options.md``.
        **settings: Further :class:`Option` settings (``doc``, ``cli``, ``flags``, ``choices``, ...).

    Returns:
        The dataclass field.
    """
    return Option(help=help, default=default, **settings)()


def option_of(field: dataclasses.Field) -> Option | None:
    """The :class:`Option` a field was declared with, or ``None``."""
    return field.metadata.get(KEY)


def default_of(field: dataclasses.Field) -> Any:
    """A field's default value (a fresh one for a ``default_factory``)."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def fields_of(cls: type) -> Iterator[tuple[dataclasses.Field, Option | None, Any]]:
    """``(field, option, type)`` of each field of a config class, in declaration order."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        yield field, option_of(field), hints[field.name]


def missing_help(cls: type, prefix: str = "") -> list[str]:
    """The fields of a config class (nested config classes included) declared without help.

    Args:
        cls: A config dataclass.
        prefix: Section of ``cls`` in messages (``"model."``).

    Returns:
        Their section-qualified names; empty when every field has its one line.
    """
    missing = []
    for field, spec, annotation in fields_of(cls):
        if spec is None or not spec.help.strip():
            missing.append(prefix + field.name)
        if dataclasses.is_dataclass(annotation):
            missing += missing_help(annotation, f"{prefix}{field.name}.")
    return missing


def _doc_line(name: str, spec: Option | None) -> str:
    text = spec.help if spec is not None else ""
    if spec is not None and spec.doc:
        text = f"{text} {spec.doc}"
    return textwrap.fill(f"{name}: {text}", 100, initial_indent=" " * 8, subsequent_indent=" " * 12)


def documented(cls: type) -> type:
    """Class decorator: append an ``Attributes:`` section made from the fields' help to the docstring."""
    lines = [_doc_line(field.name, spec) for field, spec, _ in fields_of(cls)]
    cls.__doc__ = f"{(cls.__doc__ or '').rstrip()}\n\n    Attributes:\n" + "\n".join(lines) + "\n"
    return cls


def _shown(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return "(section)"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else "()"
    if value is None:
        return "-"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def option_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, default, help)`` of every option of a config class, nested sections flattened.

    Args:
        cls: A config dataclass.
        prefix: Section of ``cls`` (``"model."``).

    Returns:
        One row per field in declaration order; the default as written in ``docs/options.md``
        (``-`` for ``None``: resolved at run time, ``,`` between the values of a tuple).
    """
    rows = []
    for field, spec, annotation in fields_of(cls):
        if dataclasses.is_dataclass(annotation):
            rows += option_rows(annotation, f"{prefix}{field.name}.")
            continue
        text = spec.help if spec is not None else ""
        rows.append((prefix + field.name, _shown(default_of(field)), text))
    return rows


def option_table(cls: type, flag_of: Callable[[str], str | None] = lambda key: None) -> str:
    """A Markdown table of a config class's options: key, flag, default and help.

    Args:
        cls: A config dataclass.
        flag_of: The command-line flag of a key, or ``None`` for YAML only.

    Returns:
        The table, one line per option, ending with a newline.
    """
    lines = ["| key | flag | default | what it sets |", "|---|---|---|---|"]
    for key, default, text in option_rows(cls):
        flag = flag_of(key)
        shown_flag = f"`{flag}`" if flag else ""
        lines.append(f"| `{key}` | {shown_flag} | `{default}` | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
