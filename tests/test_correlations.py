"""The correlations analysis: scipy-exact statistics, planted rank relations, reduction, sides, recipe and outputs."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analyses import correlations as C
from toolkit.errors import UserError
from toolkit.outputs import AnalysisOutput
from toolkit.recipes import metric_family as mf
from toolkit.runset import RunSet

FAMILY = dict(C.DEFAULT_FAMILY)


def kendall_by_pairs(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau (no ties) by counting concordant and discordant pairs."""
    s = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        s += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    return s / (len(x) * (len(x) - 1) / 2)


def make_runs(sides: dict[str, list[np.ndarray]], n_matrices: int, n_columns: int, steps: int = 5,
              noise: float = 0.0, seed: int = 0) -> RunSet:
    """Runs whose matrix-level value i is ``base[i-1]`` and column (i, j) value is ``base[(i-1)*n_columns + j-1]``."""
    rng = np.random.default_rng(seed)
    hist, runs = [], []
    for name, bases in sides.items():
        for r, (mat, col) in enumerate(bases):
            rid = f"{name}-{r}"
            runs.append({"run_id": rid, "name": f"{name}-{r}", "config.rank": 8 if "low" in name else 0})
            data = {"run_id": rid, "step": np.arange(1, steps + 1) * 10}
            for i in range(1, n_matrices + 1):
                data[f"scaling_factor/scaling_factor{i}"] = mat[i - 1] + noise * rng.normal(size=steps)
                for j in range(1, n_columns + 1):
                    data[f"scaling_factor/sampling{i}/{j}"] = col[(i - 1) * n_columns + j - 1] + noise * rng.normal(size=steps)
            data["train/loss"] = np.linspace(3, 1, steps)
            hist.append(pd.DataFrame(data))
    return RunSet(pd.DataFrame(runs), pd.concat(hist, ignore_index=True))


def table_of(runset: RunSet, **params) -> pd.DataFrame:
    return mf.build(runset, {"family": FAMILY, **params}, lambda m: None)


# ------------------------------------------------------------------ patterns


def test_compile_pattern_levels_groups_and_literals():
    p = C.compile_pattern("scaling_factor/sampling{matrix}/{column}")
    assert p.level == "column" and p.groups == ("matrix", "column")
    assert p.match("scaling_factor/sampling12/7") == ("12", "7")
    assert p.match("scaling_factor/sampling12/7/x") is None
    assert p.match("scaling_factor/scaling_factor3") is None
    m = C.compile_pattern("scaling_factor/scaling_factor{matrix}")
    assert m.match("scaling_factor/scaling_factor3") == ("3",)
    assert m.match("scaling_factor/sampling3/1") is None
    dots = C.compile_pattern("a.b{i:[0-9]+}")  # literal dot, narrowed group
    assert dots.match("a.b12") == ("12",) and dots.match("axb12") is None and dots.match("a.bx") is None
    with pytest.raises(UserError, match="no named group"):
        C.compile_pattern("scaling_factor/plain")
    with pytest.raises(UserError, match="level 'matrix'"):
        C.parse_family(["x{matrix}", "y{matrix}"])
    levels = [p.level for p in C.parse_family(None)]
    assert levels == ["matrix", "column"]


# ------------------------------------------------------------------ statistics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_correlation_equals_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 7, size=40).astype(float)  # many ties
    b = a + rng.integers(-3, 4, size=40)
    res = C.rank_correlation(a, b)
    s, k = stats.spearmanr(a, b), stats.kendalltau(a, b)
    assert res["spearman"] == s.statistic and res["spearman_p"] == s.pvalue
    assert res["kendall"] == k.statistic and res["kendall_p"] == k.pvalue
    assert res["n"] == 40


def test_rank_correlation_undefined_cases_are_nan():
    assert np.isnan(C.rank_correlation(np.ones(5), np.arange(5.0))["spearman"])
    assert np.isnan(C.rank_correlation(np.array([1.0]), np.array([2.0]))["kendall"])
    with pytest.raises(UserError):
        C.rank_correlation(np.arange(3.0), np.arange(4.0))


