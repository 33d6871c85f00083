"""Benchmark peers: the workload built the way a Python data engineer would otherwise
build it (Quix Streams around Wayfinder's own cores; a hand-written kafka-python
consumer with one rule), each a standalone program that `make bench` runs beside
Wayfinder's flow and that prints one JSON line of figures."""

import argparse
import json


def arguments(
    description: str, group_help: str, state_help: str, argv: list[str] | None
) -> argparse.Namespace:
    """What `make bench` tells every peer: the broker, the topics, how many input records
    to read, and the group and state folder of the run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--events-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--expect", type=int, required=True, help="input records to process")
    parser.add_argument("--group", help=group_help)
    parser.add_argument("--state-dir", help=state_help)
    return parser.parse_args(argv)


def report(engine: str, events: int, outputs: int, seconds: float) -> None:
    """The peer's one JSON line of figures on stdout, which `make bench` reads."""
    figures = {
        "engine": engine,
        "events": events,
        "outputs": outputs,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds, 1),
    }
    print(json.dumps(figures))
