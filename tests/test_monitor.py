"""TrainingMonitor: documented keys, hooks removed on close, console line, rank-0 logic, MFU lookup."""
from __future__ import annotations

import re
import time
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from toolkit import monitor as monitor_mod  # noqa: E402
from toolkit.monitor import TrainingMonitor, peak_flops_for  # noqa: E402

EVERY_STEP = {"Time/training_time_ms", "Time/step_avg_ms", "Time/total_time_s", "Loss/train_loss",
              "Optimization/grad_norm", "Optimization/lr", "Optimization/momentum", "Model/param_norm",
              "Hardware/tokens_per_s"}
SPECTRAL = {"Model/spectral_norm_max", "Model/spectral_norm_mean", "Model/spectral_norm_std", "Time/spectral_ms"}


class RecordingWriter:
    """A RunWriter keeping what it is given."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []
        self.finished: str | None = None

    def log_config(self, config: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.records.append((step, dict(metrics)))

    def log_artifact(self, path: str) -> None:
        pass

    def finish(self, status: str = "finished") -> None:
        self.finished = status


class Block(torch.nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(d, 2 * d)
        self.proj = torch.nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(torch.nn.functional.gelu(self.fc(x)))


class TinyLM(torch.nn.Module):
    def __init__(self, vocab: int = 16, d: int = 8, layers: int = 2) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.blocks = torch.nn.ModuleList(Block(d) for _ in range(layers))
        self.head = torch.nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _train(mon: TrainingMonitor, model: TinyLM, opt: Any, steps: int, val_every: int = 0) -> None:
    gen = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        idx = torch.randint(0, 16, (4, 8), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
        loss.backward()
        opt.step()
        val = None
        if val_every and step % val_every == 0:
            with mon.paused():
                model.eval()
                with torch.no_grad():
                    val = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
                model.train()
        mon.step(step, loss, val_loss=val)
        opt.zero_grad(set_to_none=True)


def _setup(**kwargs: Any) -> tuple[TrainingMonitor, TinyLM, Any, RecordingWriter, list[str]]:
    torch.manual_seed(0)
    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    writer = kwargs.pop("writer", None) or RecordingWriter()
    printed: list[str] = []
    options = dict(spectral_every=2, activations=True, total_steps=4, tokens_per_step=32, print_fn=printed.append)
    options.update(kwargs)
    return TrainingMonitor(writer, model, opt, **options), model, opt, writer, printed


def test_logs_the_documented_keys() -> None:
    mon, model, opt, writer, printed = _setup(per_matrix=True, spectral_method="exact")
    _train(mon, model, opt, 4, val_every=4)
    mon.close()
    steps = [s for s, _ in writer.records]
    assert steps == [1, 2, 3, 4]
    first, second, _, fourth = (m for _, m in writer.records)
    assert EVERY_STEP - {"Hardware/tokens_per_s"} <= set(first)
    assert not SPECTRAL & set(first)
    assert EVERY_STEP | SPECTRAL <= set(second)
    assert "Loss/val_loss" in fourth and "Loss/val_loss" not in second
    acts = {f"Activations/blocks.{i}_{s}" for i in (0, 1) for s in ("mean", "std", "max", "min", "l2_norm")}
    assert acts <= set(second) and acts <= set(fourth) and not acts & set(first)
    assert "Time/monitor_ms" in second
    # no CUDA, no FLOPs given: no memory or MFU keys
    assert not any(k.startswith("Hardware/") and k != "Hardware/tokens_per_s" for k in second)
    # per-matrix spectral norms of the 2-D weights (embedding table left out), equal to the exact values
    per = {k.split("/", 2)[2]: v for k, v in fourth.items() if k.startswith("Model/spectral_norm/")}
    expected = {n for n, p in model.named_parameters() if p.ndim == 2 and not n.startswith("emb")}
    assert set(per) == expected
    for name, value in per.items():
        exact = torch.linalg.svdvals(dict(model.named_parameters())[name].detach().double())[0].item()
        assert value == pytest.approx(exact, rel=1e-5)
    assert fourth["Model/spectral_norm_max"] == pytest.approx(max(per.values()))
    assert second["Optimization/lr"] == pytest.approx(1e-3) and second["Optimization/momentum"] == pytest.approx(0.9)
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert fourth["Model/param_norm"] == pytest.approx(params.norm().item(), rel=1e-5)
    assert len(printed) == 4 and "val_loss:" in printed[-1] and "train_loss:" in printed[0]


def test_hooks_are_gone_after_close() -> None:
    mon, model, opt, writer, _ = _setup()
    hooked = [m for m in model.modules() if m._forward_hooks]
    assert len(hooked) == 2 and len(mon.hooks) == 2
    _train(mon, model, opt, 2)
    mon.close()
    assert not any(m._forward_hooks for m in model.modules())
    assert mon.hooks == []
    model(torch.zeros(1, 3, dtype=torch.long))  # no hook runs any more
    assert mon._act_stats == {}
    mon.close()  # idempotent
    with TrainingMonitor(RecordingWriter(), model, activations=True, activation_modules=["head"], console=False) as m2:
        assert model.head._forward_hooks
    assert not model.head._forward_hooks and m2.hooks == []


def test_console_line_has_modded_nanogpt_form() -> None:
    mon, model, opt, writer, printed = _setup(activations=False, total_steps=1750)
    metrics = {"Loss/val_loss": 3.28472, "Loss/train_loss": 3.5, "Time/training_time_ms": 180420.2,
               "Time/step_avg_ms": 180.4202}
    assert mon.console_line(1000, metrics) == "step:1000/1750 val_loss:3.2847 train_time:180420ms step_avg:180.42ms"
    _train(mon, model, opt, 2, val_every=2)
    assert re.fullmatch(r"step:1/1750 train_loss:\d+\.\d{4} train_time:\d+ms step_avg:\d+\.\d{2}ms", printed[0])
    assert re.fullmatch(r"step:2/1750 val_loss:\d+\.\d{4} train_time:\d+ms step_avg:\d+\.\d{2}ms", printed[1])
    mon_quiet, model, opt, _, printed = _setup(console=False)
    _train(mon_quiet, model, opt, 2)
    assert printed == []


def test_paused_time_is_not_training_time() -> None:
    mon, model, opt, writer, _ = _setup(activations=False, spectral_every=0)
    with mon.paused():
        time.sleep(0.05)
    _train(mon, model, opt, 1)
    m = writer.records[0][1]
    assert m["Time/total_time_s"] * 1e3 - m["Time/training_time_ms"] >= 45
    assert not SPECTRAL & set(m)


class FakeDist:
    """torch.distributed stand-in: initialised, given rank, world size 2; all_reduce adds the other rank's value."""

    def __init__(self, rank: int, other: float) -> None:
        self.rank, self.other, self.calls = rank, other, 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        d = torch.distributed
        monkeypatch.setattr(d, "is_available", lambda: True)
        monkeypatch.setattr(d, "is_initialized", lambda: True)
        monkeypatch.setattr(d, "get_rank", lambda group=None: self.rank)
        monkeypatch.setattr(d, "get_world_size", lambda group=None: 2)
        monkeypatch.setattr(d, "all_reduce", self.all_reduce)

    def all_reduce(self, tensor: torch.Tensor, op: Any = None, group: Any = None, async_op: bool = False) -> None:
        self.calls += 1
        tensor.add_(self.other)


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_zero_logs_after_averaging_the_loss(monkeypatch: pytest.MonkeyPatch, rank: int) -> None:
    fake = FakeDist(rank, other=3.0)
    fake.install(monkeypatch)
    model = TinyLM()
    writer, printed = RecordingWriter(), []
    mon = TrainingMonitor(writer, model, activations=True, spectral_every=1, print_fn=printed.append,
                          tokens_per_step=100, flops_per_token=10.0, peak_flops=1e4)
    assert mon.rank == rank and mon.world_size == 2
    out = mon.step(1, torch.tensor(1.0), val_loss=2.0)
    assert fake.calls == 1  # every rank joins the all-reduce
    if rank == 1:
        assert out == {} and writer.records == [] and printed == [] and mon.hooks == []
    else:
        assert out["Loss/train_loss"] == pytest.approx(2.0) and out["Loss/val_loss"] == pytest.approx(2.5)
        assert writer.records[0][0] == 1 and printed
        tps = out["Hardware/tokens_per_s"]
        assert out["Hardware/mfu"] == pytest.approx(10.0 * tps / (1e4 * 2))
    mon.close()


