"""Subcommands of the `ntk-ngd` CLI, one module each (see ntk_ngd/cli.py)."""
