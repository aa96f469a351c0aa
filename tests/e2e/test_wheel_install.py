"""The built wheel, installed into a fresh venv, runs `tieragent demo` on its own.

The rest of the suite runs against the editable install in .venv, where the checkout is on
sys.path and a data file missing from the wheel (or code reading next to the checkout)
goes unnoticed. Here the wheel is built from a copy of the sources (no stale egg-info
whose SOURCES.txt could stand in for pyproject's package-data), installed non-editable
with its dependencies into a new venv, and the demo runs from a folder outside the
checkout with PYTHONPATH cleared: simulator → agent → signed reports → amqtt → bureau →
evidence folder verified offline, all from site-packages.

The wheel and the venv come from deploy/offline-install.sh, as on a gateway without
Internet access: `build` puts the wheel and a wheel of every dependency into a wheelhouse
(from pip's indexes and cache, ≈10 s here), `install` creates the venv and installs from
the wheelhouse alone (`pip install --no-index`, ≈30 s). Every process started runs in its
own session and is stopped by its process-group id if it outlives its timeout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bureau.evidence_verify import verify_evidence_dir

ROOT = Path(__file__).resolve().parents[2]
OFFLINE_INSTALL = ROOT / "deploy" / "offline-install.sh"
PACKAGES = ("tieragent", "agent", "connectors", "indicators", "simulator", "bureau")
HISTORY_DAYS = 3


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run to completion; on timeout stop the whole process group (by its id) and fail."""
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(process)
        output, _ = process.communicate()
        pytest.fail(f"{args[:3]} did not finish in {timeout:.0f} s:\n{output[-4000:]}")
    finally:
        _stop_group(process)
    return process.returncode, output


def _stop_group(process: subprocess.Popen[str]) -> None:
    """Stop the process and what it started (its own session), by its process-group id."""
    if process.poll() is not None:
        # The leader is done; anything it left behind in its group goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would put the checkout or .venv on sys.path."""
    env = {
        key: value for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PWD"}
    }
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


def _source_copy(dest: Path) -> Path:
    """pyproject.toml, README.md and the packages, without build leftovers."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=ignore)
    return dest


def _shipped_files(source: Path) -> set[str]:
    """Every file under the packages: modules and the data files read at run time."""
    shipped = set()
    for package in PACKAGES:
        for path in (source / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                shipped.add(path.relative_to(source).as_posix())
    return shipped


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_installed_wheel_runs_the_demo(tmp_path: Path) -> None:
    env = _clean_env(PYTHON=sys.executable)
    source = _source_copy(tmp_path / "src")

    # 1. The wheelhouse: the project's wheel, which holds every module and data file of
    #    every (sub)package, and a wheel of each dependency.
    wheels = tmp_path / "wheelhouse"
    code, output = _run(["bash", str(OFFLINE_INSTALL), "build", str(wheels), str(source)],
                        cwd=tmp_path, env=env, timeout=300)
    assert code == 0, output[-4000:]
    (wheel,) = wheels.glob("tieragent-*.whl")
    assert len(list(wheels.glob("*.whl"))) > 10, output  # the dependencies came along
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = sorted(_shipped_files(source) - names)
    assert not missing, f"the wheel lacks {missing}"
    for data in ("agent/protocol/data/report.schema.json", "agent/data/config.schema.json",
                 "indicators/data/policies/default-2026.yaml",
                 "tieragent/data/factories/demo.yaml", "tieragent/data/demo-agent.yaml"):
        assert data in names

    # 2. A fresh venv, the wheel installed into it (not editable) with its dependencies,
    #    from the wheelhouse only (--no-index).
    venv = tmp_path / "venv"
    code, output = _run(["bash", str(OFFLINE_INSTALL), "install", str(wheels), str(venv)],
                        cwd=tmp_path, env=env, timeout=600)
    assert code == 0, output[-4000:]
    assert "installed: tieragent" in output, output[-4000:]
    python = venv / "bin" / "python"

    # The packages resolve into the venv's site-packages, not into the checkout.
    run_env = {"COLUMNS": "160", "PYTHONNOUSERSITE": "1",
               "PATH": f"{venv / 'bin'}:/usr/bin:/bin:/usr/sbin:/sbin"}
    code, output = _run(
        [str(python), "-c",
         "import sys, sysconfig, tieragent, agent, bureau, connectors, indicators, simulator\n"
         "print(sysconfig.get_paths()['purelib'])\n"
         "for m in (tieragent, agent, bureau, connectors, indicators, simulator):\n"
         "    print(m.__file__)\n"],
        cwd=tmp_path, env=run_env, timeout=60,
    )
    assert code == 0, output
    site_packages, *modules = [Path(line).resolve() for line in output.split()]
    assert site_packages.is_relative_to(venv.resolve()), site_packages
    for module in modules:
        assert module.is_relative_to(site_packages), module
        assert not module.is_relative_to(ROOT), module

    # 3. The demo, shortened, from a folder outside the checkout.
    work = tmp_path / "work"
    work.mkdir()
    out = work / "demo"
    tieragent = str(venv / "bin" / "tieragent")
    code, output = _run(
        [tieragent, "demo", "--out", str(out), "--live-seconds", "3",
         "--history-days", str(HISTORY_DAYS)],
        cwd=work, env=run_env, timeout=300,
    )
    assert code == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert (f"{HISTORY_DAYS} built and signed, {HISTORY_DAYS} acknowledged by signed receipt"
            in output), output[-4000:]
    assert any("offline verification" in line and "OK" in line for line in output.splitlines())
    (evidence,) = (out / "evidence").iterdir()

    # The installed `tieragent verify` and the checkout's verifier both accept the evidence.
    code, output = _run([tieragent, "verify", str(evidence)], cwd=work, env=run_env,
                        timeout=120)
    assert code == 0, output[-4000:]
    assert verify_evidence_dir(evidence).ok
