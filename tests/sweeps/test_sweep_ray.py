import sys
import time

import pytest
from sweep_helpers import assert_same_results

from gradconf.sweeps import parse_sweep, run_sweep

# An unreachable address must fail within this many seconds (the probe waits at most 5 s).
UNREACHABLE_LIMIT_SECONDS = 10


def test_ray_missing_gives_install_hint(tmp_path, tiny_sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'gradconf\[ray\]'"):
        run_sweep(parse_sweep(tiny_sweep), tmp_path / "out", executor="ray")
    assert not (tmp_path / "out").exists()


def test_ray_unreachable_address_fails_fast(tmp_path, tiny_sweep):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'gradconf[ray]')")
    started = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"cannot reach a Ray cluster at 127.0.0.1:1"):
        run_sweep(parse_sweep(tiny_sweep), tmp_path / "out", executor="ray",
                  address="127.0.0.1:1")
    assert time.perf_counter() - started < UNREACHABLE_LIMIT_SECONDS
    assert not (tmp_path / "out").exists()
    assert not ray.is_initialized()


def test_ray_invalid_address(tmp_path, tiny_sweep):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'gradconf[ray]')")
    with pytest.raises(ValueError, match=r"Ray address 'head-node' is invalid"):
        run_sweep(parse_sweep(tiny_sweep), tmp_path / "out", executor="ray",
                  address="head-node")


def test_ray_matches_local(finished_sweep, tmp_path, tiny_sweep, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'gradconf[ray]')")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # start a local instance for this test
    outcome = run_sweep(parse_sweep(tiny_sweep), tmp_path / "ray", executor="ray",
                        resources={"cpus": 1}, progress=False)
    assert outcome.completed == 4
    assert outcome.failed == {}
    assert not ray.is_initialized()  # the local instance started by the sweep is shut down
    assert_same_results(finished_sweep, tmp_path / "ray")
