"""experiment=norm_transfer_paper equals an independent re-computation of the norm-transfer reference procedure."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from analyses import regressions
from toolkit.demo import make_lr_bs_sweep
from toolkit.outputs import AnalysisOutput
from toolkit.recipes import lr_bs_sweep
from toolkit.runset import RunSet
from toolkit.settings import CONF_DIR, register_schemas

CONF = CONF_DIR
HORIZONS = [2**28, 2**29, 2**30]


def paper_config(extra=()):
    register_schemas(CONF_DIR)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["experiment=norm_transfer_paper", *extra])


def sweep_table(seq_len):
    sweep = make_lr_bs_sweep(seed=3, seeds=(0,), seq_len=seq_len, norm_log2_opt=7.0, horizons_log2=(24, 31),
                             log_every_tokens=2**24, n_diverged=0)
    h = sweep.history
    first = h.drop_duplicates("run_name")
    runs = pd.DataFrame({"run_id": first["run_name"].to_numpy(), "name": first["run_name"].to_numpy(), "state": "finished",
                         "created_at": None, "tags": ""})
    runset = RunSet(runs, h.rename(columns={"run_name": "run_id"})[["run_id", "step", "train_loss", "output_norm"]])
    return lr_bs_sweep.build(runset, {"seq_len": seq_len}, lambda _: None)


# ------------------------------------------------------------- the reference procedure, written out independently


def reference_minima(df, horizons, lo=-2, hi=2, max_loss=11.8, fit_k=5):
    rows = []
    for h in horizons:
        pts = []
        for (bs, lr), g in df.groupby(["bs", "lr"]):
            g = g.sort_values("step").reset_index(drop=True)
            hit = np.flatnonzero(g["horizon"].to_numpy() == h)
            if not len(hit):
                continue
            w = g.iloc[max(0, hit[0] + lo): min(len(g) - 1, hit[0] + hi) + 1]
            pts.append({"bs": bs, "lr": lr, "loss": w["train_loss"].mean(), "std": w["train_loss"].std(ddof=0),
                        "x": np.log2(w["output_norm"]).mean()})
        pts = pd.DataFrame(pts)
        for bs, sub in pts.groupby("bs"):
            sub = sub[sub["loss"] < max_loss].reset_index(drop=True)
            if len(sub) < 3:
                continue
            x, y, sd = sub["x"].to_numpy(), sub["loss"].to_numpy(), sub["std"].to_numpy()
            e = int(np.argmin(y))
            order = np.argsort(np.abs(x - x[e]))
            idx = list(order[:fit_k])
            if not ((x[idx] < x[e]).any() and (x[idx] > x[e]).any()):
                for j in order[fit_k:]:
                    if ((x[idx] < x[e]).any() or x[j] < x[e]) and ((x[idx] > x[e]).any() or x[j] > x[e]):
                        far = idx[int(np.argmax(np.abs(x[idx] - x[e])))]
                        idx = [t for t in idx if t != far] + [j]
                        break
            sw = 1 / np.sqrt(np.maximum(sd[idx] ** 2, 1e-12))
            A = np.column_stack([x[idx] ** 2, x[idx], np.ones(len(idx))]) * sw[:, None]
            a, b, c = np.linalg.lstsq(A, y[idx] * sw, rcond=None)[0]
            x0, y0 = -b / (2 * a), c - b * b / (4 * a)
            j = int(np.argmin((x - x0) ** 2 + (y - y0) ** 2))
            rows.append({"horizon": h, "bs": bs, "lr": sub["lr"].iloc[j]})
    return pd.DataFrame(rows)


def ols(y, *cols):
    X = np.column_stack([*cols, np.ones(len(y))])
    return np.linalg.lstsq(X, y, rcond=None)[0]


def reference_band(df, c=7.0, eps=0.2, h_lo=2**24, h_hi=2**37, bs_lo=32, bs_hi=2048):
    d = df[(df["lr"] > 0) & (df["lr"] < 1) & (df["bs"] >= bs_lo) & (df["bs"] <= bs_hi)].dropna(subset=["output_norm"])
    d = d.sort_values(["bs", "lr", "horizon"])
    firsts = []
    for (bs, lr), g in d.groupby(["bs", "lr"]):
        inside = g[(g["output_norm"] >= 2 ** (c - eps)) & (g["output_norm"] <= 2 ** (c + eps))]
        if len(inside):
            firsts.append((bs, lr, float(inside["horizon"].iloc[0])))
    f = pd.DataFrame(firsts, columns=["bs", "lr", "h"])
    f = f[(f["h"] >= h_lo) & (f["h"] <= h_hi)]
    return ols(np.log2(f["lr"].to_numpy()), np.log2(f["h"].to_numpy()), np.log2(f["bs"].to_numpy())), len(f)


def test_the_paper_preset_sets_the_reference_procedure():
    cfg = paper_config()
    assert cfg.recipe.seq_len == 4096
    m, r = cfg.analysis.minima, cfg.analysis.regressions
    assert m.fit_axis == "output_norm" and m.max_loss < 11.8 and np.nextafter(m.max_loss, 12) == 11.8
    assert r.lr_star == "closest_xy" and r.weighted is False and r.drop_on_edge is False
    assert (r.norm_band.c, r.norm_band.eps, r.norm_band.entry, r.norm_band.lr_open) == (7.0, 0.2, "first_in_band", True)


def test_paper_preset_equals_the_reference_recomputation(tmp_path):
    cfg = paper_config(["analysis.minima.horizons=[268435456,536870912,1073741824]", "analysis.minima.avg_rel_from=-2",
                        "analysis.minima.avg_rel_to=2", "analysis.minima.fit_k=5", "analysis.minima.bootstrap.n=0",
                        "analysis.minima.plots=false", "analysis.regressions.norm_band.horizon_bounds=[16777216,137438953472]"])
    table = sweep_table(int(cfg.recipe.seq_len))
    settings = OmegaConf.to_object(cfg.analysis.regressions)
    out = AnalysisOutput(tmp_path, "regressions", progress=False)
    summary = regressions.run(table, settings, out)
    final = out.commit(summary)
    used = pd.read_csv(final / "minima_used.csv")

    ref = reference_minima(table, HORIZONS)
    merged = ref.merge(used[["horizon", "bs", "lr"]], on=["horizon", "bs"], suffixes=("_ref", ""))
    assert len(merged) == len(ref) == len(used) == 12
    np.testing.assert_allclose(merged["lr"], merged["lr_ref"], rtol=1e-12)
    coef = ols(np.log2(ref["lr"].to_numpy(float)), np.log2(ref["bs"].to_numpy(float)), np.log2(ref["horizon"].to_numpy(float)))
    law = summary["lr_vs_bs_horizon"]
    np.testing.assert_allclose([law["alpha"], law["beta"], law["gamma"]], coef, rtol=1e-9, atol=1e-9)

    (A, B, C), n = reference_band(table)
    band = summary["norm_band"]
    assert band["n_used"] == n > 5
    np.testing.assert_allclose([band["A"], band["B"], band["C"]], [A, B, C], rtol=1e-9, atol=1e-9)
    assert "bias" not in band["bias_note"] or "c-0.2" in band["bias_note"]


@pytest.mark.parametrize("experiment", ["norm_transfer", "norm_transfer_paper"])
def test_both_presets_compose(experiment):
    register_schemas(CONF_DIR)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    assert OmegaConf.to_object(cfg.analysis.regressions).minima is not None
