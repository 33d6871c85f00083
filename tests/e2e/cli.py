"""Run the `wayfinder` command as a user does, from the project's virtual environment."""

import json
import subprocess
import sys
from pathlib import Path

WAYFINDER = str(Path(sys.executable).parent / "wayfinder")
REPO = Path(__file__).resolve().parents[2]


def wayfinder(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run `wayfinder ARGS`, fail with its output if it fails, return its stdout."""
    done = subprocess.run(
        [WAYFINDER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, f"wayfinder {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())
