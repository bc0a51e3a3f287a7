"""Loaders for public scaling-law data, each returning a frame with N, D, C, loss (+ the source's other columns).

Used by ``recipe=scaling_table recipe.loader=<name> recipe.path=<file>`` and usable on their own. Rows are not
filtered here: the recipe reports and drops those without positive finite N, D, C and loss.

- ``load_misfitting``: the (Mis)Fitting Scaling Laws survey's CSV (one row per checkpoint);
- ``load_porian``: Porian et al. (2024)'s ``experiment_results.pickle.xz`` (one row per run, loss curves as Series);
  unpickling runs code from the file, so it needs ``allow_pickle=True``;
- ``load_warmstarting``: the warmstarting parquet (target_N, tokens, flops, "Validation Loss").
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import UserError

CORE = ["N", "D", "C", "loss"]


def _exists(path: str | os.PathLike) -> Path:
    """The path, or a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    return p


def _finish(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Core columns first, as floats. Rows are not filtered (recipe scaling_table reports and drops the ones without
    a positive finite N, D, C and loss); a source with no such row at all is an error."""
    for col in CORE:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    values = frame[CORE].to_numpy(float)
    if not np.any(np.all(np.isfinite(values) & (values > 0), axis=1)):
        raise UserError(f"{source}: no row has positive finite N, D, C and loss")
    return frame[CORE + [c for c in frame.columns if c not in CORE]].reset_index(drop=True)


def _rename(frame: pd.DataFrame, mapping: Mapping[str, str], source: str) -> pd.DataFrame:
    """Copy the source columns named in ``mapping`` (core name -> source column) to the core names."""
    missing = [src for src in mapping.values() if src not in frame.columns]
    if missing:
        raise UserError(f"{source}: missing column(s) {', '.join(missing)}; the file has: {', '.join(map(str, frame.columns))}")
    out = frame.copy()
    for core, src in mapping.items():
        if core != src:
            out[core] = out[src]
    return out


def load_misfitting(path: str | os.PathLike, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The misfitting survey's CSV: loss, N, D, C (huge integers read as floats), model, peak_lr, ..."""
    p = _exists(path)
    frame = pd.read_csv(p)
    for col in frame.columns:
        if str(col).startswith("C") and frame[col].dtype == object:
            numeric = pd.to_numeric(frame[col], errors="coerce")
            if numeric.notna().all():
                frame[col] = numeric.astype(float)
    mapping = {"N": "N", "D": "D", "C": "C", "loss": "loss", **dict(columns or {})}
    return _finish(_rename(frame, mapping, str(p)), str(p))


def load_warmstarting(path: str | os.PathLike, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The warmstarting parquet: N = target_N, D = tokens, C = flops, loss = "Validation Loss" (override with columns)."""
    p = _exists(path)
    frame = pd.read_parquet(p)
    mapping = {"N": "target_N", "D": "tokens", "C": "flops", "loss": "Validation Loss", **dict(columns or {})}
    return _finish(_rename(frame, mapping, str(p)), str(p))


def open_lm_params(width: np.ndarray, depth: np.ndarray, vocab_size: np.ndarray | float = 50432) -> np.ndarray:
    """Parameter count of Porian et al.'s OpenLM models: (4 w + 3 d_ff) w depth + vocab w, d_ff = 8w/3 rounded up to 256."""
    width = np.asarray(width, float)
    d_ff = 256 * np.ceil(np.floor(8 * width / 3) / 256)
    return (4 * width + 3 * d_ff) * width * np.asarray(depth, float) + np.asarray(vocab_size, float) * width


PARAM_COUNTS = ("standard", "attention", "kaplan")  # Porian et al.'s ISOFLOP_ARGS param_count settings


def porian_counts(width: np.ndarray, depth: np.ndarray, seq_len: np.ndarray | float = 2048,
                  vocab_size: np.ndarray | float = 50432, param_count: str = "standard") -> tuple[np.ndarray, np.ndarray]:
    """(N, FLOPs per token) of Porian et al.'s OpenLM models by their ``param_count`` setting (their data.py):
    standard: N = OpenLM count with embeddings, 6 N per token (no attention); attention: FLOPs per token
    6 N + 6 seq_len width depth and N = that / 6 (effective parameters); kaplan: N without embeddings, 6 N."""
    width, depth = np.asarray(width, float), np.asarray(depth, float)
    if param_count in ("standard", "kaplan"):
        n = open_lm_params(width, depth, vocab_size if param_count == "standard" else 0.0)
        return n, 6.0 * n
    if param_count == "attention":
        fpt = 6.0 * open_lm_params(width, depth, vocab_size) + 6.0 * np.asarray(seq_len, float) * width * depth
        return fpt / 6.0, fpt
    raise UserError(f"porian loader: param_count={param_count!r}; expected one of {', '.join(PARAM_COUNTS)}")


def proportional_smoothing(curve: pd.Series, window: float = 0.05, compensate_delay: bool = True) -> pd.Series:
    """Porian et al.'s smoothing of a logged loss (data.py ``proportional_sliding_window_filter``): point i is the
    mean of points i - floor(window i) .. i + floor(window i) (a window growing with the step), at the mean of
    their positions; ``compensate_delay`` moves each step back by half its gap to the previous (their logging-delay
    correction of ``train/loss``)."""
    values = curve.to_numpy(float)
    steps = curve.index.to_numpy(float)
    i = np.arange(len(values))
    half = np.floor(window * i).astype(int)
    up, down = np.minimum(i + half, len(values) - 1), np.maximum(i - half, 0)
    sums = np.r_[0.0, np.cumsum(values)]
    smoothed = (sums[up + 1] - sums[down]) / (up - down + 1)
    at = np.interp((up + down) / 2, i, steps)
    if compensate_delay:
        at = at - np.diff(at, prepend=0.0) / 2
    return pd.Series(smoothed, index=at, name=f"{curve.name}_smoothed" if curve.name else None)


def load_porian(path: str | os.PathLike, *, allow_pickle: bool = False, loss_key: str = "train/loss",
                min_step: int = 1, param_count: str = "standard", smoothing_window: float = 0.05,
                extra_columns: tuple[str, ...] = ("dataset", "hparams", "warmup", "decay", "lr", "bs",
                                                  "seq_len", "width", "depth", "seed")) -> pd.DataFrame:
    """Porian et al.'s results pickle, one row per logged step of every run: N and C = FLOPs per token x D by their
    ``param_count`` (standard: with embeddings, 6 N D, no attention; attention; kaplan: without embeddings),
    D = step * bs * seq_len, loss = ``loss_key``. A key ending in ``_smoothed`` that the frame lacks (e.g.
    ``train/loss_smoothed``) is computed from the raw key with their proportional sliding window
    (``smoothing_window``; the logging-delay correction for ``train/loss``, as their data.py does).

    Unpickling executes code from the file: refused unless ``allow_pickle=True`` (only for files you trust).
    """
    p = _exists(path)
    if not allow_pickle:
        raise UserError(f"{p}: refusing to unpickle (loading a pickle runs code from the file); pass allow_pickle=True "
                        "only for a file you trust, e.g. the one downloaded from formll/resolving-scaling-law-discrepancies")
    if param_count not in PARAM_COUNTS:
        raise UserError(f"{p}: param_count={param_count!r}; expected one of {', '.join(PARAM_COUNTS)}")
    if not 0 <= smoothing_window < 1:
        raise UserError(f"{p}: smoothing_window={smoothing_window!r}; expected a number in [0, 1)")
    runs: Any = pd.read_pickle(p, compression="infer")
    if not isinstance(runs, pd.DataFrame):
        raise UserError(f"{p}: expected a pickled pandas DataFrame, got {type(runs).__name__}")
    smooth = loss_key not in runs.columns and loss_key.endswith("_smoothed")
    source_key = loss_key[: -len("_smoothed")] if smooth else loss_key
    missing = [c for c in (source_key, "width", "depth", "bs", "seq_len") if c not in runs.columns]
    if missing:
        raise UserError(f"{p}: missing column(s) {', '.join(missing)}; the frame has: {', '.join(map(str, runs.columns))}")
    vocab = runs["vocab_size"].astype(float) if "vocab_size" in runs.columns else 50432.0
    n_params, per_token = porian_counts(runs["width"].astype(float).to_numpy(), runs["depth"].astype(float).to_numpy(),
                                        runs["seq_len"].astype(float).to_numpy(), np.asarray(vocab, float), param_count)
    rows = []
    keep = [c for c in extra_columns if c in runs.columns]
    for i, (_, run) in enumerate(runs.iterrows()):
        curve = run[source_key]
        if not isinstance(curve, pd.Series) or not len(curve):
            continue
        curve = pd.to_numeric(curve, errors="coerce").dropna()
        if smooth and len(curve):
            curve = proportional_smoothing(curve.rename(source_key), smoothing_window,
                                           compensate_delay=source_key == "train/loss")
        curve = curve.groupby(level=0).mean().sort_index()
        curve = curve[curve.index.to_numpy(float) >= min_step]
        if not len(curve):
            continue
        tokens = curve.index.to_numpy(float) * float(run["bs"]) * float(run["seq_len"])
        part = pd.DataFrame({"N": n_params[i], "D": tokens, "C": per_token[i] * tokens,
                             "loss": curve.to_numpy(float), "run_id": f"porian-{i}",
                             "step": curve.index.to_numpy()})
        for col in keep:
            part[col] = run[col]
        rows.append(part)
    if not rows:
        raise UserError(f"{p}: no run has a non-empty '{loss_key}' curve")
    return _finish(pd.concat(rows, ignore_index=True), str(p))
