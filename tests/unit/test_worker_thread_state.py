"""bytewax lets go of a worker thread's Python state between some of its steps, and a
`threading.local` goes with it (`tests/flow/test_operator_metrics.py` shows what that
did): the code the workers run keeps per-thread state by the thread's id instead."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: What runs on the workers: the flow, the cores it calls, their state and schemas.
WORKER_CODE = ("flows/dataflow", "operators", "state", "schemas")


def _uses_threading_local(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        match node:
            case ast.Attribute(value=ast.Name(id="threading"), attr="local"):
                return True
            case ast.ImportFrom(module="threading", names=names) if any(
                alias.name == "local" for alias in names
            ):
                return True
    return False


def test_no_code_the_workers_run_keeps_its_state_in_a_threading_local() -> None:
    found = [
        str(path.relative_to(ROOT))
        for folder in WORKER_CODE
        for path in sorted((ROOT / folder).rglob("*.py"))
        if _uses_threading_local(path)
    ]
    assert found == []
