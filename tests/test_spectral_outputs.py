"""spectral_norms on a list of tensors; the benchmark's cell bar (known total, the run's progress switch); the
interactive Pareto figure and the figure captions."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from toolkit import spectral  # noqa: E402
from toolkit.errors import UserError  # noqa: E402
from toolkit.outputs import AnalysisOutput  # noqa: E402


def _matrix(shape: tuple[int, int], top: float, seed: int) -> torch.Tensor:
    s = spectral.decaying_spectrum(min(shape), gap=1.5, decay=0.5, top=top)
    return spectral.known_spectrum(s, shape, seed=seed).float()


def test_spectral_norms_takes_a_list_and_names_its_entries_by_position() -> None:
    mats = [_matrix((24, 40), 2.0, 0), torch.ones(40), _matrix((24, 40), 3.5, 1), _matrix((40, 16), 0.5, 2)]
    got = spectral.spectral_norms(mats, method="exact")
    assert list(got) == ["0", "2", "3"]  # the vector at position 1 is skipped; the others keep their number
    for name, top in (("0", 2.0), ("2", 3.5), ("3", 0.5)):
        assert got[name] == pytest.approx(top, rel=1e-5)  # s1 by construction
    # the same numbers as the mapping form, tuples and generators too, and the warm-start state is keyed alike
    as_map = spectral.spectral_norms({str(i): m for i, m in enumerate(mats)}, method="power", steps=30)
    assert spectral.spectral_norms(tuple(mats), method="power", steps=30) == as_map
    assert spectral.spectral_norms((m for m in mats), method="power", steps=30) == as_map
    state: dict = {}
    spectral.spectral_norms(mats, method="power", steps=3, state=state)
    assert set(state) == {"0", "2", "3"}
    assert spectral.spectral_norms([], method="exact") == {}


def test_spectral_norms_refuses_a_single_tensor_in_one_line() -> None:
    with pytest.raises(UserError, match=r"got a tensor of shape \(24, 40\) \(spectral_norm\(w\) takes one matrix\)"):
        spectral.spectral_norms(_matrix((24, 40), 1.0, 0))
    with pytest.raises(UserError, match="got a int"):
        spectral.spectral_norms(3)


class _Bar:
    made: list["_Bar"] = []

    def __init__(self, total, desc, enabled=True, unit="run"):
        self.total, self.desc, self.enabled, self.unit, self.n = total, desc, enabled, unit, 0
        _Bar.made.append(self)

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


PARAMS = {"shapes": [[16, 16], [16, 40], [24, 24]], "methods": ["exact", "power:5"], "dtypes": ["float32", "bfloat16"],
          "device": "cpu", "repeats": 1, "warmup": 0}


@pytest.mark.parametrize("progress", [False, True])
def test_benchmark_bar_counts_the_cells_with_the_run_progress_switch(monkeypatch, tmp_path, progress: bool) -> None:
    from analyses import spectral as analysis

    _Bar.made = []
    monkeypatch.setattr(analysis, "progress_bar", _Bar)
    out = AnalysisOutput(tmp_path, "spectral", progress=progress)
    summary = analysis.run(None, PARAMS, out)
    (bar,) = _Bar.made
    assert (bar.total, bar.enabled, bar.unit) == (3 * 2 * 2, progress, "cell")
    assert bar.n == bar.total == summary["n_rows"]


def test_pareto_html_hovers_method_dtype_shape_and_every_figure_has_a_caption(tmp_path) -> None:
    from analyses import spectral as analysis
    from analyses.spectral_plots import pareto_front, pareto_interactive

    out = AnalysisOutput(tmp_path, "spectral", progress=False)
    final = out.commit(analysis.run(None, PARAMS, out))
    assert (final / "pareto.png").exists()
    html = (final / "pareto.html").read_text()
    assert 'src="../plotly.min.js"' in html and (tmp_path / "plotly.min.js").exists()  # offline, shared
    saved = json.loads((final / "summary.json").read_text())
    assert set(saved["figures"]) == {"pareto.png", "pareto.html"}
    assert all(c and "\n" not in c for c in saved["figures"].values())
    assert "hover" in saved["figures"]["pareto.html"]

    df = pd.read_csv(final / "benchmark.csv", keep_default_na=False)
    fig = pareto_interactive(df)
    points = [t for t in fig.data if t.mode == "markers"]
    seen = {(c[0], c[1], c[2]) for t in points for c in t.customdata}
    assert seen == set(zip(df["method"], df["dtype"], df["shape"]))  # every cell once, hover names it
    for t in points:
        assert "%{customdata[0]}" in t.hovertemplate and "%{customdata[1]}" in t.hovertemplate
        assert "%{customdata[2]}" in t.hovertemplate
        assert {s for s in t.marker.symbol} <= {"circle", "square"}
    assert {t.name for t in points if t.showlegend} == {"exact", "power:5"}  # one legend entry per method
    fronts = [t for t in fig.data if t.mode == "lines"]
    assert len(fronts) == 3
    for shape, t in zip(dict.fromkeys(df["shape"]), fronts):  # the dashed line is each shape's Pareto front
        expect = pareto_front(df[df["shape"] == shape].astype({"ms": float, "rel_error": float}))
        assert np.allclose(t.x, expect["ms"].to_numpy())


def test_pareto_html_with_every_cell_skipped_still_writes(tmp_path) -> None:
    from analyses import spectral as analysis

    out = AnalysisOutput(tmp_path, "spectral", progress=False)
    final = out.commit(analysis.run(None, {**PARAMS, "cell_budget_s": 1e-9}, out))
    assert (final / "pareto.html").exists() and (final / "pareto.png").exists()
    assert (final / "pareto.html").read_text().count("4 skipped") >= 3  # each panel title counts its cells
