"""sweepkit in a notebook: the command line's stages on pandas objects, with the command line's defaults.

    import sweepkit as sk
    runs = sk.read("mlflow", uri="sqlite:///mlflow.db", experiment="lr-sweep")   # a RunSet: .runs, .history
    table = sk.recipes.lr_bs_sweep(runs, seq_len=1024)                         # a DataFrame
    m = sk.minima(table, horizons=["2^28", "2^30"])        # .summary .tables .table .warnings .folder
    sk.report(m)                                            # report.html beside the results
    r = sk.run(["analysis=[minima,regressions]"])           # the whole configured pipeline, as python run.py

A thin facade over ``toolkit`` (settings, protocol, trackers, pipeline, report), ``adapters`` and ``analyses``.
"""
from __future__ import annotations

from sweepkit import recipes
from sweepkit.api import (Result, RunResult, SweepWarning, analyse, analysis_names, build, compose, correlations,
                          minima, read, recipe_names, regressions, report, run, scaling_laws, spectral)
from toolkit.errors import UserError
from toolkit.runset import RunSet, Selection

__all__ = ["read", "recipes", "build", "analyse", "minima", "regressions", "scaling_laws", "correlations", "spectral",
           "report", "run", "compose", "Result", "RunResult", "RunSet", "Selection", "SweepWarning", "UserError",
           "recipe_names", "analysis_names"]
