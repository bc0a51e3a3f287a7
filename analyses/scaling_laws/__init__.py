"""Analysis `scaling_laws`: compute-optimal allocation by Chinchilla's three approaches, with uncertainty.

- approach 1 (``approach1.py``): the envelope (the Pareto frontier of loss against compute), N* ~ C^a, D* ~ C^b,
  bootstrap CIs;
- approach 2 (``approach2.py``): IsoFLOP minima per budget (Akima or parabola), weighted power laws, bootstrap CIs;
- approach 3 (``approach3.py``): L(N, D) = E + A/N^alpha + B/D^beta by Huber loss on log L from a grid of starts
  (fast batched multi-start, same optimum as a scipy L-BFGS-B loop), implied N*(C), D*(C), bootstrap CIs.
Figures in ``plots.py``. ``group_by`` fits each group of rows separately. Every bootstrap draws from its own stream
(``intervals.stream``: the seed and the group, approach and budget), so what else is fitted does not move a CI;
``ci_method`` (percentile, basic or bca) turns the replicates into the interval.

Each approach first checks that the data can identify its parameters (``approachK.identifiability``: spread in N
per budget and enough budgets for 1 and 2, spread in N and in D for 3); one that cannot is reported as
``{identifiable: false, reason}`` with a warning and no numbers, the others still run; none identifiable is an error.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

import numpy as np
import pandas as pd

from analyses.scaling_laws import approach1, approach2, approach3
from analyses.scaling_laws.intervals import bootstrap_ci, stream
from analyses.scaling_laws.report import render_scaling_laws
from toolkit.columns import require_columns
from toolkit.errors import UserError
from toolkit.progress import progress_bar
from toolkit.protocol import AnalysisBase
from toolkit.settings import Choice, Settings, as_settings, at_least, bounded, fail

REQUIRED_COLUMNS = ("N", "D", "C", "loss")
WHO = "scaling_laws"


# ----------------------------------------------------------------------------------------------- settings


MinimumMethod = Choice("MinimumMethod", {"akima": "akima", "parabola": "parabola"}, module=__name__)  # min over N
IsoflopBootstrapMode = Choice("IsoflopBootstrapMode", {"noise": "noise", "resample": "resample"}, module=__name__)
CiMethod = Choice("CiMethod", {"percentile": "percentile", "basic": "basic", "bca": "bca"}, module=__name__)
NoiseModel = Choice("NoiseModel", {"constant": "constant", "porian": "porian"}, module=__name__)
SdSpacing = Choice("SdSpacing", {"sizes": "sizes", "grid": "grid"}, module=__name__)


@dataclass
class RefitBootstrap:
    """A bootstrap that refits on the points resampled with replacement: approach 1's envelope, approach 3's
    parametric fit (n: 0 switches it off)."""

    n: int = at_least(1000, 0, "a number")
    seed: int = 0


@dataclass
class Approach1Settings:
    """The envelope."""

    bins: int = at_least(30, 1, "a number")
    bootstrap: RefitBootstrap = field(default_factory=RefitBootstrap)
    ci_method: CiMethod = CiMethod.percentile


@dataclass
class SeedNoise:
    """Porian et al.'s loss-dependent seed noise (``get_noise_for_loss``): SD ``low`` where log(loss) <= log_loss_low,
    ``high`` where log(loss) >= log_loss_high, log-linear between (their defaults)."""

    low: float = at_least(0.005, 0, "a number")
    high: float = at_least(0.1, 0, "a number")
    log_loss_low: float = 3.0
    log_loss_high: float = 6.0


@dataclass
class IsoflopBootstrap:
    """Approach 2's bootstrap of each budget's minimum (n: 0 switches it off)."""

    n: int = at_least(1000, 0, "a number")
    mode: IsoflopBootstrapMode = IsoflopBootstrapMode.noise
    noise_std: float = at_least(0.005, 0, "a number")
    seed: int = 0
    noise_model: NoiseModel = NoiseModel.constant
    seed_noise: SeedNoise = field(default_factory=SeedNoise)
    seed_noise_by: Optional[str] = None
    seed_noise_values: Dict[str, SeedNoise] = field(default_factory=dict)


@dataclass
class Approach2Settings:
    """IsoFLOP minima."""

    budgets: Optional[List[float]] = None
    n_budgets: int = at_least(12, 1, "a number")
    min_models: int = at_least(3, 1, "a number")
    curve_by: Optional[List[str]] = None
    tolerance: float = at_least(0.0, 0, "a number")
    max_gap: Optional[float] = at_least(None, 0, "a number")
    method: MinimumMethod = MinimumMethod.akima
    grid_multiplier: int = at_least(25, 1, "a number")
    parabola_points: Optional[int] = at_least(5, 3, "a number")
    weighted: bool = True
    min_std_factor: float = at_least(0.33, 0, "a number")
    min_std_spacing: SdSpacing = SdSpacing.sizes
    max_edge_share: float = bounded(0.02, "a share in [0, 1)", ge=0, lt=1)
    bs_median_as_obs: bool = False
    ci_method: CiMethod = CiMethod.percentile
    bootstrap: IsoflopBootstrap = field(default_factory=IsoflopBootstrap)


@dataclass
class StartGrid:
    """Approach 3's starts per parameter (a = log A, b = log B, e = log E); the product is the grid."""

    a: List[float] = field(default_factory=lambda: list(approach3.BESIROGLU_GRID["a"]))
    b: List[float] = field(default_factory=lambda: list(approach3.BESIROGLU_GRID["b"]))
    e: List[float] = field(default_factory=lambda: list(approach3.BESIROGLU_GRID["e"]))
    alpha: List[float] = field(default_factory=lambda: list(approach3.BESIROGLU_GRID["alpha"]))
    beta: List[float] = field(default_factory=lambda: list(approach3.BESIROGLU_GRID["beta"]))


