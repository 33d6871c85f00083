"""The `wayfinder` command: the parser, made of each group's subcommands, and `main`."""

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from rich.console import Console

from flows.cli import customer, decisions, journeys, lab, run, setup
from flows.cli.options import HelpFormatter, print_error

#: The groups of subcommands, in the order `--help` lists them.
GROUPS = (run, lab, journeys, customer, decisions, setup)


def _version() -> str:
    try:
        return version("wayfinder")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wayfinder",
        description="Real-time customer journey orchestration.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"wayfinder {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from flows.dataflow.stopping import stacks_on_sigusr1
    from flows.runtime.kafka_check import EXIT_KAFKA_UNAVAILABLE, KafkaUnavailable
    from flows.runtime.recovery_store import UnusableRecoveryFolder
    from flows.runtime.settings import SettingsError
    from schemas.playbook import PlaybookError
    from state.key_vault import KeyVaultError

    args = build_parser().parse_args(argv)
    # `kill -USR1`: a command that seems stuck says where it is, and goes on.
    stacks_on_sigusr1()
    console = Console(stderr=args.command == "schema")
    try:
        result: int = args.handler(args, console)
    except SettingsError as exc:
        print_error(console, f"settings: {exc}")
        return 2
    except PlaybookError as exc:
        print_error(Console(stderr=True), f"playbook error: {exc}")
        return 2
    except UnusableRecoveryFolder as exc:
        print_error(Console(stderr=True), f"recovery: {exc}")
        return 2
    except KeyVaultError as exc:
        print_error(Console(stderr=True), f"error: {exc}")
        return 2
    except KafkaUnavailable as exc:  # one line naming the cluster and what failed, no secret
        print_error(Console(stderr=True), f"error: {exc}")
        return EXIT_KAFKA_UNAVAILABLE
    return result


if __name__ == "__main__":
    sys.exit(main())
