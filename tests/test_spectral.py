"""Spectral-norm estimators against known spectra, warm starts, and the benchmark analysis on CPU."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from toolkit import spectral  # noqa: E402
from toolkit.errors import UserError  # noqa: E402
from toolkit.outputs import AnalysisOutput  # noqa: E402

SHAPES = [(64, 64), (48, 96), (96, 48)]


def _matrix(shape: tuple[int, int], gap: float = 1.5, seed: int = 0, top: float = 3.0) -> torch.Tensor:
    """A float32 matrix with s1 = top, s1/s2 = gap and a decaying tail."""
    s = spectral.decaying_spectrum(min(shape), gap=gap, decay=0.5, top=top)
    return spectral.known_spectrum(s, shape, seed=seed).float()


def test_known_spectrum_has_the_chosen_singular_values() -> None:
    s = spectral.decaying_spectrum(32, gap=1.25, decay=0.5, top=2.0)
    w = spectral.known_spectrum(s, (32, 40), seed=3)
    got = torch.linalg.svdvals(w)
    assert torch.allclose(got, torch.tensor(s, dtype=torch.float64), rtol=1e-10)
    assert s[0] / s[1] == pytest.approx(1.25)
    assert spectral.reference_norm(w) == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("method", spectral.METHODS)
def test_estimators_within_documented_error(method: str, dtype: str) -> None:
    bound = spectral.DOCUMENTED_ERROR[(method, dtype)]
    for seed, shape in enumerate(SHAPES):
        w = _matrix(shape, seed=seed)
        got = spectral.spectral_norm(w, method, dtype=dtype)
        assert abs(got - 3.0) / 3.0 <= bound, (method, dtype, shape, got)


def test_ns5_h_estimate_and_power_lower_bound() -> None:
    w = _matrix((64, 64), seed=1)
    est = spectral.estimate(w, "power:3").sigma.item()
    assert est <= 3.0 * (1 + 1e-6)  # a Rayleigh quotient never exceeds s1
    h = spectral.estimate(w, "ns5-fast", ns_estimate="h").sigma.item()
    assert 0.5 * 3.0 < h < 1.5 * 3.0


def test_batched_equals_one_by_one_and_names_are_kept() -> None:
    params = {f"layer{i}.w": _matrix((32, 48), seed=i, top=1.0 + i) for i in range(3)}
    params["other"] = _matrix((48, 32), seed=9, top=5.0)
    params["bias"] = torch.ones(48)
    got = spectral.spectral_norms(params, method="power", steps=40)
    assert set(got) == {"layer0.w", "layer1.w", "layer2.w", "other"}
    for name, value in got.items():
        assert isinstance(value, float)
        assert value == pytest.approx(spectral.spectral_norm(params[name], "power", steps=40), rel=1e-5)
    assert got["layer2.w"] == pytest.approx(3.0, rel=1e-4)
    assert got["other"] == pytest.approx(5.0, rel=1e-4)
    exact = spectral.spectral_norms(params, method="exact")
    assert exact["layer1.w"] == pytest.approx(2.0, rel=1e-5)


def test_warm_start_needs_fewer_steps_than_cold() -> None:
    w = _matrix((96, 128), gap=1.05, seed=4)
    cold = spectral.estimate(w, "power", steps=500, tol=1e-6)
    assert cold.steps > 5
    # a training step later: the weights moved a little
    w2 = w + 1e-3 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
    warm = spectral.estimate(w2, "power", steps=500, tol=1e-6, v0=cold.vectors)
    recold = spectral.estimate(w2, "power", steps=500, tol=1e-6)
    assert warm.steps < recold.steps / 2, (warm.steps, recold.steps)
    assert warm.sigma.item() == pytest.approx(recold.sigma.item(), rel=1e-4)


def test_state_cache_warm_starts_spectral_norms() -> None:
    params = {"a": _matrix((64, 80), gap=1.05, seed=1), "b": _matrix((64, 80), gap=1.05, seed=2)}
    state: dict = {}
    first = spectral.spectral_norms(params, method="power", steps=3, state=state)
    assert set(state) == {"a", "b"} and state["a"].shape == (80,)
    errors = [abs(first["a"] - 3.0)]
    for _ in range(4):  # repeated calls continue the iteration from the cached vectors
        got = spectral.spectral_norms(params, method="power", steps=3, state=state)
        errors.append(abs(got["a"] - 3.0))
    assert errors[-1] < errors[0] / 2
    cold = spectral.spectral_norms(params, method="power", steps=3)
    assert abs(got["a"] - 3.0) < abs(cold["a"] - 3.0)
    # a cached vector of another shape is ignored
    state["a"] = torch.ones(7)
    assert spectral.spectral_norms(params, method="power", steps=3, state=state)["a"] == pytest.approx(cold["a"])


def test_method_spec_and_errors() -> None:
    assert spectral.parse_method("power:30") == ("power", 30)
    assert spectral.parse_method("ns3-accurate") == ("ns3-accurate", None)
    for bad in ("svd", "exact:3", "power:x", "power:0"):
        with pytest.raises(UserError):
            spectral.parse_method(bad)
    with pytest.raises(UserError):
        spectral.resolve_dtype("int4")
    assert spectral.resolve_dtype("bf16") is torch.bfloat16


def test_newton_schulz_polar_factors() -> None:
    w = _matrix((32, 64), gap=1.2, seed=5).unsqueeze(0)
    q3 = spectral.newton_schulz3(w, steps=30)[0]
    assert torch.allclose(q3 @ q3.T, torch.eye(32), atol=1e-3)
    s5 = torch.linalg.svdvals(spectral.newton_schulz5(w, steps=5)[0])
    assert 0.5 < s5.min() and s5.max() < 1.3  # Muon's polynomial: roughly orthogonal, not exactly


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", spectral.METHODS)
def test_estimators_on_cuda(method: str) -> None:
    for dtype in ("float32", "bfloat16"):
        bound = spectral.DOCUMENTED_ERROR[(method, dtype)]
        for seed, shape in enumerate([(256, 256), (256, 1024), (1024, 256)]):
            w = _matrix(shape, seed=seed).cuda()
            got = spectral.spectral_norm(w, method, dtype=dtype)
            assert abs(got - 3.0) / 3.0 <= bound, (method, dtype, shape, got)
    params = {f"w{i}": _matrix((128, 384), seed=i).cuda() for i in range(4)}
    state: dict = {}
    got = spectral.spectral_norms(params, method=method, dtype="bfloat16", state=state)
    assert all(abs(v - 3.0) / 3.0 <= spectral.DOCUMENTED_ERROR[(method, "bfloat16")] for v in got.values())


# ------------------------------------------------------------------------------------ the benchmark analysis


def test_benchmark_analysis_on_cpu(tmp_path) -> None:
    from analyses import spectral as analysis

    out = AnalysisOutput(tmp_path, "spectral")
    params = {"shapes": [[32, 32], [32, 96]], "methods": ["exact", "matrix_norm", "power:5", "power", "ns3-accurate"],
              "dtypes": ["float32", "bfloat16"], "device": "auto", "repeats": 2, "warmup": 1, "seed": 0}
    summary = analysis.run(None, params, out)
    final = out.commit(summary)
    table = (final / "benchmark.csv").read_text().splitlines()
    header = table[0].split(",")
    for col in ("method", "shape", "dtype", "device", "ms", "rel_error"):
        assert col in header
    assert len(table) - 1 == 5 * 2 * 2
    assert (final / "pareto.png").exists()
    saved = json.loads((final / "summary.json").read_text())
    assert saved["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "device" in saved["device_note"] and saved["torch_version"] == torch.__version__
    for budget in ("within_1pct", "within_5pct"):
        assert saved["recommended"]["overall"][budget]["method"]
        assert set(saved["recommended"]["per_shape"]) == {"32x32", "32x96"}
    exact_rows = [r for r in table[1:] if r.startswith("exact,")]
    assert exact_rows


def test_benchmark_preset_and_checkpoint(tmp_path) -> None:
    from analyses import spectral as analysis

    llama = analysis.preset_shapes("llama-60m")
    assert llama[(512, 512)] == 32 and llama[(1376, 512)] == 16 and llama[(512, 1376)] == 8
    assert (768, 2304) in analysis.preset_shapes("gpt2-124m")
    with pytest.raises(UserError, match="preset"):
        analysis.resolve_shapes("gpt-5")
    ckpt = tmp_path / "model.pt"
    torch.save({"a.weight": _matrix((24, 40), seed=1), "b.weight": _matrix((24, 40), seed=2), "bias": torch.zeros(3)},
               ckpt)
    out = AnalysisOutput(tmp_path, "spectral")
    summary = analysis.run(None, {"checkpoint": str(ckpt), "methods": ["exact", "power"], "dtypes": ["float32"],
                                  "device": "cpu", "repeats": 1, "warmup": 0}, out)
    final = out.commit(summary)
    csv = (final / "benchmark.csv").read_text()
    assert "24x40" in csv and summary["source"].startswith("checkpoint")
    with pytest.raises(UserError, match="checkpoint"):
        analysis.run(None, {"checkpoint": str(tmp_path / "missing.pt")}, AnalysisOutput(tmp_path, "spectral2"))


def test_missing_torch_names_the_extra(monkeypatch, tmp_path) -> None:
    import sys

    from analyses import spectral as analysis
    from toolkit.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(MissingExtraError, match=r"sweepkit\[torch\]"):
        analysis.run(None, {"shapes": [[8, 8]]}, AnalysisOutput(tmp_path, "spectral"))
    with pytest.raises(MissingExtraError, match=r"sweepkit\[torch\]"):
        spectral.spectral_norms({"w": None})


def test_experiment_spectral_bench_runs_through_the_pipeline(tmp_path) -> None:
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from toolkit import pipeline
    from toolkit.settings import register_schemas

    conf = Path(__file__).resolve().parents[1] / "conf"
    register_schemas(conf)
    overrides = ["experiment=spectral_bench", "analysis.spectral.shapes=[[16,16],[16,40]]",
                 "analysis.spectral.methods=[exact,power]", "analysis.spectral.dtypes=[float32]",
                 "analysis.spectral.device=cpu", "analysis.spectral.repeats=1", "analysis.spectral.warmup=0"]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    assert cfg.recipe._target_ == "toolkit.recipes.none.NoneRecipe" and list(cfg.analysis) == ["spectral"]
    status = pipeline.run(cfg, tmp_path)
    assert status["failed"] == {}
    summary = json.loads((tmp_path / "spectral" / "summary.json").read_text())
    assert summary["device"] == "cpu" and "cpu" in summary["device_note"]
    assert (tmp_path / "spectral" / "benchmark.csv").exists() and (tmp_path / "spectral" / "pareto.png").exists()


# ------------------------------------------------------------------------ CPU-sized shapes and the cell time budget


def test_cpu_path_runs_cpu_sized_shapes_and_says_which(tmp_path, caplog) -> None:
    """On the CPU a shape with a side above 512 runs divided by 32 (the benchmark's shapes become SMALL_SHAPES),
    logged and listed in summary.json; cpu_shapes=full and a GPU keep the shapes as given."""
    import logging

    from analyses import spectral as analysis

    assert [analysis.cpu_sized(s) for s in analysis.BENCH_SHAPES] == analysis.SMALL_SHAPES
    given = {(4096, 11008): 1, (16, 16): 1, (2048, 5461): 24, (64, 171): 3}
    planned, replaced = analysis.plan_shapes(given, "cpu", "scaled")
    assert planned == {(128, 344): 1, (16, 16): 1, (64, 171): 24}  # shapes that meet keep the larger count
    assert replaced == {(4096, 11008): (128, 344), (2048, 5461): (64, 171)}
    assert analysis.plan_shapes(given, "cpu", "full") == (given, {})
    assert analysis.plan_shapes(given, "cuda", "scaled") == (given, {})
    caplog.set_level(logging.INFO, logger="analyses.spectral")
    out = AnalysisOutput(tmp_path, "spectral")
    summary = analysis.run(None, {"shapes": [[4096, 11008], [16, 16]], "methods": ["power"], "dtypes": ["float32"],
                                  "device": "cpu", "repeats": 1, "warmup": 0}, out)
    final = out.commit(summary)
    rows = (final / "benchmark.csv").read_text().splitlines()
    assert {r.split(",")[3] for r in rows[1:]} == {"128x344", "16x16"}
    assert summary["shapes_replaced"] == {"4096x11008": "128x344"}
    assert "cpu: 4096x11008 replaced by 128x344" in caplog.text and "cpu_shapes=full" in caplog.text
    with pytest.raises(UserError, match="cpu_shapes"):
        analysis.run(None, {"shapes": [[8, 8]], "cpu_shapes": "tiny"}, AnalysisOutput(tmp_path, "bad1"))
    with pytest.raises(UserError, match="cell_budget_s=0"):
        analysis.run(None, {"shapes": [[8, 8]], "cell_budget_s": 0}, AnalysisOutput(tmp_path, "bad2"))


def test_experiment_spectral_bench_on_cpu_runs_cpu_sized_shapes(tmp_path) -> None:
    """The command of the report (experiment=spectral_bench analysis.spectral.device=cpu), cut to one method: every
    shape it runs is CPU-sized, the LLaMA-1B ones included, so it finishes in seconds."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from toolkit import pipeline
    from toolkit.settings import register_schemas

    conf = Path(__file__).resolve().parents[1] / "conf"
    register_schemas(conf)
    overrides = ["experiment=spectral_bench", "analysis.spectral.device=cpu", "analysis.spectral.methods=[power]",
                 "analysis.spectral.dtypes=[float32]", "analysis.spectral.repeats=1", "analysis.spectral.warmup=0"]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    status = pipeline.run(cfg, tmp_path)
    assert status["failed"] == {}
    summary = json.loads((tmp_path / "spectral" / "summary.json").read_text())
    assert summary["shapes_replaced"]["4096x11008"] == "128x344" and summary["shapes_replaced"]["2048x5461"] == "64x171"
    assert all(max(int(v) for v in shape.split("x")) <= 512 for shape in summary["settings"]["shapes"])


def test_cell_budget_skips_a_slow_cell_and_cuts_the_repeats_of_another(tmp_path, monkeypatch) -> None:
    """A cell whose first timed call is over cell_budget_s is skipped (recorded with its reason, no numbers; its
    larger shape then not run at all); a cell that fits once but not 20 times runs fewer repeats; a tiny budget skips
    every cell and the analysis still writes its table, figure and warnings."""
    import time as clock

    from analyses import spectral as analysis

    real = spectral.estimate

    def slowed(w, spec, **kwargs):
        clock.sleep({"exact": 0.3, "matrix_norm": 0.04}.get(spec, 0.0))
        return real(w, spec, **kwargs)

    monkeypatch.setattr(spectral, "estimate", slowed)
    params = {"shapes": [[16, 16], [16, 40]], "methods": ["exact", "matrix_norm", "power"], "dtypes": ["float32"],
              "device": "cpu", "repeats": 20, "warmup": 1, "cell_budget_s": 0.2}
    out = AnalysisOutput(tmp_path, "spectral")
    summary = analysis.run(None, params, out)
    final = out.commit(summary)
    import pandas as pd

    df = pd.read_csv(final / "benchmark.csv", keep_default_na=False).set_index(["method", "shape"])
    assert "first timed call took" in df.loc[("exact", "16x16"), "skipped"]
    assert "not run: the smaller 16x16 was skipped" in df.loc[("exact", "16x40"), "skipped"]
    assert df.loc[("exact", "16x40"), "repeats_done"] == 0 and df.loc[("exact", "16x16"), "ms"] == ""
    assert df.loc[("matrix_norm", "16x16"), "skipped"] == "" and 1 <= df.loc[("matrix_norm", "16x16"), "repeats_done"] < 20
    assert df.loc[("power", "16x16"), "repeats_done"] == 20
    assert summary["n_skipped"] == 2
    assert any("2 of 6 cell(s) skipped over cell_budget_s=0.2 s" in w for w in out.warnings)
    assert summary["recommended"]["overall"]["within_1pct"]["method"] != "exact"

    monkeypatch.setattr(spectral, "estimate", real)
    tiny = AnalysisOutput(tmp_path, "spectral_tiny")
    summary = analysis.run(None, {**params, "cell_budget_s": 1e-9}, tiny)
    final = tiny.commit(summary)
    assert summary["n_skipped"] == summary["n_rows"] == 6
    assert summary["recommended"]["overall"] == {"within_1pct": None, "within_5pct": None}
    assert (final / "pareto.png").exists()