@dataclass
class Bounds:
    """[low, high] per parameter of approach 3 (either may be null; null: unbounded)."""

    a: Optional[List[Optional[float]]] = None
    b: Optional[List[Optional[float]]] = None
    e: Optional[List[Optional[float]]] = None
    alpha: Optional[List[Optional[float]]] = field(default_factory=lambda: [0.0, None])
    beta: Optional[List[Optional[float]]] = field(default_factory=lambda: [0.0, None])


@dataclass
class Approach3Settings:
    """The parametric fit."""

    huber_delta: float = bounded(1.0e-3, "a number > 0", gt=0)
    grid: Optional[StartGrid] = field(default_factory=StartGrid)
    bounds: Optional[Bounds] = field(default_factory=Bounds)
    schedule: List[List[int]] = field(default_factory=lambda: [list(p) for p in approach3.DEFAULT_SCHEDULE])
    polish: int = at_least(5, 1, "a number")
    ci_method: CiMethod = CiMethod.bca
    bootstrap: RefitBootstrap = field(default_factory=RefitBootstrap)


@dataclass
class ScalingLawsSettings(Settings):
    """Every knob of the scaling-laws analysis; see conf/analysis/scaling_laws.yaml."""

    approaches: List[int] = field(default_factory=lambda: [1, 2, 3])
    group_by: List[str] = field(default_factory=list)
    figures: bool = True
    approach1: Approach1Settings = field(default_factory=Approach1Settings)
    approach2: Approach2Settings = field(default_factory=Approach2Settings)
    approach3: Approach3Settings = field(default_factory=Approach3Settings)
    who: ClassVar[str] = WHO

    def __post_init__(self) -> None:
        if not self.approaches or any(a not in (1, 2, 3) for a in self.approaches):
            raise fail(WHO, "approaches", self.approaches, "a non-empty subset of [1, 2, 3]")
        super().__post_init__()
        boot2 = self.approach2.bootstrap
        for value, noise in {"": boot2.seed_noise, **boot2.seed_noise_values}.items():
            where = "approach2.bootstrap.seed_noise" + (f"_values.{value}" if value else "")
            if not (noise.low > 0 and noise.high > 0):
                raise fail(WHO, where, asdict(noise), "low and high SDs > 0")
            if not noise.log_loss_low < noise.log_loss_high:
                raise fail(WHO, where, asdict(noise), "log_loss_low < log_loss_high")
        if boot2.noise_model.value == "porian" and boot2.mode.value != "noise":
            raise fail(WHO, "approach2.bootstrap.noise_model", "porian", "constant with bootstrap.mode=resample "
                       "(the seed-noise model adds noise: mode=noise)")
        a3 = self.approach3
        if any(len(stage) != 2 or min(stage) < 1 for stage in a3.schedule):
            raise fail(WHO, "approach3.schedule", a3.schedule, "a list of [iterations, starts kept] pairs of counts >= 1")
        try:  # a pair that is not [low, high] or has low >= high
            self.bounds_array = None if a3.bounds is None else approach3.bounds_array(asdict(a3.bounds))
        except ValueError:
            raise fail(WHO, "approach3.bounds", asdict(a3.bounds), "[low, high] per parameter, low < high (or nulls)") from None


