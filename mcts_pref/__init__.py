"""mcts-pref: MCTS-guided step-level preference learning (MCTS-DPO) as composable CLI stages."""

__version__ = "0.1.0"
