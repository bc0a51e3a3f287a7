"""The correlations analysis' interactive rank scatter (offline HTML, hover data) and its figure captions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analyses import correlations as C
from analyses import correlations_plots as plots
from toolkit.outputs import AnalysisOutput


def _table(n_m: int = 4, n_c: int = 3, steps: int = 3, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    keys = [f"scaling_factor/scaling_factor{i}" for i in range(1, n_m + 1)]
    keys += [f"scaling_factor/sampling{i}/{j}" for i in range(1, n_m + 1) for j in range(1, n_c + 1)]
    rows = []
    for run, name in (("r1", "fira-lowrank"), ("r2", "fira-fullrank")):
        base = rng.normal(size=len(keys))
        for step in range(1, steps + 1):
            for key, v in zip(keys, base + 0.1 * rng.normal(size=len(keys))):
                rows.append({"run_id": run, "name": name, "step": step * 10, "key": key, "value": float(v)})
    return pd.DataFrame(rows)


def test_rank_scatter_html_is_offline_and_hovers_members_and_ranks(tmp_path: Path) -> None:
    out = AnalysisOutput(tmp_path, "correlations", progress=False)
    summary = C.run(_table(), {"a": "lowrank", "b": "fullrank", "over_time": True, "bootstrap": {"n": 20}}, out)
    folder = out.commit(summary)
    html_path = folder / "rank_scatter.html"
    html = html_path.read_text()
    assert 'src="../plotly.min.js"' in html and (tmp_path / "plotly.min.js").exists()
    assert html_path.stat().st_size < 200_000  # plotly.js is shared, not embedded
    assert (folder / "rank_scatter.png").exists() and (folder / "over_time.png").exists()
    saved = json.loads((folder / "summary.json").read_text())
    assert set(saved["figures"]) == {"rank_scatter.png", "rank_scatter.html", "over_time.png"}
    assert all(c and "\n" not in c for c in saved["figures"].values())
    assert "matrix and each column" in saved["figures"]["rank_scatter.png"]

    aligned = pd.read_csv(folder / "aligned.csv", dtype={"member": str})
    fig = plots.rank_scatter_interactive(aligned, summary, ["matrix", "column"])
    points = [t for t in fig.data if t.mode == "markers"]
    assert len(points) == 2
    for trace, level in zip(points, ("matrix", "column")):
        g = aligned[aligned["level"] == level]
        assert [c[0] for c in trace.customdata] == g["member"].tolist()  # member names, e.g. "2/3"
        assert [c[1] for c in trace.customdata] == g["key"].tolist()
        assert np.allclose(np.asarray(trace.x, dtype=float), g["a_rank"]) and np.allclose(np.asarray(trace.y, dtype=float), g["b_rank"])
        # the ranks shown are the ranks of the reduced values (independently: scipy's rankdata)
        assert np.allclose(np.asarray(trace.x, dtype=float), stats.rankdata(g["a"]))
        for part in ("member %{customdata[0]}", "rank a %{x}", "rank b %{y}", f"level {level}"):
            assert part in trace.hovertemplate
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].startswith("matrix (n=4): Spearman") and titles[1].startswith("column (n=12): Spearman")
    assert f"{summary['matrix']['spearman']:.3f}" in titles[0]


def test_large_levels_use_webgl() -> None:
    n = plots.WEBGL_ABOVE + 1
    aligned = pd.DataFrame({"level": "column", "member": [f"1/{i}" for i in range(n)], "key": [f"k{i}" for i in range(n)],
                            "a": np.arange(n, dtype=float), "b": np.arange(n, dtype=float)[::-1]})
    aligned["a_rank"] = stats.rankdata(aligned["a"])
    aligned["b_rank"] = stats.rankdata(aligned["b"])
    fig = plots.rank_scatter_interactive(aligned, {"column": {"spearman": -1.0, "kendall": -1.0}}, ["column"])
    assert fig.data[0].type == "scattergl" and len(fig.data[0].x) == n
