"""Comparisons shared by the sweep tests."""

import pandas as pd

RESULT_FILES = ("metrics.parquet", "confusion.parquet", "layers.parquet", "cosines.parquet")


def run_ids(out_dir):
    """Return the ids of the run folders in a sweep directory, sorted."""
    return sorted(path.name for path in (out_dir / "runs").iterdir()
                  if not path.name.startswith("."))


def assert_same_results(first_dir, second_dir):
    """Assert that two sweep directories hold the same runs with identical results."""
    assert run_ids(first_dir) == run_ids(second_dir)
    for run_id in run_ids(first_dir):
        for name in RESULT_FILES:
            first = pd.read_parquet(first_dir / "runs" / run_id / name)
            second = pd.read_parquet(second_dir / "runs" / run_id / name)
            first = first.drop(columns=["wall_seconds"], errors="ignore")
            second = second.drop(columns=["wall_seconds"], errors="ignore")
            pd.testing.assert_frame_equal(first, second, check_exact=True, obj=f"{run_id}/{name}")
