"""Process-mining event logs for tests: read a CSV log, or generate one with a seed.

`read_log_csv` reads the process-mining CSV layout (`case:concept:name`,
`concept:name`, `time:timestamp`, any other columns as attributes) into the
stream the next-step evaluation takes: (case id, activity, epoch seconds,
attributes), sorted by timestamp, ties kept in file order.

The generators mimic real service processes with different vocabularies, case
counts, time spans and optional columns, and are deterministic for a seed:

- `helpdesk_log`: tickets with wait/work loops, escalation that depends on the
  agent who took the ticket and on priority, reopened tickets by product.
- `permit_log`: permit applications whose branches depend on case attributes
  (permit type, channel, applicant, floor area), parallel checks whose order
  depends on the clerk, and a decision that depends on what came before.
- `hospital_log`: emergency-ward pathways with repeated lab tests, triage- and
  age-dependent treatment and admission, and releases by ward.
"""

import csv
import random
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

CASE, ACTIVITY, TIMESTAMP = "case:concept:name", "concept:name", "time:timestamp"

Row = dict[str, str]
Stream = list[tuple[str, str, float, dict[str, str | None]]]


def log_stream(
    rows: Iterable[Mapping[str, str]],
    case: str = CASE,
    activity: str = ACTIVITY,
    timestamp: str = TIMESTAMP,
) -> Stream:
    """Rows of a log (file order) as the evaluation stream, in timestamp order.

    Timestamps may carry an offset or not (then UTC); the sort is stable, so events
    with the same time keep their file order. Blank attribute values become None.
    """
    events = []
    for row in rows:
        at = datetime.fromisoformat(row[timestamp])
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        attributes = {
            k: (v if v != "" else None)
            for k, v in row.items()
            if k not in (case, activity, timestamp)
        }
        events.append((row[case], row[activity], at.timestamp(), attributes))
    events.sort(key=lambda event: event[2])
    return events


def read_log_csv(path: str | Path, **columns: str) -> Stream:
    """A process-mining CSV log as the evaluation stream (see `log_stream`)."""
    with open(path, newline="", encoding="utf-8") as f:
        return log_stream(csv.DictReader(f), **columns)


