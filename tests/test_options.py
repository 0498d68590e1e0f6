"""options.options_from: a config dataclass's fields become a command's options, help and default written once."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, Optional

import pytest
import typer
from typer.testing import CliRunner

from mcts_pref.options import options_from
from mcts_pref.policy_spec import PolicySpec, knob


@dataclass(frozen=True)
class Knobs:
    size: int = knob(3, "How many.", short="-s")
    name_of_it: Optional[str] = knob(None, "What it is called.")


def run(fn, *args: str) -> typer.testing.Result:
    app = typer.Typer()
    app.command()(fn)
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_fields_become_options_and_the_command_gets_the_object():
    seen = []

    @options_from(Knobs, "knobs")
    def command(path: Annotated[str, typer.Argument()], knobs: Knobs,
                loud: Annotated[bool, typer.Option("--loud")] = False) -> None:
        seen.append((path, knobs, loud))

    assert run(command, "p", "-s", "5", "--name-of-it", "x", "--loud").exit_code == 0
    assert run(command, "q").exit_code == 0
    assert seen == [("p", Knobs(5, "x"), True), ("q", Knobs(), False)]
    text = run(command, "--help").output
    assert "--size" in text and "-s" in text and "How many." in text and "[default: 3]" in text
    assert "--name-of-it" in text and "What it is called." in text
    assert text.index("--size") < text.index("--name-of-it") < text.index("--loud")


def test_order_places_the_options_among_the_commands_own():
    @options_from(Knobs, "knobs", order=("loud", "name_of_it", "knobs_x", "size"))
    def command(knobs: Knobs, knobs_x: Annotated[int, typer.Option()] = 0,
                loud: Annotated[bool, typer.Option("--loud")] = False) -> None:
        pass

    text = run(command, "--help").output
    assert text.index("--loud") < text.index("--name-of-it") < text.index("--knobs-x") < text.index("--size")
    with pytest.raises(TypeError, match="order must name each parameter"):
        options_from(Knobs, "knobs", order=("size",))(command.__wrapped__)


def test_a_field_without_default_cannot_be_an_option():
    @dataclass
    class NoDefault:
        size: int

    with pytest.raises(TypeError, match="needs a default"):
        options_from(NoDefault, "k")(lambda k: None)


def test_every_policy_knob_has_its_help_and_default_once():
    for f in fields(PolicySpec):
        assert f.metadata["help"].strip(), f.name
    assert PolicySpec().policy_id == "default"
    assert PolicySpec(model="m", adapter="a").policy_id == "m+a"
