"""Every ``podium`` subcommand that needs no terminal UI: ``main`` builds the parser and
dispatches; ``generate`` and ``gpus`` hold their subcommands. The console script is
``podium.tui.cli``, which adds the dashboard."""