def write_log_csv(rows: list[Row], path: str | Path) -> None:
    """Rows (all with the same columns) as a CSV log."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------- generation


class _Case:
    """One case being written: its id, case attributes and clock."""

    def __init__(
        self, rows: list[Row], case_id: str, start: datetime, attributes: Mapping[str, str]
    ) -> None:
        self.rows = rows
        self.case_id = case_id
        self.at = start
        self.attributes = dict(attributes)

    def event(self, activity: str, after_minutes: float, **event_attributes: str) -> None:
        self.at += timedelta(minutes=after_minutes)
        row = {CASE: self.case_id, ACTIVITY: activity, TIMESTAMP: self.at.isoformat(sep=" ")}
        row.update({f"case:{k}": v for k, v in self.attributes.items()})
        row.update({f"org:{k}": v for k, v in event_attributes.items()})
        self.rows.append(row)


def _generate(
    seed: int,
    cases: int,
    prefix: str,
    mean_gap_minutes: float,
    tz: timezone,
    write_case: Callable[[random.Random, _Case], None],
    case_attributes: Callable[[random.Random], dict[str, str]],
) -> list[Row]:
    rng = random.Random(seed)
    rows: list[Row] = []
    at = datetime(2019, 1, 7, 8, 0, tzinfo=tz)
    for n in range(cases):
        at += timedelta(minutes=rng.expovariate(1.0 / mean_gap_minutes))
        case = _Case(rows, f"{prefix}-{1000 + n}", at, case_attributes(rng))
        write_case(rng, case)
    return rows


def _minutes(rng: random.Random, mean: float) -> float:
    return rng.expovariate(1.0 / mean)


# -- help desk

_AGENTS = {  # agent: (group, how often they escalate instead of fixing)
    "Value 1": ("L1", 0.1),
    "Value 2": ("L1", 0.7),
    "Value 3": ("L1", 0.15),
    "Value 4": ("L1", 0.8),
    "Value 5": ("L1", 0.2),
    "Value 6": ("L2", 0.05),
    "Value 7": ("L2", 0.1),
}
_PRODUCTS = [f"PROD{n}" for n in range(1, 9)]


def _helpdesk_case_attributes(rng: random.Random) -> dict[str, str]:
    return {
        "priority": rng.choices(["low", "medium", "high"], [5, 3, 2])[0],
        "product": rng.choice(_PRODUCTS),
        "customer": f"Customer {rng.randint(1, 400)}",
        "channel": rng.choices(["e-mail", "phone", "portal"], [4, 3, 3])[0],
    }


def _helpdesk_case(rng: random.Random, case: _Case) -> None:
    priority, product = case.attributes["priority"], case.attributes["product"]
    l1 = [a for a, (group, _) in _AGENTS.items() if group == "L1"]
    l2 = [a for a, (group, _) in _AGENTS.items() if group == "L2"]
    case.event("Insert ticket", 0, resource="Value 8", group="Front")
    case.event("Assign seriousness", _minutes(rng, 30), resource="Value 8", group="Front")
    agent = rng.choice(l1)
    case.event("Take in charge ticket", _minutes(rng, 120), resource=agent, group="L1")
    escalate = _AGENTS[agent][1] + (0.15 if priority == "high" else 0.0)
    waits = {"low": 2, "medium": 1, "high": 0}[priority]
    for _ in range(rng.randint(0, waits)):
        case.event("Wait", _minutes(rng, 300), resource=agent, group="L1")
        case.event("Take in charge ticket", _minutes(rng, 600), resource=agent, group="L1")
    if rng.random() < escalate:
        case.event("Require upgrade", _minutes(rng, 60), resource=agent, group="L1")
        agent = rng.choice(l2)
        case.event("Take in charge ticket", _minutes(rng, 240), resource=agent, group="L2")
        if product in ("PROD3", "PROD7") or rng.random() < 0.2:
            case.event("Create SW anomaly", _minutes(rng, 120), resource=agent, group="L2")
            case.event("Schedule intervention", _minutes(rng, 600), resource=agent, group="L2")
    case.event("Resolve ticket", _minutes(rng, 240), resource=agent, group=_AGENTS[agent][0])
    reopen = 0.35 if product in ("PROD2", "PROD5") else 0.05
    if rng.random() < reopen:
        case.event("Reopen ticket", _minutes(rng, 2000), resource="Value 8", group="Front")
        case.event("Take in charge ticket", _minutes(rng, 120), resource=agent, group="L1")
        case.event("Resolve ticket", _minutes(rng, 240), resource=agent, group="L1")
    case.event("Closed", _minutes(rng, 1500), resource="Value 8", group="Front")
    if rng.random() < (0.6 if case.attributes["channel"] == "portal" else 0.1):
        case.event("VERIFIED", _minutes(rng, 3000), resource="Value 8", group="Front")


def helpdesk_log(seed: int = 1, cases: int = 900) -> list[Row]:
    """A help desk: loops, agent-dependent escalation, product-dependent reopening."""
    return _generate(
        seed,
        cases,
        "Case",
        mean_gap_minutes=90,
        tz=timezone(timedelta(hours=1)),
        write_case=_helpdesk_case,
        case_attributes=_helpdesk_case_attributes,
    )


# -- permit office

_CLERKS = {"clerk-a": "fees first", "clerk-b": "completeness first", "clerk-c": "fees first"}


def _permit_case_attributes(rng: random.Random) -> dict[str, str]:
    kind = rng.choices(["building", "environment", "event", "demolition"], [5, 2, 2, 1])[0]
    return {
        "permit": kind,
        "channel": rng.choices(["Internet", "Desk", "Post", "e-mail"], [6, 2, 1, 1])[0],
        "applicant": rng.choices(["private", "company"], [6, 4])[0],
        "floor_area": str(rng.choice([30, 60, 90, 150, 400, 900, 2500])),
        "department": rng.choice(["North", "South"]),
    }


def _permit_case(rng: random.Random, case: _Case) -> None:
    a = case.attributes
    area = int(a["floor_area"])
    clerk = rng.choice(list(_CLERKS))
    case.event("Register application", 0, resource=clerk, group="Intake")
    if a["channel"] in ("Post", "e-mail") or rng.random() < 0.1:
        case.event("Scan documents", _minutes(rng, 60), resource=clerk, group="Intake")
    checks = ["Check fees paid", "Check completeness"]
    if _CLERKS[clerk] == "completeness first":
        checks.reverse()
    if rng.random() < 0.1:
        checks.reverse()
    for check in checks:
        case.event(check, _minutes(rng, 300), resource=clerk, group="Intake")
    incomplete = 0.45 if a["applicant"] == "private" else 0.12
    rounds = 0
    while rng.random() < incomplete and rounds < 3:
        rounds += 1
        case.event("Request missing documents", _minutes(rng, 120), resource=clerk, group="Intake")
        case.event("Receive missing documents", _minutes(rng, 7000), resource=clerk, group="Intake")
        case.event("Check completeness", _minutes(rng, 300), resource=clerk, group="Intake")
    expert = rng.choice(["expert-1", "expert-2"])
    if a["permit"] == "environment" or (a["permit"] == "building" and area >= 400):
        case.event("Request expert advice", _minutes(rng, 600), resource=expert, group="Experts")
        case.event("Receive expert advice", _minutes(rng, 9000), resource=expert, group="Experts")
    if area >= 900 or a["permit"] == "demolition":
        case.event("Publish notice", _minutes(rng, 600), resource="office", group="Legal")
        if rng.random() < 0.4:
            case.event("Handle objection", _minutes(rng, 20000), resource="lawyer", group="Legal")
    refuse = 0.1 + 0.3 * (rounds >= 2) + 0.2 * (a["permit"] == "event")
    decision = "Refuse permit" if rng.random() < refuse else "Grant permit"
    case.event(decision, _minutes(rng, 3000), resource="manager", group="Board")
    if a["channel"] == "Internet":
        case.event("Send decision by e-mail", _minutes(rng, 60), resource="office", group="Intake")
    else:
        case.event("Send decision by post", _minutes(rng, 600), resource="office", group="Intake")
    if decision == "Grant permit" and a["permit"] in ("building", "demolition"):
        case.event("Collect fees", _minutes(rng, 4000), resource="finance", group="Finance")
    case.event("Archive", _minutes(rng, 2000), resource="office", group="Intake")


def permit_log(seed: int = 2, cases: int = 700) -> list[Row]:
    """A permit office: branches by case attributes, clerk-dependent order of checks."""
    return _generate(
        seed,
        cases,
        "permit",
        mean_gap_minutes=240,
        tz=timezone(timedelta(hours=2)),
        write_case=_permit_case,
        case_attributes=_permit_case_attributes,
    )


# -- hospital emergency ward

_LABS = ["Leucocytes", "CRP", "LacticAcid"]


def _hospital_case_attributes(rng: random.Random) -> dict[str, str]:
    return {
        "age": str(rng.randint(20, 95)),
        "triage": rng.choices(["1", "2", "3", "4"], [1, 3, 4, 2])[0],
        "diagnose": rng.choice(["A", "B", "C", "D", "E", "F"]),
    }


def _hospital_case(rng: random.Random, case: _Case) -> None:
    a = case.attributes
    age, triage = int(a["age"]), int(a["triage"])
    case.event("ER Registration", 0, resource="A", group="Reception")
    case.event("ER Triage", _minutes(rng, 10), resource="C", group="ER")
    if triage <= 2 or rng.random() < 0.2:
        case.event("ER Sepsis Triage", _minutes(rng, 5), resource="C", group="ER")
    labs = list(_LABS) if age >= 60 or triage <= 2 else _LABS[:2]
    rng.shuffle(labs)
    for lab in labs:
        case.event(lab, _minutes(rng, 15), resource="B", group="Lab")
    severe = triage <= 2 or (age >= 75 and rng.random() < 0.6)
    if severe:
        case.event("IV Liquid", _minutes(rng, 20), resource="A", group="ER")
        case.event("IV Antibiotics", _minutes(rng, 20), resource="A", group="ER")
    ward = "Admission IC" if triage == 1 else "Admission NC"
    admitted = severe or rng.random() < 0.3
    if admitted:
        case.event(ward, _minutes(rng, 90), resource=rng.choice(["E", "F", "G"]), group="Ward")
        for _ in range(rng.randint(1, 3 if age >= 70 else 2)):
            case.event("Leucocytes", _minutes(rng, 1440), resource="B", group="Lab")
            case.event("CRP", _minutes(rng, 5), resource="B", group="Lab")
    release = (
        "Release A"
        if not admitted
        else ("Release B" if ward == "Admission IC" else rng.choice(["Release A", "Release C"]))
    )
    case.event(release, _minutes(rng, 600), resource="E", group="Ward")
    if release != "Release A" and rng.random() < 0.25:
        case.event("Return ER", _minutes(rng, 30000), resource="A", group="Reception")


def hospital_log(seed: int = 3, cases: int = 600) -> list[Row]:
    """An emergency ward: lab loops, triage- and age-dependent treatment and admission."""
    return _generate(
        seed,
        cases,
        "patient",
        mean_gap_minutes=45,
        tz=UTC,
        write_case=_hospital_case,
        case_attributes=_hospital_case_attributes,
    )


GENERATORS: dict[str, Callable[..., list[Row]]] = {
    "helpdesk": helpdesk_log,
    "permit": permit_log,
    "hospital": hospital_log,
}


def generated_stream(name: str, seed: int | None = None) -> Stream:
    """A generated log (by name, optionally another seed) as the evaluation stream."""
    generator = GENERATORS[name]
    rows = generator() if seed is None else generator(seed=seed)
    return log_stream(rows)
