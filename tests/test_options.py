"""One declaration per option: every option has its one line of help, and the declaration is the field."""

from __future__ import annotations

import dataclasses

import pytest

from cover.config import ModelConfig, PretrainConfig
from cover.downstream.config import AugmentConfig, BackboneConfig, FinetuneConfig
from cover.options import Option, documented, missing_help, option, option_of, option_rows
from cover.views import ViewConfig

CONFIGS = (PretrainConfig, ModelConfig, ViewConfig, FinetuneConfig, AugmentConfig, BackboneConfig)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_option_has_one_line_of_help(cls):
    assert missing_help(cls) == []
    for field in dataclasses.fields(cls):
        text = option_of(field).help
        assert "\n" not in text and text.endswith((".", ")")), f"{cls.__name__}.{field.name}: {text!r}"


@dataclasses.dataclass
class Inner:
    bare: int = 1
    empty: int = option(2, "  ")


@dataclasses.dataclass
class Outer:
    steps: int = option(3, "Steps.")
    inner: Inner = option(default_factory=Inner, help="A section.")


def test_missing_help_names_the_field_and_its_section():
    assert missing_help(Outer) == ["inner.bare", "inner.empty"]


def test_a_shared_option_keeps_its_help_with_a_default_of_its_own():
    shared = Option("Seed.", default=0)

    @dataclasses.dataclass
    class A:
        seed: int = shared()

    @dataclasses.dataclass
    class B:
        seed: int = shared(default=7)

    assert (A().seed, B().seed) == (0, 7)
    assert option_of(dataclasses.fields(B)[0]) == dataclasses.replace(shared, default=7)
    assert option_of(dataclasses.fields(A)[0]).help == option_of(dataclasses.fields(B)[0]).help == "Seed."


def test_shared_options_are_declared_once_for_pretrain_and_finetune():
    """Same help in both configs where the option means the same; their own defaults where they differ."""
    pretrain = {f.name: option_of(f) for f in dataclasses.fields(PretrainConfig)}
    finetune = {f.name: option_of(f) for f in dataclasses.fields(FinetuneConfig)}
    for name in ("seed", "device", "amp", "checkpoint_minutes", "resume", "max_nonfinite_steps", "in_channels"):
        assert pretrain[name].help == finetune[name].help, name
    assert (PretrainConfig().keep_checkpoints, FinetuneConfig().keep_checkpoints) == (3, 2)
    assert (PretrainConfig().weight_decay, FinetuneConfig().weight_decay) == (1e-4, 1e-5)


def test_a_mutable_default_is_fresh_per_instance():
    assert PretrainConfig().method_options is not PretrainConfig().method_options
    assert PretrainConfig().model is not PretrainConfig().model


def test_an_option_without_a_default_is_refused():
    with pytest.raises(TypeError, match="no default"):
        option(help="Nothing.")


def test_documented_writes_the_attributes_from_the_help():
    @documented
    @dataclasses.dataclass
    class Run:
        """A run."""

        steps: int = option(3, "Optimiser steps.", doc="Each one a batch.")

    assert Run.__doc__ == "A run.\n\n    Attributes:\n        steps: Optimiser steps. Each one a batch.\n"


def test_option_rows_flatten_sections_with_their_defaults():
    rows = {key: (default, text) for key, default, text in option_rows(PretrainConfig)}
    assert rows["model.window_radius"] == ("2", "MoV window radius r (window 2r+1 per axis).")
    assert rows["views.scale_range"][0] == "0.25,1.75"
    assert rows["lr"][0] == "-" and rows["compile"][0] == "false" and rows["method_options"][0] == "{}"
    assert "model" not in rows and "views" not in rows
