"""report.html / report.md: provenance first, key numbers per analysis (problem rows highlighted with their reason),
figures with captions, links; renderers never crash on missing keys or columns; secrets masked."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from analyses.minima import Minima
from analyses.minima_report import render_minima
from analyses.regressions.report import render_regressions
from analyses.scaling_laws.report import render_scaling_laws
from toolkit import provenance
from toolkit.outputs import write_json
from toolkit.report import analysis_view, flat_scalars, fmt, fmt_ci, render_generic, renderer_of, write_report


def _analysis(run_dir, name, summary, tables=None):
    folder = run_dir / name
    folder.mkdir(parents=True)
    write_json(folder / "summary.json", summary)
    for stem, frame in (tables or {}).items():
        frame.to_csv(folder / f"{stem}.csv", index=False)
    return folder


def _minima_frame(**extra):
    frame = pd.DataFrame({"horizon": [2**26, 2**26, 2**28, 2**28], "bs": [32, 64, 32, 64],
                          "lr": [0.002, 0.003, 0.0015, 0.0025], "lr_ci_low": [0.0019, 0.0028, 0.0014, None],
                          "lr_ci_high": [0.0021, 0.0032, 0.0016, None], "method": ["fit", "fit", "fit", "empirical_nonconvex"],
                          "on_edge": [False, True, False, False], "n_points": [8, 8, 8, 8]})
    for k, v in extra.items():
        frame[k] = v
    return frame


def _rows_html(html: str) -> list[str]:
    return re.findall(r"<tr[^>]*>.*?</tr>", html, flags=re.S)


def test_minima_problem_rows_are_highlighted_with_their_reason(tmp_path):
    folder = _analysis(tmp_path, "minima", {"n_groups": 4, "settings": {"bootstrap": {"level": 0.9}}},
                       {"minima": _minima_frame(reason=["", "", "", "the parabola opens downward"])})
    tables = render_minima(json.loads((folder / "summary.json").read_text()), folder)
    pivot, detail = tables
    assert pivot.columns == ["horizon", "bs 32", "bs 64"] and "90% CI" in pivot.note
    first, second = pivot.rows
    assert first.cells[0] == "2^26" and first.cells[1] == "0.002 [0.0019, 0.0021]"
    assert first.problem and "bs 64" in first.reason and "edge" in first.reason
    assert second.problem and "the parabola opens downward" in second.reason
    assert "(empirical_nonconvex)" in second.cells[2]
    flagged = [r for r in detail.rows if r.problem]
    assert len(flagged) == 2 and not detail.rows[0].problem and not detail.rows[2].problem
    write_report(tmp_path, status={})
    html = (tmp_path / "report.html").read_text()
    rows = _rows_html(html)
    problem_rows = [r for r in rows if 'class="problem"' in r]
    assert any("the parabola opens downward" in r for r in problem_rows)
    assert len(problem_rows) == 2 + 2  # two pivot rows, two detail rows
    assert not any('class="problem"' in r for r in rows if "<td>2^28</td><td>32</td>" in r)  # a good row stays plain
    md = (tmp_path / "report.md").read_text()
    assert "**bs 64: the parabola opens downward; method empirical_nonconvex** |" in md
    assert "| 2^26 | 0.002 [0.0019, 0.0021] | ⚠ 0.003 [0.0028, 0.0032] | **bs 64: the minimum is on the edge" in md


def test_missing_columns_and_keys_do_not_crash(tmp_path):
    # a minima.csv with only some of its columns, a regressions summary without SEs, a scaling_laws approach
    # without CIs, correlations without p-values, a spectral summary without a benchmark
    _analysis(tmp_path, "minima", {}, {"minima": pd.DataFrame({"horizon": [2**26], "lr": [0.01]})})
    _analysis(tmp_path, "regressions", {"lr_vs_bs_horizon": {"alpha": 0.5, "alpha_ci": [0.4, None]}})
    _analysis(tmp_path, "scaling_laws", {"approach2": {"a": 0.5}, "approach3": {"identifiable": False, "reason": "flat loss"}})
    _analysis(tmp_path, "correlations", {"matrix": {"spearman": 0.9}})
    _analysis(tmp_path, "spectral", {"recommended": {"per_shape": {"8x8": {"within_1pct": {"method": "exact"}}}}})
    _analysis(tmp_path, "odd", {"figures": "not a mapping", "warnings": "not a list", "nested": {"x": [1, 2, 3]}})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    write_report(tmp_path, status={"provenance": {"command": None}})
    html = (tmp_path / "report.html").read_text()
    for name in ("minima", "regressions", "scaling_laws", "correlations", "spectral", "odd", "broken"):
        assert f'id="answers-{name}"' in html
    assert "flat loss" in html and "summary.json could not be read" in html


def test_scaling_laws_not_identifiable_is_a_problem_row():
    tables = render_scaling_laws({"approach1": {"a": 0.5, "b": 0.5}, "approach3": {"identifiable": False}}, None)
    rows = {r.cells[0]: r for r in tables[0].rows}
    assert not rows["approach 1"].problem and rows["approach 3"].problem
    assert rows["approach 3"].reason == "not identifiable"


def test_regressions_from_summary_when_there_is_no_csv(tmp_path):
    summary = {"lr_vs_bs_horizon": {"alpha": 0.49, "alpha_se": 0.01, "alpha_ci": [0.47, 0.51], "beta": -0.25,
                                    "beta_ci": [-0.26, -0.24], "r2": 0.99, "n": 24}}
    table = render_regressions(summary, tmp_path)[0]
    alpha, beta = table.rows
    assert alpha.cells[:5] == ["lr_vs_bs_horizon", "alpha", "0.49", "0.01", "[0.47, 0.51]"] and not alpha.problem
    assert beta.problem and beta.reason == "no standard error"
    assert table.key_numbers()[0] == ("lr_vs_bs_horizon alpha", "0.49 [0.47, 0.51]", "")


def test_unknown_analysis_gets_the_generic_table(tmp_path):
    summary = {"n": 3, "slope": 0.123456789, "slope_ci": [0.1, 0.2], "sub": {"ok": True, "label": "x"},
               "settings": {"hidden": 1}, "warnings": ["w"], "big": list(range(10))}
    folder = _analysis(tmp_path, "loss_at_end", summary)
    assert renderer_of(folder) is render_generic
    view = analysis_view(folder)
    (table,) = view.tables
    assert [r.cells for r in table.rows] == [["n", "3"], ["slope", "0.1235"], ["slope_ci", "[0.1, 0.2]"],
                                             ["sub.ok", "yes"], ["sub.label", "x"]]
    assert dict(flat_scalars(summary))["slope_ci"] == "[0.1, 0.2]"
    assert render_generic({}, folder) == []


def test_a_renderer_that_fails_falls_back_to_the_generic_table(tmp_path, monkeypatch):
    def broken(self, summary, adir):
        raise KeyError("new_column")

    monkeypatch.setattr(Minima, "report_tables", broken)
    folder = _analysis(tmp_path, "minima", {"n_groups": 4})
    view = analysis_view(folder)
    assert view.tables[0].rows[0].cells == ["n_groups", "4"]
    assert "could not be rendered" in view.notes[0]


def test_figures_have_captions_inline_png_and_embedded_html(tmp_path):
    folder = _analysis(tmp_path, "minima", {"figures": {"parabolas.png": "loss against lr with the fitted parabola",
                                                        "surface.html": "3-D loss surface"}})
    (folder / "parabolas.png").write_bytes(b"\x89PNG fake")
    (folder / "other.png").write_bytes(b"\x89PNG fake")
    (folder / "surface.html").write_text("<html></html>")
    write_report(tmp_path, status={})
    html = (tmp_path / "report.html").read_text()
    assert "loss against lr with the fitted parabola" in html and "data:image/png;base64," in html
    assert '<iframe class="plot" src="minima/surface.html" title="3-D loss surface"' in html
    assert "other.png" in html  # no caption: the file name
    assert html.index("parabolas.png") < html.index("other.png")  # the analysis' order first
    assert 'href="minima/summary.json"' in html


def test_header_shows_provenance_failures_warnings_and_publish_line(tmp_path):
    status = {"provenance": {"command": "python run.py tracker.path=x.csv", "tracker": "local", "source": {"path": "x.csv"},
                             "n_runs_read": 12, "n_runs_kept": 10, "time": "2026-01-01T00:00:00+00:00", "version": "0.1.0",
                             "git_commit": "abc123"},
              "failed": {"regressions": "too few minima"}, "warnings": ["2 run(s) diverged"],
              "publish": {"line": "published to mlflow run 42"}}
    write_report(tmp_path, title="My sweep", status=status)
    html = (tmp_path / "report.html").read_text()
    header = html[:html.index("<main>")]
    for text in ("python run.py tracker.path=x.csv", "local: path x.csv", "12 read, 10 kept", "0.1.0, git abc123",
                 "too few minima", "2 run(s) diverged", "Results published to mlflow run 42."):
        assert text in header, text
    md = (tmp_path / "report.md").read_text()
    assert "- runs: `12 read, 10 kept`" in md and "too few minima" in md and "Results published to mlflow run 42." in md


def test_secrets_in_the_command_line_are_masked(tmp_path, monkeypatch):
    command = provenance.command_line(["tracker.api_key=sk-supersecret123", "tracker.uri=http://bob:hunter2pass@host:5000",
                                       "analysis.minima.fit_k=5"])
    assert "sk-supersecret123" not in command and "hunter2pass" not in command
    assert "tracker.api_key=***" in command and "analysis.minima.fit_k=5" in command
    src = provenance.tracker_source({"_target_": "adapters.mlflow.MlflowTracker", "uri": "http://bob:hunter2pass@host:5000",
                                     "experiment": "e1", "token": "abcdefgh"})
    assert src["source"] == {"uri": "http://bob:***@host:5000", "experiment": "e1"}
    # a command recorded unmasked (an older status.json) is masked when shown
    monkeypatch.setenv("WANDB_API_KEY", "wandbsecretvalue42")
    write_report(tmp_path, status={"provenance": {"command": f"python run.py x=wandbsecretvalue42 u={'http://a:pw12345678@h'}"}})
    for name in ("report.html", "report.md"):
        text = (tmp_path / name).read_text()
        assert "wandbsecretvalue42" not in text and "pw12345678" not in text


def test_html_is_escaped(tmp_path):
    _analysis(tmp_path, "x", {"label": "<script>alert(1)</script>"})
    write_report(tmp_path, title="<b>t</b>", status={"warnings": ["<img src=x>"]})
    html = (tmp_path / "report.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "<img src=x>" not in html


def test_provenance_git_commit_is_skipped_outside_a_repository(tmp_path):
    assert provenance.git_commit(tmp_path) is None
    record = provenance.collect({"_target_": "adapters.local.LocalTracker", "path": "s.csv"}, 5, 4, command="c", cwd=tmp_path)
    assert record["tracker"] == "local" and record["source"] == {"path": "s.csv"} and record["git_commit"] is None
    assert record["n_runs_read"] == 5 and record["n_runs_kept"] == 4 and record["time"]


@pytest.mark.parametrize("value, text", [(None, ""), (3, "3"), (0.000123456, "0.0001235"), (True, "yes"),
                                         (float("nan"), ""), ("fit", "fit")])
def test_fmt(value, text):
    assert fmt(value) == text


def test_fmt_ci():
    assert fmt_ci(0.1, 0.25) == "[0.1, 0.25]" and fmt_ci(None, 1) == ""


def test_pipeline_records_provenance_in_status(tmp_path):
    from hydra import compose, initialize_config_dir

    from toolkit import pipeline
    from toolkit.settings import CONF_DIR, register_schemas

    register_schemas(CONF_DIR)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["analysis.minima.bootstrap.n=5", "analysis.minima.plots=false",
                                           f"cache.dir={tmp_path / 'cache'}"])
    status = pipeline.run(cfg, tmp_path / "out")
    prov = json.loads((tmp_path / "out" / "status.json").read_text())["provenance"]
    assert status["provenance"] == prov
    assert prov["tracker"] == "local" and prov["recipe"] == "toolkit.recipes.lr_bs_sweep.LrBsSweep"
    assert prov["n_runs_read"] == 96 and prov["n_runs_kept"] == 96  # the bundled example: 96 runs
    assert prov["version"] and prov["time"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "96 read, 96 kept" in html[:html.index("<main>")]
