"""The `mcts-pref` command: one thin typer command per stage.

Each stage module defines ``command`` (its options and docs) and keeps its
heavy imports (torch, transformers, vllm, deepspeed) inside functions, so
``--help`` is fast. Imports run one way: this module -> stage commands ->
drivers -> pure cores -> records (tests/test_imports.py checks it).
"""

from __future__ import annotations

import typer

from mcts_pref import (
    __version__, baseline, curriculum, datasets, evaluate, extract_pairs, merge, report, sample, search, showtree, train_dpo,
)

app = typer.Typer(
    name="mcts-pref",
    help=(
        "MCTS-guided step-level preference learning (MCTS-DPO) as composable stages.\n\n"
        "Every stage reads JSONL (a path or - for stdin) and writes JSONL (stdout or --out):\n\n"
        "prepare -> search -> extract-pairs -> train-dpo -> sample -> evaluate"
    ),
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mcts-pref {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


def _register() -> None:
    app.command("prepare")(datasets.command)
    app.command("sample")(sample.command)
    app.command("search")(search.command)
    app.command("show-tree")(showtree.command)
    app.command("extract-pairs")(extract_pairs.command)
    app.command("train-dpo")(train_dpo.command)
    app.command("evaluate")(evaluate.command)
    app.command("curriculum")(curriculum.command)
    app.command("instance-pairs")(baseline.command)
    app.command("merge")(merge.command)
    app.command("report")(report.command)


_register()


def main() -> None:
    app()