def test_bootstrap_spearman_equals_spearmanr_on_the_expanded_resample():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 10, size=30).astype(float)
    b = 0.5 * a + rng.normal(size=30)
    idx = rng.integers(0, 30, size=(4, 30))
    counts = np.zeros((4, 30), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(4), 30), idx.ravel()), 1)
    got = C.bootstrap_spearman(a, b, counts)
    for i in range(4):
        assert got[i] == pytest.approx(stats.spearmanr(a[idx[i]], b[idx[i]]).statistic, abs=1e-12)


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = a + rng.normal(size=200)
    one = C.bootstrap_ci(a, b, n_boot=200, seed=5)
    two = C.bootstrap_ci(a, b, n_boot=200, seed=5)
    assert one == two
    est = C.rank_correlation(a, b)
    assert one["spearman_ci"][0] < est["spearman"] < one["spearman_ci"][1]
    assert one["kendall_ci"][0] < est["kendall"] < one["kendall_ci"][1]
    assert C.bootstrap_ci(a, b, n_boot=0) == {"spearman_ci": None, "kendall_ci": None}


# ------------------------------------------------------------------ planted relations through recipe + analysis


def test_identical_ranks_give_one_at_both_levels():
    rng = np.random.default_rng(1)
    mat, col = rng.uniform(1, 2, 6), rng.uniform(0, 1, 6 * 5)
    rs = make_runs({"fira-lowrank": [(mat, col)], "fira-fullrank": [(np.exp(mat), 3 * col + 1)]}, 6, 5)
    res = C.correlate(table_of(rs), {"a": "lowrank", "b": "fullrank", "bootstrap": {"n": 50}})
    for level, n in (("matrix", 6), ("column", 30)):
        assert res["summary"][level]["spearman"] == pytest.approx(1.0)
        assert res["summary"][level]["kendall"] == pytest.approx(1.0)
        assert res["summary"][level]["n"] == n
        assert res["summary"][level]["spearman_ci"] == pytest.approx([1.0, 1.0])


def test_known_permutation_gives_its_exact_tau_and_rho():
    n_m, n_c = 8, 4
    rng = np.random.default_rng(7)
    perm_m, perm_c = rng.permutation(n_m), rng.permutation(n_m * n_c)
    mat_a, col_a = np.arange(1.0, n_m + 1), np.arange(1.0, n_m * n_c + 1)
    mat_b, col_b = mat_a[perm_m], col_a[perm_c]  # side b ranks = the permutation
    rs = make_runs({"fira-lowrank": [(mat_a, col_a)], "fira-fullrank": [(mat_b, col_b)]}, n_m, n_c, noise=0.0)
    res = C.correlate(table_of(rs), {"a": "lowrank", "b": "fullrank", "bootstrap": {"n": 0}})
    for level, x, y in (("matrix", mat_a, mat_b), ("column", col_a, col_b)):
        n = len(x)
        d = (x - y)  # values are their own ranks 1..n
        rho = 1 - 6 * np.sum(d ** 2) / (n * (n * n - 1))
        assert res["summary"][level]["kendall"] == pytest.approx(kendall_by_pairs(x, y), abs=1e-12)
        assert res["summary"][level]["spearman"] == pytest.approx(rho, abs=1e-12)


