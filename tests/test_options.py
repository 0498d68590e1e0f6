"""options.options_from: a config dataclass's fields become a command's options, help and default written once."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Annotated, Optional

import pytest
import typer
from typer.testing import CliRunner

from mcts_pref.dpo_config import DpoConfig
from mcts_pref.mcts import Config
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


@dataclass
class Run:
    path: str  # no default: the command declares it
    steps: int = knob(2, "Steps to run.")
    fast: bool = knob(True, "Go fast.")
    seed: int = 0
    label: str = field(init=False)  # computed, no option

    def __post_init__(self) -> None:
        self.label = f"{self.path}:{self.steps}"


def test_excluded_fields_come_from_the_commands_own_parameters_and_init_false_ones_are_skipped():
    seen = []

    @options_from(Run, "job", exclude=("path", "seed"))
    def command(path: Annotated[str, typer.Argument()], *, job: Run,
                seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0) -> None:
        seen.append((path, job, seed))

    assert run(command, "p", "--steps", "5", "--no-fast", "--seed", "3").exit_code == 0
    assert run(command, "q").exit_code == 0
    assert [(r.path, r.steps, r.fast, r.seed, r.label) for _, r, _ in seen] == [("p", 5, False, 3, "p:5"),
                                                                                 ("q", 2, True, 0, "q:2")]
    assert [(p, s) for p, _, s in seen] == [("p", 3), ("q", 0)]  # and they still reach the command
    text = run(command, "--help").output
    assert "--fast" in text and "--no-fast" in text and "--label" not in text and "--path" not in text
    with pytest.raises(TypeError, match="exclude names no field"):
        options_from(Run, "job", exclude=("paht",))


def test_every_policy_knob_has_its_help_and_default_once():
    for f in fields(PolicySpec):
        assert f.metadata["help"].strip(), f.name
    assert PolicySpec().policy_id == "default"
    assert PolicySpec(model="m", adapter="a").policy_id == "m+a"


@pytest.mark.parametrize("cls, own", [
    (Config, {"seed"}),
    (DpoConfig, {"pairs", "model", "out", "adapter", "seed", "dtype", "load_in_4bit", "trust_remote_code", "device"}),
])
def test_every_search_and_train_knob_has_its_help_in_its_field(cls, own):
    """The stage configs' knobs carry their help; the rest are the command's own (or computed)."""
    without = {f.name for f in fields(cls) if f.init and not f.metadata.get("help", "").strip()}
    assert without == own