def test_peak_flops_lookup_and_unknown_device_warns_once() -> None:
    assert peak_flops_for("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_for("NVIDIA H200") == 989e12
    assert peak_flops_for("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_for("NVIDIA B200") == 2250e12
    assert peak_flops_for("Tesla T4") is None and peak_flops_for(None) is None
    with pytest.warns(RuntimeWarning, match="mfu"):
        mon, model, opt, writer, _ = _setup(flops_per_token=100.0, activations=False)
    _train(mon, model, opt, 2)
    assert all("Hardware/mfu" not in m for _, m in writer.records)


def test_logs_through_the_local_logger(tmp_path) -> None:
    local = pytest.importorskip("adapters.local")
    tracker = local.LocalTracker(str(tmp_path / "runs"))
    run = tracker.start_run("monitored", {"lr": 1e-3})
    mon, model, opt, _, _ = _setup(writer=run, activations=False)
    _train(mon, model, opt, 4)
    mon.close()
    run.finish("finished")
    from toolkit.runset import Selection

    runs = tracker.list_runs(Selection.from_config(None))
    history = tracker.read_history(runs, None)
    assert EVERY_STEP | SPECTRAL <= set(history.columns)
    assert sorted(history["step"].tolist()) == [1, 2, 3, 4]


def test_fan_out_logger_in_memory() -> None:
    logging_mod = pytest.importorskip("toolkit.logging")
    writers = [logging_mod.InMemoryWriter(), logging_mod.InMemoryWriter()]
    mon, model, opt, _, _ = _setup(writer=logging_mod.Logger(writers), activations=False)
    _train(mon, model, opt, 2)
    mon.close()
    for writer in writers:
        history = writer.history()
        assert EVERY_STEP | SPECTRAL <= set(history.columns)
        assert history["step"].tolist() == [1, 2]


def test_monitor_module_documents_every_logged_key() -> None:
    doc = monitor_mod.__doc__ or ""
    for key in EVERY_STEP | SPECTRAL | {"Loss/val_loss", "Hardware/peak_memory_mb", "Hardware/reserved_memory_mb",
                                        "Hardware/mfu", "Time/monitor_ms"}:
        group, name = key.split("/")
        assert f"``{key}``" in doc or name in doc, key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_monitor_on_cuda_logs_memory_and_mfu() -> None:
    torch.manual_seed(0)
    model = TinyLM().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    writer = RecordingWriter()
    mon = TrainingMonitor(writer, model, opt, spectral_every=1, activations=True, tokens_per_step=32,
                          flops_per_token=100.0, peak_flops=None if peak_flops_for(torch.cuda.get_device_name()) else 1e12,
                          console=False)
    for step in range(1, 3):
        idx = torch.randint(0, 16, (4, 8), device="cuda")
        loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
        loss.backward()
        opt.step()
        mon.step(step, loss)
        opt.zero_grad()
    mon.close()
    last = writer.records[-1][1]
    assert {"Hardware/peak_memory_mb", "Hardware/reserved_memory_mb", "Hardware/mfu"} <= set(last)
    assert SPECTRAL <= set(last)
