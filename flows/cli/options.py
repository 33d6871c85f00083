"""Arguments several subcommands share, and how they are read.

Only light imports here: `wayfinder --help` builds every parser, and must answer fast.
"""

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias

from rich.console import Console

from flows.lab.simulator import SimulationConfig
from schemas.playbook import seconds

#: What each group of subcommands registers its commands with.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: Where embedded runs and tools write by default (gitignored).
DEFAULT_OUT = Path("out")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help says its default (unless it says it itself, or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == []:
            return text
        if default is argparse.SUPPRESS:
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        return f"{text} (default: %(default)s)"


def add_command(
    sub: Subcommands, name: str, *, help: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand whose help says every option's default."""
    return sub.add_parser(name, help=help, description=description, formatter_class=HelpFormatter)


def write_json(path: Path, document: object) -> Path:
    """Write a JSON document (indented, one trailing newline), making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def hours(text: str) -> float:
    """A span of time in hours: a number of hours (`72`, `1.5`) or a duration (`2d`, `36h`,
    `90m`, `1d12h`)."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = seconds(text.strip()) / 3600
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a duration: give hours (72) or a duration (3d, 36h, 90m)"
            ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the span must be positive")
    return value


def start_time(text: str) -> datetime:
    """When the simulated span starts: an ISO 8601 time with its zone
    (`2026-03-02T06:00Z`), `now`, or a duration before now (`now-24h`: a live service
    fed the simulation sees events as fresh as its own)."""
    text = text.strip()
    if text == "now" or text.startswith("now-"):
        before = hours(text[4:]) if text != "now" else 0.0
        return datetime.fromtimestamp(time.time(), UTC) - timedelta(hours=before)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give ISO 8601 with a zone (2026-03-02T06:00Z), "
            "now, or now-DURATION (now-24h)"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +HH:MM)")
    return when


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of seconds above 0")
    return value


def add_simulation_args(
    parser: argparse.ArgumentParser, customers: int | None = None, hours_: float | None = None
) -> None:
    """--customers, --seed, --hours and --start of the built-in simulator."""
    group = parser.add_argument_group("simulator")
    defaults = SimulationConfig()
    group.add_argument(
        "--customers",
        type=positive_int,
        default=customers or defaults.customers,
        help="simulated customers",
    )
    group.add_argument("--seed", type=int, default=defaults.seed, help="simulator seed")
    group.add_argument(
        "--hours",
        type=hours,
        default=hours_ or defaults.hours,
        help="simulated span of event time: hours, or a duration such as 3d or 36h",
    )
    group.add_argument(
        "--start",
        type=start_time,
        default=defaults.start,
        metavar="WHEN",
        help="when the span starts: ISO 8601 with a zone, now, or now-DURATION (now-24h)",
    )


def simulation(args: argparse.Namespace) -> SimulationConfig:
    return SimulationConfig(
        customers=args.customers, seed=args.seed, hours=args.hours, start=args.start
    )


def add_playbook_arg(parser: argparse.ArgumentParser, what: str = "playbook TOML") -> None:
    parser.add_argument(
        "--playbook", type=Path, help=f"{what} (default: WAYFINDER_PLAYBOOK, else the built-in)"
    )


def print_error(console: Console, text: str) -> None:
    """An error as the text it is: no markup ("[a-z0-9]" in a message stays), no emoji
    codes, no highlighting, no wrapping inside a line."""
    console.print(text, style="red", markup=False, emoji=False, highlight=False, soft_wrap=True)
