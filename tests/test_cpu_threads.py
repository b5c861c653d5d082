"""model/cpu_threads.py: threads fitted to the idle cores, restored after a request."""

import torch

from model import cpu_threads
from model.cpu_threads import Fitter, fitted


def test_fitted_adds_idle_cores_within_bounds():
    assert fitted(1, 1, 2) == 2  # the other core of a 2-core machine is free
    assert fitted(1, 0, 2) == 1  # it is busy: stay on one thread
    assert fitted(1, 5, 2) == 2  # never more than the machine's cores
    assert fitted(2, 14, 16) == cpu_threads.MAX_THREADS
    assert fitted(6, 0, 16) == 6  # never fewer than the configured base


def test_idle_cores_is_within_the_machine():
    import os

    assert 0 <= cpu_threads.idle_cores() <= (os.cpu_count() or 1)


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
