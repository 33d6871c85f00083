"""Programs the tests use from Debian's packages (Chromium, Prometheus): installed when
missing, as root or through sudo, and a clear failure, never a skip, when they cannot be."""

import os
import shutil
import subprocess
import time

import pytest


def debian_program(package: str, *programs: str) -> str:
    """The path of the first of `programs` on PATH, after `apt-get install package` when
    none is (recommended packages left out: only what the program needs)."""
    found = next((shutil.which(p) for p in programs if shutil.which(p)), None)
    if found:
        return found
    started = time.monotonic()
    _install(package)
    print(f"installed {package} in {time.monotonic() - started:.1f} s")
    found = next((shutil.which(p) for p in programs if shutil.which(p)), None)
    if not found:
        pytest.fail(f"{package} was installed but {programs[0]} is not on PATH")
    return found


def _install(package: str) -> None:
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo") and (
        subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    ):
        prefix = ["sudo", "-n"]
    else:
        pytest.fail(
            f"{package} is not installed and this user can neither install it (not root) nor "
            f"use sudo without a password: install Debian's `{package}` package "
            f"(`sudo apt-get install -y {package}`) and run the tests again"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Two test processes may install at once: the second waits for dpkg's lock.
    install = [
        *prefix,
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        "DPkg::Lock::Timeout=600",
        package,
    ]
    done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:  # package lists missing or stale: refresh them once
        subprocess.run(
            [*prefix, "apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=600"],
            capture_output=True,
            env=env,
            check=False,
        )
        done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        pytest.fail(f"apt-get install {package} failed:\n{done.stdout[-3000:]}\n{done.stderr}")
