"""Check a run's output folder against a scenario's expected.json.

    .venv/bin/wayfinder run --events scenarios/02_device_activation/events.jsonl --out out/s2
    .venv/bin/python scenarios/check.py scenarios/02_device_activation out/s2

The same check reads the files a user's run wrote and the outputs the tests take from
the cores. The format of expected.json is in scenarios/README.md. An item names
customers (and journey instances) by id; the outputs name them by pseudonym (the run's,
under WAYFINDER_STATE_KEY_SECRET), which the check works out from the id.
"""

import json
import sys
from pathlib import Path
from typing import Any

from flows.runtime.settings import state_key
from operators.identity import instance_name

#: A JSON object: an output line, or an item of expected.json.
Record = dict[str, Any]

#: The topics an expected item may name, as written by `wayfinder run --out DIR`.
TOPICS = ("journeys", "actions", "decisions", "audiences", "events")
#: Keys of an expected item that are not fields of the output line.
_META = frozenset({"topic", "count", "reasons_contain", "why"})


def read_outputs(out_dir: Path | str) -> dict[str, list[Record]]:
    """Every output line of a run, by topic; all `actions.<channel>` files are `actions`."""
    out_dir = Path(out_dir)
    outputs: dict[str, list[Record]] = {topic: [] for topic in TOPICS}
    for path in sorted(out_dir.glob("*.jsonl")):
        topic = "actions" if path.name.startswith("actions.") else path.stem
        if topic in outputs:
            outputs[topic] += [json.loads(line) for line in path.read_text().splitlines() if line]
    return outputs


def _records(topic: str, lines: list[Record]) -> list[Record]:
    """Decisions are matched per candidate: the decision's fields plus the candidate's."""
    if topic != "decisions":
        return lines
    return [
        {**{k: v for k, v in line.items() if k != "candidates"}, **candidate}
        for line in lines
        for candidate in line.get("candidates", [])
    ]


def _phrases(item: Record) -> list[str]:
    wanted = item.get("reasons_contain", [])
    return [wanted] if isinstance(wanted, str) else list(wanted)


#: Fields of an item that name a customer by id, and the output field that names them
#: by pseudonym (events, which Wayfinder writes for itself, carry the ids).
_NAMED = {"customer_id": "customer", "merged_into": "merged_into"}


def as_written(item: Record) -> Record:
    """The item as an output names its customers (and a loop record the state it is
    `to`), and their journeys' instances (by token: `operators.identity.instance_name`)."""
    if item.get("topic") == "events":  # the loop's records name a state by pseudonym
        return {k: state_key(v) if k == "to" else v for k, v in item.items()}
    written = {
        _NAMED.get(key, key): state_key(value) if key in _NAMED and value else value
        for key, value in item.items()
    }
    if item.get("instance") and item.get("customer_id"):
        written["instance"] = state_key(instance_name(item["customer_id"], item["instance"]))
    return written


def matches(item: Record, record: Record) -> bool:
    """Every field the item gives equals the record's (a list: all its elements are there)."""
    for key, want in item.items():
        if key in _META:
            continue
        have = record.get(key)
        if isinstance(want, list) and isinstance(have, list):
            if any(w not in have for w in want):
                return False
        elif have != want:
            return False
    text = " ".join(record.get("reasons", []))
    return all(phrase in text for phrase in _phrases(item))


def _describe(item: Record) -> str:
    shown = {k: v for k, v in item.items() if k != "why"}
    return json.dumps(shown, ensure_ascii=False)


def problems(expected: Record, outputs: dict[str, list[Record]]) -> list[str]:
    """What the outputs miss of `required` or hold of `forbidden`; empty when all holds."""
    found: list[str] = []
    for item in [*expected.get("required", []), *expected.get("forbidden", [])]:
        if item.get("topic") not in TOPICS:
            found.append(f"unknown topic (one of {', '.join(TOPICS)}): {_describe(item)}")
    if found:
        return found
    for item in expected.get("required", []):
        records = _records(item["topic"], outputs.get(item["topic"], []))
        wanted = as_written(item)
        hits = sum(matches(wanted, r) for r in records)
        count = item.get("count")
        if count is None and hits == 0:
            found.append(f"missing: {_describe(item)}")
        elif count is not None and hits != count:
            found.append(f"expected {count}, found {hits}: {_describe(item)}")
    for item in expected.get("forbidden", []):
        records = _records(item["topic"], outputs.get(item["topic"], []))
        wanted = as_written(item)
        hits = sum(matches(wanted, r) for r in records)
        if hits:
            found.append(f"forbidden, found {hits}: {_describe(item)}")
    return found


def load_expected(scenario_dir: Path | str) -> Record:
    expected: Record = json.loads((Path(scenario_dir) / "expected.json").read_text())
    return expected


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: check.py SCENARIO_DIR OUT_DIR", file=sys.stderr)
        return 2
    scenario, out = argv
    expected = load_expected(scenario)
    found = problems(expected, read_outputs(out))
    for problem in found:
        print(problem)
    total = len(expected.get("required", [])) + len(expected.get("forbidden", []))
    print(f"{Path(scenario).name}: {total - len(found)}/{total} expectations hold")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
