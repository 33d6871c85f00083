"""Run the `wayfinder` command as a user does, from the project's virtual environment."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository, its output kept, whatever its exit status."""
    return subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


def run_failing(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `wayfinder ARGS` expecting it to fail (on a wide terminal, so nothing is
    wrapped mid-word; `env` instead of this process's environment)."""
    done = subprocess.run(
        [WAYFINDER, *args],
        capture_output=True,
        text=True,
        env={**(os.environ if env is None else env), "COLUMNS": "400"},
        cwd=REPO,
        check=False,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, f"wayfinder {' '.join(args)} did not fail:\n{output}"
    return done


def wayfinder_fails(*args: str) -> tuple[int, str]:
    """Run `wayfinder ARGS` expecting it to fail: its exit status and what it said on
    stdout and stderr, as one line."""
    done = run_failing(*args)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def summary(out: Path) -> dict[str, Any]:
    written: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return written
