"""One module per subcommand, each with ``run(args) -> int``. Imported lazily by cli."""
