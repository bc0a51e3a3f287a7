"""Benchmark: what toolkit.monitor.TrainingMonitor adds to a training step (tiny transformer, CPU by default).

The same model and batches are trained from the same initial weights in one process, in interleaved rounds:
a bare loop, then the monitor with the basic metrics only (time, loss, grad/param norms, lr), then with spectral
norms every --spectral-every steps (and every step), then with activation statistics. Reported: mean ms per step
(amortised: a spectral step every 10 counts one tenth) and the median step, each as a ratio to the bare loop of the same
round (median over rounds). The writer keeps metrics in memory (the logging back end's own cost is
not what is measured here).

    python benchmarks/bench_monitor_overhead.py
    python benchmarks/bench_monitor_overhead.py --steps 200 --d-model 256 --layers 4 --method power
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from toolkit.monitor import TrainingMonitor  # noqa: E402


class NullWriter:
    """Keeps the last metrics only."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def log_config(self, config: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.last = metrics

    def log_artifact(self, path: str) -> None:
        pass

    def finish(self, status: str = "finished") -> None:
        pass


class Block(torch.nn.Module):
    """Pre-norm attention + MLP block."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.proj = torch.nn.Linear(d, d, bias=False)
        self.fc = torch.nn.Linear(d, 4 * d, bias=False)
        self.out = torch.nn.Linear(4 * d, d, bias=False)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        a = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                             is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.out(torch.nn.functional.gelu(self.fc(self.ln2(x))))


class TinyGPT(torch.nn.Module):
    """A few-layer GPT."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.blocks = torch.nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def run_loop(model: torch.nn.Module, batches: list[torch.Tensor], monitor_kwargs: dict | None, device: str) -> list[float]:
    """Train over the batches; per-step wall times in ms (monitor included when given)."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    mon = None
    if monitor_kwargs is not None:
        mon = TrainingMonitor(NullWriter(), model, opt, console=False, tokens_per_step=batches[0].numel(), **monitor_kwargs)
    times = []
    for step, idx in enumerate(batches, start=1):
        t = time.perf_counter()
        logits = model(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
        loss.backward()
        opt.step()
        if mon is not None:
            mon.step(step, loss)
        else:
            loss.item()  # a bare loop reads its loss too
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    if mon is not None:
        mon.close()
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="steps per loop and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--method", default="power", help="spectral estimator (toolkit.spectral)")
    ap.add_argument("--spectral-every", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    device = args.device
    base = TinyGPT(args.vocab, args.d_model, args.layers, args.heads).to(device)
    init = {k: v.clone() for k, v in base.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=gen).to(device) for _ in range(args.steps)]
    configs: dict[str, dict | None] = {
        "bare loop": None,
        "monitor, basic metrics": {"spectral_every": 0},
        f"+ spectral every {args.spectral_every} ({args.method})": {"spectral_every": args.spectral_every,
                                                                    "spectral_method": args.method},
        f"+ spectral every step ({args.method})": {"spectral_every": 1, "spectral_method": args.method},
        f"+ spectral every {args.spectral_every} + activations": {"spectral_every": args.spectral_every,
                                                                 "spectral_method": args.method, "activations": True,
                                                                 "activations_every": args.spectral_every},
    }
    n_matrices = sum(1 for n, p in base.named_parameters() if p.ndim == 2 and not n.startswith("emb"))
    print(f"TinyGPT d={args.d_model} layers={args.layers} ({sum(p.numel() for p in base.parameters()) / 1e6:.2f}M params, "
          f"{n_matrices} monitored matrices), batch {args.batch}x{args.seq}, {args.steps} steps x {args.rounds} rounds "
          f"on {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    per_round: dict[str, list[float]] = {name: [] for name in configs}
    ratios: dict[str, list[float]] = {name: [] for name in configs}
    med_ratios: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        medians = {}
        for name, kwargs in configs.items():
            base.load_state_dict(init)
            times = run_loop(base, batches, kwargs, device)
            medians[name] = (statistics.fmean(times[3:]), statistics.median(times[3:]))  # first steps warm up
            per_round[name].append(medians[name][0])
        for name in configs:
            ratios[name].append(medians[name][0] / medians["bare loop"][0])
            med_ratios[name].append(medians[name][1] / medians["bare loop"][1])
    print(f"\n{'configuration':<44} {'mean ms/step':>12} {'ratio (mean)':>13} {'ratio (median step)':>20}")
    for name in configs:
        print(f"{name:<44} {statistics.median(per_round[name]):12.2f} {statistics.median(ratios[name]):12.3f}x "
              f"{statistics.median(med_ratios[name]):19.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
