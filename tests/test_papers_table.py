"""The published numbers of docs/papers.md ("Reproducing each paper") that the toolkit can recompute on public data.

EffingScaling (Neeratyoy/EffingScaling, playground/misfitting_data.ipynb) fits Chinchilla's approach 3 to the
(Mis)Fitting survey's checkpoints: rows with C > 1e18, the last checkpoint (largest C) of each ``sweep``, then the
lowest loss per (N, D) (23 points). Its printed fit (cells ``fefbf8c40192c838`` and ``42cfaf45bc8fb09d``):
alpha 0.31271, beta 0.53866, E = exp(0.73470) = 2.0849, a = beta / (alpha + beta) = 0.63270.

The notebook minimises a Huber loss (delta 1e-3) of the loss itself; the toolkit's approach 3 minimises it on
log(loss) (Hoffmann et al.'s objective), which moves the optimum slightly: hence the tolerances below, which are
still far tighter than the gap to the fit on all 907 (N, D) points (a = 0.615), so the selection is what is checked.

The survey's CSV is not part of the repository: point ``SWEEPKIT_MISFITTING_CSV`` at it, or keep it as
``shared/data/misfitting_scaling_results.csv`` beside the checkout (it is
https://raw.githubusercontent.com/hadasah/scaling_laws/master/data/scaling_results.csv).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
CSV_ENV = "SWEEPKIT_MISFITTING_CSV"

# published (EffingScaling playground/misfitting_data.ipynb), and the tolerance of each check
PUBLISHED = {"alpha": (0.31271414280353504, 0.01), "beta": (0.5386608354615576, 0.02),
             "E": (2.0849, 0.03), "a": (0.6326951686543867, 0.01)}


SHARED_CSV = ROOT.parent / "shared" / "data" / "misfitting_scaling_results.csv"  # the project's shared data, if beside


def _survey_csv() -> Path:
    path = os.environ.get(CSV_ENV) or (str(SHARED_CSV) if SHARED_CSV.is_file() else None)
    if not path or not Path(path).is_file():
        pytest.skip(f"set {CSV_ENV} to the (Mis)Fitting survey's scaling_results.csv to run this check")
    return Path(path)


def final_points(frame: pd.DataFrame, min_c: float = 1e18) -> pd.DataFrame:
    """The notebook's selection: rows with C > min_c, then each sweep's row of largest C."""
    kept = frame[frame["C"].astype(float) > min_c].copy()
    kept["C"] = kept["C"].astype(float)
    return kept.sort_values("C", kind="stable").groupby("sweep").tail(1)


def test_misfitting_approach3_on_effingscaling_selection_matches_their_published_fit(tmp_path):
    """experiment=misfitting (approach 3) on EffingScaling's 23 points recovers their alpha, beta, E and a."""
    subset = final_points(pd.read_csv(_survey_csv()))
    assert subset["sweep"].nunique() == len(subset) == 32
    assert subset.groupby(["N", "D"]).ngroups == 23
    path = tmp_path / "final_points.csv"
    subset.to_csv(path, index=False)
    out = tmp_path / "run"
    cmd = [sys.executable, "run.py", "experiment=misfitting", f"tracker.path={path}", f"hydra.run.dir={out}",
           "analysis.scaling_laws.approaches=[3]", "analysis.scaling_laws.figures=false",
           "analysis.scaling_laws.approach3.bootstrap.n=0"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    fit = json.loads((out / "scaling_laws" / "summary.json").read_text())["approach3"]
    assert fit["n_points"] == 23
    for name, (published, tol) in PUBLISHED.items():
        assert abs(fit[name] - published) <= tol, f"{name}: ours {fit[name]:.4f}, published {published:.4f}"
