"""The `wayfinder` command, one module per group of subcommands: `run`; the lab (`simulate`,
`react`, `evaluate`); journey analytics (`replay`, `map`); decision audit (`rerun`,
`shadow`); set-up (`topics`, `playbook`, `schema`)."""

from flows.cli.main import main

__all__ = ["main"]
