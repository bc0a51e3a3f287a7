"""Logging Fira-style scaling factors: matrix-level means and a fixed, seeded sample of columns per matrix.

Keys (as in the Fira paper's template): ``scaling_factor/scaling_factor{i}`` (the matrix's mean factor) and
``scaling_factor/sampling{i}/{j}`` (the factor of the j-th sampled column, j = 1..n_samples). The columns are drawn
once per matrix by a :class:`ScalingFactorSampler` (seeded from its seed and the matrix's id, so a rerun draws the
same ones) and recorded in the run's config (``scaling_factor_sampling``) whenever a new matrix is seen (the whole record, so shallow merges keep it).
``logger`` is anything with ``log_config(dict)`` and ``log_metrics(dict, step)`` (a ``toolkit.logging`` Logger or a
tracker's RunWriter). torch tensors are accepted without importing torch.
"""
from __future__ import annotations

import weakref
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from toolkit.errors import UserError

PREFIX = "scaling_factor"
CONFIG_KEY = "scaling_factor_sampling"


def matrix_key(prefix: str, matrix: Any) -> str:
    """``scaling_factor/scaling_factor{matrix}``."""
    return f"{prefix}/scaling_factor{matrix}"


def column_key(prefix: str, matrix: Any, j: int) -> str:
    """``scaling_factor/sampling{matrix}/{j}`` (j counts the sampled columns from 1)."""
    return f"{prefix}/sampling{matrix}/{j}"


def as_vector(values: Any, matrix: Any) -> np.ndarray:
    """A 1-D float array from a tensor (any device) or array-like; fails naming the matrix otherwise."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch
        values = values.detach().float().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise UserError(f"scaling factors of matrix {matrix!r}: expected a 1-D tensor/array of numbers, got {type(values).__name__}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise UserError(f"scaling factors of matrix {matrix!r}: expected a non-empty 1-D vector (one factor per column), got shape {arr.shape}")
    return arr


class ScalingFactorSampler:
    """The sampled columns of every matrix: drawn once (seeded per matrix), then fixed for the run."""

    def __init__(self, n_samples: int = 100, seed: int = 0, prefix: str = PREFIX):
        if int(n_samples) < 1:
            raise UserError(f"ScalingFactorSampler: n_samples must be >= 1, got {n_samples}")
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        self.prefix = prefix
        self.indices: dict[str, np.ndarray] = {}
        self.n_columns: dict[str, int] = {}
        self._recorded: set[str] = set()

    def indices_for(self, matrix: Any, n_columns: int) -> np.ndarray:
        """The sampled column indices (0-based, sorted) of a matrix; drawn on first use."""
        name = str(matrix)
        if name in self.indices:
            if self.n_columns[name] != n_columns:
                raise UserError(f"scaling factors of matrix {name!r}: had {self.n_columns[name]} columns when sampled, now {n_columns}; expected the same")
            return self.indices[name]
        if n_columns <= self.n_samples:
            chosen = np.arange(n_columns)
        else:
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode("utf-8"))])
            chosen = np.sort(rng.choice(n_columns, size=self.n_samples, replace=False))
        self.indices[name] = chosen
        self.n_columns[name] = int(n_columns)
        return chosen

    def config(self, matrices: Any = None) -> dict[str, Any]:
        """The sampling record for the run's config (all matrices, or the given ones)."""
        names = list(self.indices) if matrices is None else [str(m) for m in matrices]
        return {CONFIG_KEY: {
            "seed": self.seed,
            "n_samples": self.n_samples,
            "indices": {m: [int(i) for i in self.indices[m]] for m in names},
            "n_columns": {m: self.n_columns[m] for m in names},
        }}

    def unrecorded(self) -> list[str]:
        """Matrices sampled but not yet written to the run's config."""
        return [m for m in self.indices if m not in self._recorded]

    def mark_recorded(self, matrices: Any) -> None:
        """Note that these matrices' indices are in the run's config."""
        self._recorded.update(str(m) for m in matrices)


_DEFAULT_SAMPLERS: "weakref.WeakKeyDictionary[Any, ScalingFactorSampler]" = weakref.WeakKeyDictionary()
_DEFAULT_BY_ID: dict[int, ScalingFactorSampler] = {}


def default_sampler(logger: Any) -> ScalingFactorSampler:
    """The sampler (100 columns, seed 0) kept for a logger when none is passed."""
    try:
        return _DEFAULT_SAMPLERS.setdefault(logger, ScalingFactorSampler())
    except TypeError:  # not weak-referenceable
        return _DEFAULT_BY_ID.setdefault(id(logger), ScalingFactorSampler())


def scaling_factor_metrics(factors: Mapping[Any, Any], sampler: ScalingFactorSampler) -> dict[str, float]:
    """The metrics of one step: each matrix's mean factor and its sampled columns' factors."""
    if not isinstance(factors, Mapping) or not factors:
        raise UserError(f"log_scaling_factors: expected a non-empty mapping matrix -> 1-D factors, got {type(factors).__name__}")
    metrics: dict[str, float] = {}
    for matrix, values in factors.items():
        vec = as_vector(values, matrix)
        metrics[matrix_key(sampler.prefix, matrix)] = float(vec.mean())
        for j, col in enumerate(sampler.indices_for(matrix, vec.size), start=1):
            metrics[column_key(sampler.prefix, matrix, j)] = float(vec[col])
    return metrics


def log_scaling_factors(logger: Any, step: int, factors: Mapping[Any, Any],
                        sampler: ScalingFactorSampler | None = None,
                        extra: Mapping[str, float] | None = None) -> dict[str, float]:
    """Log one step's scaling factors (plus ``extra`` metrics) in ONE ``log_metrics`` call; record new samplings in the config."""
    sampler = sampler if sampler is not None else default_sampler(logger)
    metrics = {str(k): float(v) for k, v in dict(extra or {}).items()}
    metrics.update(scaling_factor_metrics(factors, sampler))
    new = sampler.unrecorded()
    if new:
        logger.log_config(sampler.config())  # all matrices so far: safe with loggers that merge shallowly
        sampler.mark_recorded(new)
    logger.log_metrics(metrics, step=int(step))
    return metrics
