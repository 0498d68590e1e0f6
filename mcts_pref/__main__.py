from mcts_pref.cli import main

main()
