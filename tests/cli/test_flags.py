"""Command-line options made from config fields: the flags of today, nested values, typer's view of them."""

from __future__ import annotations

import dataclasses

import typer
import typer.main
from typer.testing import CliRunner

from cover.cli.flags import Flag, command, config_flags, nested_values
from cover.options import Option, option

#: The flags ``cover pretrain`` and ``cover finetune`` took before their options were made from
#: the config fields (``--help`` of commit 0ceb2fa); the generated commands keep every one.
#: Added since: ``--weight-decay`` (both), ``--cudnn-benchmark`` and ``--tf32`` (finetune).
PRETRAIN = (
    "--amp --backbone --batch-size --cache-dir --cache-memory-mb --channels --channels-last --no-channels-last "
    "--checkpoint-every --checkpoint-minutes --compile --con-weight --config --configuration --cudnn-benchmark "
    "--no-cudnn-benchmark --data --device --devices --dim --dry-run --head-dim --heads --in-channels --intensity "
    "--preset --lr --method --mov-schedule --num-workers --on-bad-file --out --overwrite --plans --recipe --resume "
    "--seed --size --spacing --steps --tf32 --no-tf32 --vec-weight --views --window-radius --weight-decay"
)
FINETUNE = (
    "--amp --backbone-lr-scale --batch-size --channels --channels-last --no-channels-last --checkpoint --pretrained "
    "--checkpoint-every --checkpoint-minutes --compile --config --datalist --device --devices --dim --dry-run "
    "--epochs --freeze --freeze-steps --images --in-channels --intensity --preset --label-fraction --label-values "
    "--labels --lr --lr-schedule --num-classes --num-labeled --out --overwrite --patience --resume --seed --select "
    "--size --steps --task --transfer --val-datalist --val-every --val-fraction --val-images --val-labels "
    "--weight-decay --cudnn-benchmark --no-cudnn-benchmark --tf32 --no-tf32"
)


def _flags_of(name: str) -> set[str]:
    from cover.cli.console import _add_commands, app

    _add_commands()
    group = typer.main.get_command(app)
    return {opt for param in group.commands[name].params for opt in (*param.opts, *param.secondary_opts)}


def test_pretrain_and_finetune_keep_their_flags():
    assert _flags_of("pretrain") == set(PRETRAIN.split())
    assert _flags_of("finetune") == set(FINETUNE.split())


@dataclasses.dataclass
class Section:
    radius: int = option(2, "Radius.")
    hidden_one: int = option(1, "Not on the command line.", cli=False)


@dataclasses.dataclass
class Run:
    steps: int | None = option(None, "Steps.")
    size: tuple[int, ...] = option((4, 4), "Size.")
    fast: bool | None = option(None, "Fast, or not; default per device.")
    force: bool = option(False, "Force.")
    source: str | None = option(None, "Where from.", flags=("--from", "--source"))
    yaml_only: float = option(0.5, "YAML only.", cli=False)
    section: Section = option(default_factory=Section, help="A section.")


def test_config_flags_follow_the_fields_and_their_sections():
    flags = config_flags(Run)
    assert [(f.name, f.dest) for f in flags] == [
        ("steps", ("steps",)),
        ("size", ("size",)),
        ("fast", ("fast",)),
        ("force", ("force",)),
        ("source", ("source",)),
        ("radius", ("section", "radius")),
    ]
    assert flags[1].annotation == str | None  # a tuple is given as text, 4,4


def test_a_generated_command_parses_its_flags_into_nested_values():
    seen = []
    flags = [*config_flags(Run), Flag("dry_run", (), bool, Option("Dry.", flags=("--dry-run",)), default=False)]
    app = typer.Typer()
    app.command()(command("run", "Run it.", flags, seen.append))
    app.command()(command("other", "Another command, so that run is a sub-command.", [], seen.append))
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--steps", "3", "--size", "8,16", "--no-fast", "--from", "x", "--radius", "1"])
    assert result.exit_code == 0, result.output
    given = seen[-1]
    assert given == {
        "steps": 3,
        "size": "8,16",
        "fast": False,
        "force": None,
        "source": "x",
        "radius": 1,
        "dry_run": False,
    }
    assert nested_values(flags, given) == {
        "steps": 3,
        "size": "8,16",
        "fast": False,
        "source": "x",
        "section": {"radius": 1},
    }
    help_text = runner.invoke(app, ["run", "--help"], terminal_width=200).output
    assert "--fast" in help_text and "--no-fast" in help_text and "--no-force" not in help_text
    assert "Where from." in help_text and "--yaml-only" not in help_text and "--hidden-one" not in help_text
    assert runner.invoke(app, ["run", "--yaml-only", "1"]).exit_code == 2
