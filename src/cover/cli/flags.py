"""Command-line options made from config fields: one :class:`Flag` per option, a typer command from them.

A command's options are the fields of its config dataclass declared with ``cli`` (see
:mod:`cover.options`), nested sections included (``--window-radius`` sets ``model.window_radius``),
plus the few flags a command adds itself (``--config``, ``--dry-run``, ...). :func:`command`
gives typer a function whose signature lists them (``__signature__``, which typer reads), so
``--help`` shows each option's one-line help and the values come back as the nested mapping
the YAML file would hold.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer

from cover.options import Option, fields_of


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line option.

    Attributes:
        name: Its Python parameter name (``--batch-size`` is ``batch_size``).
        dest: Where its value goes in the config values (``("model", "window_radius")``);
            empty: the command reads it itself (``--config``, ``--dry-run``).
        annotation: Its command-line type (``str`` for a tuple such as ``64,64``).
        option: Its help, flags and visibility.
        default: Its value when not given (``None``: not given, the config decides).
    """

    name: str
    dest: tuple[str, ...]
    annotation: Any
    option: Option
    default: Any = None

    def parameter(self) -> inspect.Parameter:
        """The typer parameter: ``Annotated[type, typer.Option(...)]`` with its default."""
        spec = self.option
        flags = spec.flags
        if not flags and self.annotation in (bool, bool | None):
            # A switch that defaults to "per device" (None) can be turned either way; one that
            # defaults to False is turned on only (``--overwrite``), as the commands always had it.
            dashed = self.name.replace("_", "-")
            on_off = self.annotation is not bool and spec.default is None
            flags = (f"--{dashed}/--no-{dashed}",) if on_off else (f"--{dashed}",)
        info = typer.Option(*flags, help=spec.help, hidden=spec.hidden)
        return inspect.Parameter(
            self.name, inspect.Parameter.KEYWORD_ONLY, default=self.default, annotation=Annotated[self.annotation, info]
        )


def cli_type(annotation: Any) -> Any:
    """The command-line type of a field type: tuples are typed as text (``64,64``), every option may be left out."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is tuple:
        return str | None
    return annotation | None


def config_flags(cls: type, dest: tuple[str, ...] = ()) -> list[Flag]:
    """The :class:`Flag` of every field of a config class declared with ``cli``, nested sections included.

    Args:
        cls: A config dataclass.
        dest: The section of ``cls`` in the values (``("model",)``).

    Returns:
        The flags in field order; a nested section's flags where the section is declared.
    """
    flags = []
    for field, spec, annotation in fields_of(cls):
        if spec is None or not spec.cli:
            continue
        if dataclasses.is_dataclass(annotation):
            flags += config_flags(annotation, (*dest, field.name))
        else:
            flags.append(Flag(field.name, (*dest, field.name), cli_type(annotation), spec))
    return flags


def nested_values(flags: Iterable[Flag], given: dict[str, Any]) -> dict[str, Any]:
    """The config values of the flags given on the command line (``None``: not given), nested by ``dest``."""
    values: dict[str, Any] = {}
    for flag in flags:
        value = given.get(flag.name)
        if value is None or not flag.dest:
            continue
        section = values
        for key in flag.dest[:-1]:
            section = section.setdefault(key, {})
        section[flag.dest[-1]] = value
    return values


def command(name: str, doc: str, flags: list[Flag], run: Callable[[dict[str, Any]], None]) -> Callable[..., None]:
    """A typer command with one option per flag that calls ``run`` with every flag's value by name.

    Args:
        name: The command's name (``pretrain``).
        doc: Its ``--help`` text.
        flags: Its options, in ``--help`` order.
        run: Called with ``{flag name: value}`` (``None`` for those not given).

    Returns:
        The function to register with ``app.command()``.
    """
    names = [flag.name for flag in flags]
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: two options named {sorted({n for n in names if names.count(n) > 1})}")

    parameters = [flag.parameter() for flag in flags]
    signature = inspect.Signature(parameters)

    def function(**given: Any) -> None:
        bound = signature.bind(**given)  # called from Python too: options not given take their defaults
        bound.apply_defaults()
        run(dict(bound.arguments))

    function.__signature__ = signature  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in parameters}
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    return function