def test_group_sides_average_their_runs_first():
    rng = np.random.default_rng(2)
    n_m, n_c = 5, 3
    a1, a2 = (rng.normal(size=n_m), rng.normal(size=n_m * n_c)), (rng.normal(size=n_m), rng.normal(size=n_m * n_c))
    b1 = (rng.normal(size=n_m), rng.normal(size=n_m * n_c))
    rs = make_runs({"low": [a1, a2], "full": [b1]}, n_m, n_c)
    res = C.correlate(table_of(rs), {"a": "^low", "b": "^full", "bootstrap": {"n": 0}})
    assert res["summary"]["sides"]["a"]["n_runs"] == 2 and res["summary"]["sides"]["b"]["n_runs"] == 1
    expect = stats.kendalltau((a1[0] + a2[0]) / 2, b1[0])
    assert res["summary"]["matrix"]["kendall"] == pytest.approx(expect.statistic)
    assert res["summary"]["matrix"]["kendall_p"] == pytest.approx(expect.pvalue)
    assert set(res["aligned"]["a_n_runs"]) == {2}
    # the same sides chosen by config value and by run ids
    by_cfg = C.correlate(table_of(rs), {"a": {"config": {"rank": 8}}, "b": {"config": {"rank": 0}}, "bootstrap": {"n": 0}})
    by_ids = C.correlate(table_of(rs), {"a": ["low-0", "low-1"], "b": {"run_ids": ["full-0"]}, "bootstrap": {"n": 0}})
    for other in (by_cfg, by_ids):
        assert other["summary"]["matrix"]["kendall"] == res["summary"]["matrix"]["kendall"]
        assert other["summary"]["column"]["spearman"] == res["summary"]["column"]["spearman"]


