"""Stage not built yet."""

from mcts_pref.console import fail, stage


@stage
def command() -> None:
    """Not implemented yet."""
    fail("not implemented yet")
