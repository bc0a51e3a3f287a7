"""The multirun gather collects every job's summaries, reports failed jobs and masks secret overrides."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pandas as pd
import pytest
from omegaconf import OmegaConf

from toolkit.multirun import GatherSweep, gather_sweep, mask_overrides, sweep_job_count, write_job_record
from toolkit.outputs import write_json


def _job(root, n, overrides, summary=None, error=None, table=None):
    job = root / str(n)
    job.mkdir(parents=True)
    write_job_record(job, overrides, error)
    if summary is not None:
        write_json(job / "minima" / "summary.json", summary)
    if table is not None:
        table.to_csv(job / "minima" / "minima.csv", index=False)
    return job


def test_gather_collects_scalars_tables_and_failures(tmp_path):
    _job(tmp_path, 0, ["analysis.minima.horizons=[2^26]"], {"n_groups": 4, "alpha_ci": [0.1, 0.3], "settings": {"x": 1}},
         table=pd.DataFrame({"horizon": [2**26], "lr": [0.01]}))
    _job(tmp_path, 1, ["analysis.minima.horizons=[2^40]"], error="horizon 2^40 is beyond every run")
    (tmp_path / "2").mkdir()  # a job killed before it wrote anything
    summary = gather_sweep(tmp_path)
    assert list(summary["job"]) == [0, 1, 2]
    assert list(summary["status"]) == ["ok", "failed", "unknown"]
    assert summary.loc[0, "minima.n_groups"] == 4
    assert summary.loc[0, "minima.alpha_ci_low"] == 0.1 and summary.loc[0, "minima.alpha_ci_high"] == 0.3
    assert "beyond every run" in summary.loc[1, "error"]
    on_disk = pd.read_csv(tmp_path / "sweep_summary.csv")
    assert len(on_disk) == 3
    gathered = pd.read_csv(tmp_path / "sweep_minima_minima.csv")
    assert list(gathered["job"]) == [0] and gathered.loc[0, "lr"] == 0.01
    report = (tmp_path / "report.html").read_text()
    assert "2 failed" in report and "beyond every run" in report and 'href="0/report.html"' in report


def test_secret_overrides_are_masked(tmp_path):
    assert mask_overrides(["tracker.api_key=abc123secret", "analysis.minima.fit_k=5"]) == ["tracker.api_key=***", "analysis.minima.fit_k=5"]
    write_job_record(tmp_path, ["+tracker.token=abc123secret"], None)
    assert "abc123secret" not in (tmp_path / "job.json").read_text()
    assert json.loads((tmp_path / "job.json").read_text())["status"] == "ok"


def _minima_job(root, n, overrides, lrs, reason=""):
    frame = pd.DataFrame({"horizon": [2**26, 2**26], "bs": [32, 64], "lr": lrs, "lr_ci_low": [v * 0.9 for v in lrs],
                          "lr_ci_high": [v * 1.1 for v in lrs], "method": ["fit", "fit"], "on_edge": [False, bool(reason)],
                          "reason": ["", reason]})
    return _job(root, n, overrides, {"n_groups": 2}, table=frame)


def test_root_report_tabulates_key_numbers_per_job_with_overrides_as_columns(tmp_path):
    _minima_job(tmp_path, 0, ["analysis.minima.bootstrap.n=20", "analysis.minima.fit_k=5"], [0.002, 0.003])
    _minima_job(tmp_path, 1, ["analysis.minima.bootstrap.n=40", "analysis.minima.fit_k=5"], [0.0021, 0.0032],
                reason="on the lr grid's edge")
    _job(tmp_path, 2, ["analysis.minima.bootstrap.n=80", "tracker.api_key=abc123secret"], error="boom")
    gather_sweep(tmp_path)
    html = (tmp_path / "report.html").read_text()
    table = html[html.index('<table class="keys" data-analysis="minima">'):]
    table = table[:table.index("</table>")]
    header = table[:table.index("</thead>")]
    assert [h for h in re.findall(r"<th(?: [^>]*)?>(.*?)</th>", header)] == [
        "job", "analysis.minima.bootstrap.n", "analysis.minima.fit_k", "tracker.api_key", "2^26 bs 32", "2^26 bs 64"]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table[table.index("<tbody>"):], flags=re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows]
    assert cells[0][1:] == ["20", "5", "", "0.002 [0.0018, 0.0022]", "0.003 [0.0027, 0.0033]"]
    assert cells[1][1:3] == ["40", "5"] and cells[1][4] == "0.0021 [0.00189, 0.00231]"
    assert cells[1][5].startswith("⚠ 0.0032") and 'class="problem" title="bs 64: on the lr grid&#39;s edge' in rows[1]
    assert cells[2][1] == "80" and cells[2][3] == "***" and cells[2][4:] == ["", ""]  # the failed job: no numbers
    assert "abc123secret" not in html


@pytest.mark.parametrize("overrides, params, total", [
    (["analysis.minima.bootstrap.n=20,40"], None, 2),
    (["a=1,2,3", "b=x,y", "c=5"], None, 6),
    (["a=range(0,4)"], {"b": "1,2"}, 8),
    (["a=1"], None, 1),
])
def test_sweep_job_count_follows_hydras_basic_sweeper(overrides, params, total):
    assert sweep_job_count(overrides, params) == total


def test_job_progress_bar_has_the_sweep_total(monkeypatch):
    made = []

    def fake_bar(total, desc, enabled=True, unit="run"):
        made.append({"total": total, "desc": desc, "enabled": enabled, "unit": unit})
        return SimpleNamespace(n=0, update=lambda k: made[-1].update(done=made[-1].get("done", 0) + k), close=lambda: None)

    monkeypatch.setattr("toolkit.progress.progress_bar", fake_bar)
    cfg = OmegaConf.create({"progress": True, "hydra": {"overrides": {"task": ["x=1,2,3", "y=a,b"]}, "sweeper": {"params": None}}})
    callback = GatherSweep()
    callback.on_multirun_start(cfg)
    for _ in range(6):
        callback.on_job_end(cfg, None)
    assert made == [{"total": 6, "desc": "jobs", "enabled": True, "unit": "job", "done": 6}]
    quiet = OmegaConf.create({"progress": False, "hydra": {"overrides": {"task": ["x=1,2"]}, "sweeper": {}}})
    GatherSweep().on_multirun_start(quiet)
    assert made[-1]["total"] == 2 and made[-1]["enabled"] is False


def test_real_progress_bar_is_silent_off_a_terminal(capsys):
    from toolkit.progress import progress_bar

    bar = progress_bar(4, "jobs", enabled=True, unit="job")
    assert bar.total == 4 and bar.disable  # pytest's stderr is not a terminal