def _series_table() -> pd.DataFrame:
    rows = []
    for run, name, vals in (("r1", "side-a", {1: [1, 5, 2, 9], 2: [4, 4, 4, 0], 3: [2, 3, 4, 5]}),
                            ("r2", "side-b", {1: [0, 0, 1, 1], 2: [5, 6, 7, 8], 3: [9, 9, 0, 0]})):
        for m, series in vals.items():
            for step, v in zip((0, 10, 20, 30), series):
                rows.append({"run_id": run, "name": name, "step": step, "key": f"scaling_factor/scaling_factor{m}", "value": float(v)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("how,steps,expect_a", [
    ("mean", None, [17 / 4, 3.0, 3.5]),
    ("median", None, [3.5, 4.0, 3.5]),
    ("last", None, [9.0, 0.0, 5.0]),
    ("mean", [10, 20], [3.5, 4.0, 3.5]),
    ("last", [None, 20], [2.0, 4.0, 4.0]),
])
def test_reduction_over_a_step_window(how, steps, expect_a):
    res = C.correlate(_series_table(), {"a": "side-a", "b": "side-b", "family": "scaling_factor/scaling_factor{matrix}",
                                        "reduce": how, "steps": steps, "bootstrap": {"n": 0}})
    aligned = res["aligned"]
    assert aligned["matrix"].tolist() == ["1", "2", "3"]
    assert aligned["a"].tolist() == pytest.approx(expect_a)
    expect = stats.spearmanr(aligned["a"], aligned["b"])
    assert res["summary"]["matrix"]["spearman"] == expect.statistic


def test_keys_on_one_side_only_are_reported_not_dropped_silently():
    table = _series_table()
    extra = pd.DataFrame([{"run_id": "r1", "name": "side-a", "step": 0, "key": "scaling_factor/scaling_factor4", "value": 1.0}])
    warnings: list[str] = []
    res = C.correlate(pd.concat([table, extra], ignore_index=True),
                      {"a": "side-a", "b": "side-b", "family": {"matrix": "scaling_factor/scaling_factor{matrix}"}, "bootstrap": {"n": 0}},
                      warnings.append)
    assert res["summary"]["unmatched"]["matrix"]["only_a"] == 1
    assert res["summary"]["unmatched"]["matrix"]["only_a_keys"] == ["scaling_factor/scaling_factor4"]
    assert res["summary"]["matrix"]["n"] == 3
    assert any("only on side a" in w for w in warnings)
    assert "column" not in res["summary"]  # the family given replaces the default one


def test_over_time_matches_scipy_per_step():
    rng = np.random.default_rng(4)
    rs = make_runs({"fira-lowrank": [(rng.normal(size=6), rng.normal(size=12))],
                    "fira-fullrank": [(rng.normal(size=6), rng.normal(size=12))]}, 6, 2, steps=4, noise=0.3, seed=1)
    table = table_of(rs)
    res = C.correlate(table, {"a": "lowrank", "b": "fullrank", "over_time": True, "bootstrap": {"n": 0}})
    ot = res["over_time"]
    assert sorted(ot["step"].unique()) == [10, 20, 30, 40]
    h = rs.history.set_index(["run_id", "step"])
    keys = [f"scaling_factor/scaling_factor{i}" for i in range(1, 7)]
    row = ot[(ot["level"] == "matrix") & (ot["step"] == 30)].iloc[0]
    x, y = h.loc[("fira-lowrank-0", 30), keys].to_numpy(float), h.loc[("fira-fullrank-0", 30), keys].to_numpy(float)
    assert row["spearman"] == stats.spearmanr(x, y).statistic
    assert row["kendall"] == stats.kendalltau(x, y).statistic
    assert res["summary"]["over_time"]["column"]["n_steps"] == 4


def test_bad_input_fails_with_one_line_naming_the_problem():
    table = _series_table()
    with pytest.raises(UserError, match=r"correlations.a: 'nomatch' matched no run; runs in the table: side-a, side-b"):
        C.correlate(table, {"a": "nomatch", "b": "side-b"})
    with pytest.raises(UserError, match="same run"):
        C.correlate(table, {"a": "side", "b": "side"})
    with pytest.raises(UserError, match=r"'mode', expected one of \[mean, median, last\] \(key reduce\)"):
        C.correlate(table, {"a": "side-a", "b": "side-b", "reduce": "mode"})
    with pytest.raises(UserError, match="no metric key matches"):
        C.correlate(table, {"a": "side-a", "b": "side-b", "family": "other/{x}"})
    with pytest.raises(UserError, match="missing column"):
        C.correlate(table.drop(columns=["key"]), {"a": "side-a", "b": "side-b"})
    with pytest.raises(UserError, match=r"\(key steps\)"):
        C.correlate(table, {"a": "side-a", "b": "side-b", "steps": 5})
    with pytest.raises(UserError, match=r"steps=\[5.0\]; expected \[from, to\]"):
        C.correlate(table, {"a": "side-a", "b": "side-b", "steps": [5]})
    with pytest.raises(UserError, match=r"bootstrap.level=1.5; expected a level in \(0, 1\)"):
        C.correlate(table, {"a": "side-a", "b": "side-b", "bootstrap": {"level": 1.5}})


# ------------------------------------------------------------------ recipe


def test_recipe_keys_from_ranges_cover_the_1b_family():
    keys = mf.metric_keys({"family": FAMILY, "ranges": {"matrix": [1, 168], "column": [1, 100]}})
    assert len(keys) == 168 + 168 * 100 == 16968
    assert keys[0] == "scaling_factor/scaling_factor1" and "scaling_factor/sampling168/100" in keys
    assert mf.metric_keys({"family": FAMILY}) is None
    assert mf.metric_keys({"keys": ["a", "b"]}) == ["a", "b"]
    with pytest.raises(UserError, match="needs a range for column"):
        mf.metric_keys({"family": FAMILY, "ranges": {"matrix": 3}})


def test_recipe_builds_a_long_table_without_nans():
    rs = make_runs({"low": [(np.arange(3.0), np.arange(6.0))], "full": [(np.arange(3.0), np.arange(6.0))]}, 3, 2, steps=4)
    rs.history.loc[rs.history["step"] == 20, "scaling_factor/scaling_factor2"] = np.nan
    table = table_of(rs)
    assert list(table.columns[:5]) == ["run_id", "name", "step", "key", "value"]
    assert "config.rank" in table.columns  # differs between the runs
    assert "train/loss" not in set(table["key"].astype(str))
    assert table["value"].notna().all()
    assert len(table) == 2 * 4 * (3 + 6) - 2
    h = rs.history.set_index(["run_id", "step"])
    sample = table.iloc[17]
    assert h.loc[(sample["run_id"], sample["step"]), sample["key"]] == sample["value"]


# ------------------------------------------------------------------ outputs


def test_run_writes_summary_aligned_table_and_figures(tmp_path: Path):
    rng = np.random.default_rng(5)
    rs = make_runs({"fira-lowrank": [(rng.normal(size=4), rng.normal(size=8))],
                    "fira-fullrank": [(rng.normal(size=4), rng.normal(size=8))]}, 4, 2, steps=3, noise=0.1)
    out = AnalysisOutput(tmp_path, "correlations")
    summary = C.run(table_of(rs), {"a": "lowrank", "b": "fullrank", "over_time": True, "bootstrap": {"n": 20}}, out)
    out.commit(summary)
    folder = tmp_path / "correlations"
    saved = json.loads((folder / "summary.json").read_text())
    for level in ("matrix", "column"):
        assert set(saved[level]) == {"spearman", "spearman_p", "kendall", "kendall_p", "n", "spearman_ci", "kendall_ci"}
    aligned = pd.read_csv(folder / "aligned.csv")
    assert len(aligned) == 4 + 8 and list(aligned.columns[:5]) == ["level", "member", "matrix", "column", "key"]
    assert (folder / "rank_scatter.png").exists() and (folder / "over_time.png").exists() and (folder / "over_time.csv").exists()


# ------------------------------------------------------------------ the real pipeline on the torch toy's runs

CONF = Path(__file__).resolve().parents[1] / "conf"
TOY = {"steps": 12, "d_model": 16, "n_heads": 2, "rank": 2, "n_samples": 6}


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from toolkit.settings import register_schemas

    register_schemas(CONF)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def _expected_from_toy() -> dict[str, dict[str, float]]:
    """The seed's computation, independently: train both variants again, average each series, scipy on the means."""
    from toolkit.examples.fira_toy import ToyConfig, train
    from toolkit.scaling_factors import ScalingFactorSampler, scaling_factor_metrics

    means = {}
    for variant in ("lowrank", "fullrank"):
        sampler = ScalingFactorSampler(TOY["n_samples"])
        rows = [scaling_factor_metrics(f, sampler) for _, _, f in train(ToyConfig(variant=variant, **TOY))]
        means[variant] = pd.DataFrame(rows).mean()
    out = {}
    for level, prefix in (("matrix", "scaling_factor/scaling_factor"), ("column", "scaling_factor/sampling")):
        keys = [k for k in means["lowrank"].index if k.startswith(prefix)]
        x, y = means["lowrank"][keys].to_numpy(), means["fullrank"][keys].to_numpy()
        out[level] = {"spearman": stats.spearmanr(x, y).statistic, "kendall": stats.kendalltau(x, y).statistic, "n": len(keys)}
    return out


def _check_summary(summary: dict, expected: dict) -> None:
    for level in ("matrix", "column"):
        assert summary[level]["n"] == expected[level]["n"]
        assert summary[level]["spearman"] == pytest.approx(expected[level]["spearman"], abs=1e-9)
        assert summary[level]["kendall"] == pytest.approx(expected[level]["kendall"], abs=1e-9)
    assert summary["sides"]["a"]["runs"] == ["fira-lowrank"] and summary["sides"]["b"]["runs"] == ["fira-fullrank"]


def test_experiment_fira_similarity_end_to_end_on_the_local_tracker(tmp_path: Path):
    pytest.importorskip("torch")
    pytest.importorskip("adapters.local")
    pytest.importorskip("toolkit.logging")
    from toolkit import pipeline
    from toolkit.examples import fira_toy

    runs = tmp_path / "fira_runs"
    fira_toy.run_toy(fira_toy.tracker_settings(runs, ["local"]), **TOY)
    cfg = _compose(["experiment=fira_similarity", f"tracker.path={runs}", "analysis.correlations.bootstrap.n=50",
                    f"cache.dir={tmp_path / 'cache'}", "progress=false"])
    status = pipeline.run(cfg, tmp_path / "out")
    assert status["failed"] == {}
    folder = tmp_path / "out" / "correlations"
    summary = json.loads((folder / "summary.json").read_text())
    _check_summary(summary, _expected_from_toy())
    for name in ("aligned.csv", "over_time.csv", "rank_scatter.png", "over_time.png"):
        assert (folder / name).exists(), name
    assert summary["over_time"]["matrix"]["n_steps"] == TOY["steps"]


@pytest.mark.slow
def test_toy_logged_through_mlflow_and_wandb_reads_back_to_the_same_result(tmp_path: Path):
    pytest.importorskip("torch")
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    for module in ("adapters.local", "adapters.mlflow", "adapters.wandb", "toolkit.logging"):
        pytest.importorskip(module)
    from toolkit import pipeline
    from toolkit.examples import fira_toy

    runs = tmp_path / "fira_runs"
    fira_toy.run_toy(fira_toy.tracker_settings(runs, ["local", "mlflow", "wandb"]), **TOY)
    expected = _expected_from_toy()
    common = ["experiment=fira_similarity", "analysis.correlations.bootstrap.n=50", f"cache.dir={tmp_path / 'cache'}",
              "progress=false", "analysis.correlations.over_time=false"]
    setups = {
        "local": [f"tracker.path={runs}"],
        "mlflow": ["tracker=mlflow", f"tracker.uri=sqlite:///{runs / 'mlflow.db'}", "tracker.experiment=fira-toy"],
        "wandb": ["tracker=wandb", f"tracker.path={runs / 'wandb'}"],
    }
    summaries = {}
    for name, overrides in setups.items():
        status = pipeline.run(_compose(common + overrides), tmp_path / f"out_{name}")
        assert status["failed"] == {}, name
        summaries[name] = json.loads((tmp_path / f"out_{name}" / "correlations" / "summary.json").read_text())
        _check_summary(summaries[name], expected)
    for level in ("matrix", "column"):
        assert summaries["mlflow"][level] == summaries["local"][level]
        assert summaries["wandb"][level] == summaries["local"][level]


def _matrix_only_csv(path: Path, n_matrices: int = 6, steps: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """A wide history CSV of two runs that log only the matrix-level scaling factors (no sampling{i}/{j} keys);
    returns each run's per-key means."""
    rng = np.random.default_rng(seed)
    frames, means = [], {}
    for name in ("fira-lowrank", "fira-fullrank"):
        base = rng.uniform(1, 2, n_matrices)
        data = {"run_name": name, "step": np.arange(1, steps + 1) * 10}
        for i in range(1, n_matrices + 1):
            data[f"scaling_factor/scaling_factor{i}"] = base[i - 1] + 0.05 * rng.normal(size=steps)
        data["train/loss"] = np.linspace(3, 1, steps)
        frame = pd.DataFrame(data)
        frames.append(frame)
        means[name] = frame[[f"scaling_factor/scaling_factor{i}" for i in range(1, n_matrices + 1)]].mean().to_numpy()
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)
    return means


def test_runs_with_only_matrix_level_keys_correlate_that_level_and_warn_about_the_other(tmp_path: Path):
    """Through the real pipeline (local tracker, recipe metric_family, experiment fira_similarity): the matrix level
    is computed (the same numbers as scipy on the runs' means), the column level has no keys: a recorded warning in
    summary.json, no crash, no column entry."""
    from toolkit import pipeline

    path = tmp_path / "matrix_only.csv"
    means = _matrix_only_csv(path)
    cfg = _compose(["experiment=fira_similarity", f"tracker.path={path}", "analysis.correlations.bootstrap.n=50",
                    f"cache.dir={tmp_path / 'cache'}", "progress=false"])
    status = pipeline.run(cfg, tmp_path / "out")
    assert status["failed"] == {} and status["error"] is None, status
    folder = tmp_path / "out" / "correlations"
    summary = json.loads((folder / "summary.json").read_text())
    x, y = means["fira-lowrank"], means["fira-fullrank"]
    assert summary["matrix"]["n"] == 6
    assert summary["matrix"]["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert summary["matrix"]["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert "column" not in summary and "column" not in summary["over_time"]
    assert any(w.startswith("level column: no metric key matches 'scaling_factor/sampling{matrix}/{column}'")
               for w in summary["warnings"]), summary["warnings"]
    aligned = pd.read_csv(folder / "aligned.csv")
    assert set(aligned["level"]) == {"matrix"} and len(aligned) == 6
    assert (folder / "rank_scatter.png").exists() and (folder / "over_time.png").exists()