# ----------------------------------------------------------------------------------------------- fits


def _clean(table: pd.DataFrame) -> pd.DataFrame:
    """N, D, C, loss as positive finite floats, or a one-line error naming the column."""
    require_columns(table, REQUIRED_COLUMNS, WHO)
    out = table.copy()
    for col in REQUIRED_COLUMNS:
        values = pd.to_numeric(out[col], errors="coerce").astype(float)
        bad = ~np.isfinite(values.to_numpy()) | (values.to_numpy() <= 0)
        if bad.any():
            raise UserError(f"{WHO}: column '{col}' has {int(bad.sum())} non-positive or non-finite value(s) "
                            f"(e.g. row {int(np.flatnonzero(bad)[0])}); expected positive finite numbers")
        out[col] = values
    return out


def not_identifiable(reason: str) -> dict[str, Any]:
    """The summary of an approach the data cannot identify: the reason, no numbers."""
    return {"identifiable": False, "reason": reason}


def _interval(samples: np.ndarray, estimate: float, method: Any, jackknife: np.ndarray | None = None) -> list[float]:
    """The 95% bootstrap CI of one statistic by ``method`` (a CiMethod or its name)."""
    return bootstrap_ci(samples, estimate, getattr(method, "value", method), 0.95, jackknife)


def run_approach1(table: pd.DataFrame, p: Approach1Settings, warn=None, progress: bool = False,
                  key: tuple = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Approach 1 on one group: summary and the artefacts for tables and figures (none when not identifiable)."""
    reason = approach1.identifiability(table["N"], table["D"], table["C"], bins=p.bins)
    if reason:
        return not_identifiable(reason), {}
    n, d, c, loss = (table[k].to_numpy(float) for k in ("N", "D", "C", "loss"))
    fit_n, fit_d, env = approach1.fit_envelope(n, d, c, loss)
    if approach1.distinct(env["N"]) < 2:
        return not_identifiable(f"the envelope (the lowest loss at or below each C) holds {len(env)} point(s) of "
                                f"{approach1.distinct(env['N'])} model size(s); approach 1 needs >= 2 sizes on it"), {}
    summary = {"identifiable": True, "a": fit_n.exponent, "b": fit_d.exponent, "N_coef": fit_n.coef,
               "D_coef": fit_d.coef, "r2_N": fit_n.r2, "r2_D": fit_d.r2, "n_budgets": len(env), "bins": p.bins,
               "n_envelope": len(env), "n_envelope_sizes": approach1.distinct(env["N"]),
               "envelope": "pareto frontier of loss against C"}
    a_s = b_s = np.empty(0)
    if p.bootstrap.n > 0:
        with closing(progress_bar(p.bootstrap.n, "approach 1 bootstrap", enabled=progress, unit="replicate")) as bar:
            a_s, b_s = approach1.bootstrap_envelope(n, d, c, loss, p.bootstrap.n, stream(p.bootstrap.seed, *key, "approach1"),
                                                    tick=bar.update)
    bca = p.ci_method.value == "bca" and len(a_s)
    jk_a, jk_b = approach1.jackknife_envelope(n, d, c, loss) if bca else (None, None)
    summary.update(a_ci=_interval(a_s, fit_n.exponent, p.ci_method, jk_a),
                   b_ci=_interval(b_s, fit_d.exponent, p.ci_method, jk_b),
                   ci_method=p.ci_method.value, n_boot=p.bootstrap.n)
    return summary, {"envelope": env, "fit_n": fit_n, "fit_d": fit_d, "a_samples": a_s, "b_samples": b_s}


def _seed_noise(table: pd.DataFrame, boot: IsoflopBootstrap) -> dict[str, float]:
    """The seed-noise levels of this group: ``seed_noise_values[<value of seed_noise_by>]``, else ``seed_noise``."""
    chosen = boot.seed_noise
    if boot.seed_noise_by:
        require_columns(table, [boot.seed_noise_by], f"{WHO} (approach2.bootstrap.seed_noise_by)")
        values = sorted(table[boot.seed_noise_by].astype(str).unique())
        if len(values) != 1:
            raise UserError(f"{WHO}: approach2.bootstrap.seed_noise_by={boot.seed_noise_by} takes {len(values)} values "
                            f"in one fit ({', '.join(values[:4])}); expected one per fit (add it to group_by)")
        chosen = boot.seed_noise_values.get(values[0], boot.seed_noise)
    return asdict(chosen)


def run_approach2(table: pd.DataFrame, p: Approach2Settings, warn, progress: bool = False,
                  key: tuple = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Approach 2 on one group: summary and artefacts."""
    boot, method = p.bootstrap, p.method.value
    curve_by = list(p.curve_by or []) or (["run_id"] if "run_id" in table.columns else ["N"])
    require_columns(table, curve_by, f"{WHO} (approach2.curve_by)")
    seed_noise = _seed_noise(table, boot) if boot.noise_model.value == "porian" else None
    n_planned = len(approach2.choose_budgets(approach2.curves(table, curve_by), p.budgets or None, p.n_budgets, p.min_models))
    bar = progress_bar(max(boot.n, 0) * n_planned, "approach 2 bootstrap", enabled=progress and boot.n > 0,
                       unit="replicate")
    with closing(bar):
        res = approach2.fit_isoflop(
            table, budgets=p.budgets or None, n_budgets=p.n_budgets, min_models=p.min_models, curve_by=curve_by,
            tolerance=p.tolerance, max_gap=p.max_gap, method=method, grid_multiplier=p.grid_multiplier,
            parabola_points=p.parabola_points, n_boot=boot.n, bootstrap=boot.mode.value, noise_std=boot.noise_std,
            seed=boot.seed, weighted=p.weighted, min_std_factor=p.min_std_factor, noise_model=boot.noise_model.value,
            seed_noise=seed_noise, bs_median_as_obs=p.bs_median_as_obs, min_std_spacing=p.min_std_spacing.value,
            stream_key=(*key, "approach2"), tick=bar.update, max_edge_share=p.max_edge_share)
    n_ok = int(res.minima["status"].eq("ok").sum())
    reason = approach2.identifiability(res, approach2.curves(table, curve_by), approach1.distinct(table["N"]),
                                       p.min_models, p.tolerance, p.max_gap)
    if reason:  # the minima table still says which budgets were rejected and why
        return not_identifiable(reason), {"result": res, "identifiable": False}
    if res.rejected:
        warn(f"approach 2: {len(res.rejected)} of {len(res.minima)} budget(s) rejected: "
             + "; ".join(f"C={r['budget']:.3g} ({r['reason']})" for r in res.rejected[:5]))
    bca = p.ci_method.value == "bca"
    jk_a, jk_b = approach2.jackknife_exponents(res, p.weighted and boot.n > 0) if bca else (None, None)
    summary = {"identifiable": True, "a": res.fit_n.exponent, "b": res.fit_d.exponent,
               "a_ci": _interval(res.a_samples, res.fit_n.exponent, p.ci_method, jk_a),
               "b_ci": _interval(res.b_samples, res.fit_d.exponent, p.ci_method, jk_b),
               "N_coef": res.fit_n.coef, "D_coef": res.fit_d.coef, "n_budgets": n_ok, "rejected": res.rejected,
               "method": method, "curve_by": curve_by, "ci_method": p.ci_method.value,
               "observation": "bootstrap median" if p.bs_median_as_obs else "point estimate",
               "bootstrap": {"n": boot.n, "mode": boot.mode.value, "noise_model": boot.noise_model.value,
                             **({"seed_noise": seed_noise} if seed_noise else {})}}
    return summary, {"result": res}


def run_approach3(table: pd.DataFrame, p: Approach3Settings, warn, bounds: np.ndarray | None, progress: bool = False,
                  key: tuple = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Approach 3 on one group: summary and artefacts (``bounds``: the checked (5, 2) array, None: unbounded)."""
    n, d, loss = (table[c].to_numpy(float) for c in ("N", "D", "loss"))
    reason = approach3.identifiability(n, d)
    if reason:
        return not_identifiable(reason), {}
    grid = approach3.make_grid(None if p.grid is None else asdict(p.grid))
    schedule = [tuple(stage) for stage in p.schedule]
    started = time.perf_counter()
    bar = progress_bar(approach3.start_work(len(grid), schedule), "approach 3 starts", enabled=progress, unit="start")
    with closing(bar):
        fit = approach3.fit_parametric(n, d, loss, delta=p.huber_delta, grid=grid, bounds=bounds, schedule=schedule,
                                       n_polish=p.polish, tick=bar.update)
    fit_seconds = time.perf_counter() - started
    for note in fit.warnings:
        warn(note)
    summary: dict[str, Any] = {"identifiable": True, **{k: fit.params[k] for k in ("E", "A", "B", "alpha", "beta", "a", "b", "G")}}
    n_boot = p.bootstrap.n
    samples = np.empty((0, 5))
    if n_boot > 0:
        started = time.perf_counter()
        with closing(progress_bar(n_boot, "approach 3 bootstrap", enabled=progress, unit="refit")) as bar:
            samples = approach3.bootstrap_parametric(n, d, loss, fit, n_boot=n_boot, bounds=bounds,
                                                     rng=stream(p.bootstrap.seed, *key, "approach3"), tick=bar.update)
        summary["bootstrap_seconds"] = time.perf_counter() - started
    natural = approach3.natural_samples(samples)
    jackknife = (approach3.natural_samples(approach3.jackknife_parametric(n, d, loss, fit, bounds=bounds))
                 if p.ci_method.value == "bca" and n_boot > 0 else None)
    for name in ("E", "A", "B", "alpha", "beta", "a", "b"):
        summary[f"{name}_ci"] = _interval(natural[name], fit.params[name], p.ci_method,
                                          None if jackknife is None else jackknife[name])
    summary.update({"huber_delta": p.huber_delta, "n_points": fit.n_points, "objective": fit.objective, "n_starts": fit.n_starts,
                    "n_boot": n_boot, "ci_method": p.ci_method.value, "fit_seconds": fit_seconds,
                    "log_params": dict(zip(approach3.PARAM_NAMES, fit.theta))})
    return summary, {"fit": fit, "samples": samples}


def fit_group(table: pd.DataFrame, s: ScalingLawsSettings, warn, progress: bool = False,
              label: str | None = None) -> tuple[dict, dict]:
    """Every selected approach on one group of rows; an approach the data cannot identify is reported (summary
    ``{identifiable: false, reason}`` and a warning) and the others still run; none identifiable is a UserError.
    ``label``: the group's name, part of the identity of its random streams."""
    key = () if label is None else (label,)
    fits = {1: lambda: run_approach1(table, s.approach1, warn, progress, key),
            2: lambda: run_approach2(table, s.approach2, warn, progress, key),
            3: lambda: run_approach3(table, s.approach3, warn, s.bounds_array, progress, key)}
    summary, artefacts, reasons = {}, {}, []
    for k in [k for k in fits if k in s.approaches]:
        part, parts = fits[k]()
        summary[f"approach{k}"] = part
        if parts:
            artefacts[f"approach{k}"] = parts
        if not part["identifiable"]:
            reasons.append(f"approach {k}: {part['reason']}")
            warn(f"approach {k} not identifiable, left out: {part['reason']}")
    if len(reasons) == len(summary):
        raise UserError(f"{WHO}: no approach can be fitted on these {len(table)} points: {'; '.join(reasons)}")
    return summary, artefacts


def _tables(label: str | None, artefacts: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The per-group CSV tables."""
    out = {}
    if "approach1" in artefacts:
        out["approach1_envelope"] = artefacts["approach1"]["envelope"]
    if "approach2" in artefacts:
        res = artefacts["approach2"]["result"]
        out.update(approach2_minima=res.minima, approach2_isoflop_points=res.points)
    if "approach3" in artefacts:
        fit = artefacts["approach3"]["fit"]
        top = pd.DataFrame(fit.top, columns=[*approach3.PARAM_NAMES, "objective"])
        top.insert(0, "rank", np.arange(1, len(top) + 1))
        out["approach3_optima"] = top
        samples = artefacts["approach3"]["samples"]
        if len(samples):
            out["approach3_bootstrap"] = pd.DataFrame(approach3.natural_samples(samples))
    if label is not None:
        out = {k: v.assign(group=label) for k, v in out.items()}
    return out


def run(table: pd.DataFrame, params: Mapping[str, Any] | ScalingLawsSettings | None, out: Any) -> dict[str, Any]:
    """Fit the selected approaches (per group) and write summary fields, per-budget tables and figures."""
    from analyses.scaling_laws import plots

    s = as_settings(ScalingLawsSettings, params, who=WHO)
    group_by = list(s.group_by)
    require_columns(table, [*REQUIRED_COLUMNS, *group_by], WHO)
    table = _clean(table)
    if not len(table):
        raise UserError(f"{WHO}: the table is empty; expected rows with N, D, C, loss")
    groups = ({"/".join(str(v) for v in (key if isinstance(key, tuple) else (key,))): g
               for key, g in table.groupby(group_by, sort=True, dropna=False)} if group_by else {None: table})
    summary: dict[str, Any] = {}
    collected: dict[str, list[pd.DataFrame]] = {}
    for label, group in groups.items():
        def warn(message: str, label=label) -> None:
            out.warn(message if label is None else f"group {label}: {message}")

        try:
            g_summary, artefacts = fit_group(group.reset_index(drop=True), s, warn,
                                             bool(getattr(out, "progress", False)), label)
        except UserError as exc:
            if label is None:
                raise
            message = str(exc)
            warn(message[len(WHO) + 2:] if message.startswith(f"{WHO}: ") else message)
            continue
        if label is None:
            summary.update(g_summary)
        else:
            summary.setdefault("groups", {})[label] = g_summary
        for name, frame in _tables(label, artefacts).items():
            collected.setdefault(name, []).append(frame)
        if s.figures:
            suffix = "" if label is None else "_" + "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in label)
            fitted = {k: v for k, v in artefacts.items() if v.get("identifiable", True)}
            for name, (fig, caption) in plots.figures(group, fitted, title=label).items():
                out.figure(name + suffix, fig, caption=caption)
    if group_by and not summary.get("groups"):
        raise UserError(f"{WHO}: no group of {', '.join(group_by)} could be fitted (see the warnings above)")
    for name, frames in collected.items():
        out.table(name, pd.concat(frames, ignore_index=True))
    summary["n_points"] = len(table)
    if group_by:
        summary["group_by"] = group_by
    return summary


class ScalingLaws(AnalysisBase):
    """The scaling-laws analysis (``_target_: analyses.scaling_laws.ScalingLaws``)."""

    name = WHO
    settings_type = ScalingLawsSettings
    REQUIRED_COLUMNS = REQUIRED_COLUMNS
    report_tables = staticmethod(render_scaling_laws)

    def required_columns(self, settings: ScalingLawsSettings) -> tuple[str, ...]:
        """N, D, C, loss, the ``group_by`` columns and approach 2's explicit ``curve_by`` columns."""
        return (*REQUIRED_COLUMNS, *self.carried_columns(settings))

    def carried_columns(self, settings: ScalingLawsSettings) -> tuple[str, ...]:
        """The ``group_by`` columns (and approach 2's explicit ``curve_by`` columns), for the recipe to carry."""
        curve_by = settings.approach2.curve_by if 2 in settings.approaches else None
        return tuple(dict.fromkeys([*settings.group_by, *(curve_by or [])]))

    def run(self, table: pd.DataFrame, settings: ScalingLawsSettings, out: Any) -> dict[str, Any]:
        """See the module-level ``run``."""
        return run(table, settings, out)
