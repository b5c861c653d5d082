"""model/cpu_threads.py: threads fitted to the idle cores, restored after a request."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from model import cpu_threads
from model.cpu_threads import Fitter, fitted

ROOT = Path(__file__).resolve().parents[1]


def test_fitted_adds_idle_cores_within_bounds():
    assert fitted(1, 1, 2) == 2  # the other core of a 2-core machine is free
    assert fitted(1, 0, 2) == 1  # it is busy: stay on one thread
    assert fitted(1, 5, 2) == 2  # never more than the machine's cores
    assert fitted(2, 14, 16) == cpu_threads.MAX_THREADS
    assert fitted(6, 0, 16) == 6  # never fewer than the configured base


def test_idle_cores_reads_the_runnable_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_threads.os, "cpu_count", lambda: 4)
    f = tmp_path / "loadavg"
    f.write_text("0.52 0.58 0.59 3/467 12345\n")  # 3 runnable, the caller included
    assert cpu_threads.idle_cores(str(f)) == 1
    f.write_text("4.10 3.90 3.50 1/467 12345\n")  # a high average, but only the caller runs now
    assert cpu_threads.idle_cores(str(f)) == 3
    f.write_text("6.00 6.00 6.00 9/467 12345\n")  # more runnable threads than cores
    assert cpu_threads.idle_cores(str(f)) == 0
    f.write_text("garbage\n")
    assert cpu_threads.idle_cores(str(f)) == 0
    assert cpu_threads.idle_cores(str(tmp_path / "missing")) == 0  # not Linux


def _env_after(code: str) -> str:
    """GOMP_SPINCOUNT as a fresh interpreter sees it after `code` ('-' when unset)."""
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport os; print(os.environ.get('GOMP_SPINCOUNT', '-'))"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return out.stdout.split()[-1]


def test_importing_the_planner_leaves_the_environment_alone():
    assert _env_after("import lsp_server.planner, lsp_server.engine, model.interface") == "-"


def test_loading_the_builtin_model_sets_the_spin_count_before_torch():
    code = (
        "import sys\n"
        "from model.infill import BuiltinInfiller\n"
        "from model.interface import CheckpointError\n"
        "assert 'torch' not in sys.modules\n"
        "try:\n"
        "    BuiltinInfiller('/nonexistent/checkpoint')\n"
        "except CheckpointError:\n"
        "    pass"
    )
    assert _env_after(code) == cpu_threads.SPIN_COUNT
    assert _env_after("from training import train") == cpu_threads.SPIN_COUNT


def test_fitter_widens_then_restores(monkeypatch):
    monkeypatch.setattr(cpu_threads.os, "cpu_count", lambda: 2)
    base = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setattr(cpu_threads, "idle_cores", lambda: 1)
        with Fitter(True) as f:
            assert f.fit(400) == 2 and torch.get_num_threads() == 2
            monkeypatch.setattr(cpu_threads, "idle_cores", lambda: 0)  # the other core got busy
            assert f.fit(400) == 1 and torch.get_num_threads() == 1
            monkeypatch.setattr(cpu_threads, "idle_cores", lambda: 1)
            assert f.fit(16) == 1  # a span step: the base threads
            f.fit(400)
        assert torch.get_num_threads() == 1  # the request's end puts the base back
        with Fitter(False) as f:  # a fixed thread setting: untouched
            assert f.fit(400) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(base)
