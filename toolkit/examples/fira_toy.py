"""A tiny Fira-style experiment on CPU: low-rank vs full-rank training of a two-layer transformer, in seconds.

Both variants train the same model (same init, same data: sequences from a random Markov chain) and expose a
per-column scaling factor for each of the 12 block matrices (q, k, v, o, up, down per layer) at every step:

- ``fira-lowrank``: the gradient G of a matrix is projected to rank r (P from an SVD of G, refreshed every
  ``proj_gap`` steps), Adam runs on R = P^T G, and the residual G - P R is added back scaled per column by
  phi_j = ||Adam(R)_j|| / ||R_j|| (Fira's scaling factor);
- ``fira-fullrank``: plain Adam on G, with the same ratio phi_j = ||Adam(G)_j|| / ||G_j|| for comparison.

The factors are logged with :func:`toolkit.scaling_factors.log_scaling_factors` through any trackers::

    python -m toolkit.examples.fira_toy --out fira_runs                       # local files
    python -m toolkit.examples.fira_toy --out fira_runs --tracker local mlflow wandb
    python run.py experiment=fira_similarity tracker.path=fira_runs

torch is imported lazily (``pip install 'sweepkit[torch]'``).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import UserError, require_extra
from toolkit.scaling_factors import ScalingFactorSampler, log_scaling_factors

RUN_NAMES = {"lowrank": "fira-lowrank", "fullrank": "fira-fullrank"}


@dataclass
class ToyConfig:
    """Settings of one toy run (the same for both variants but ``variant``)."""

    variant: str = "lowrank"
    steps: int = 200
    rank: int = 8
    proj_gap: int = 50
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    vocab: int = 32
    seq_len: int = 16
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    n_samples: int = 32
    sample_seed: int = 0
    log_every: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant not in RUN_NAMES:
            raise UserError(f"fira_toy: variant '{self.variant}' is not one of {', '.join(RUN_NAMES)}")
        if self.steps < 1 or self.rank < 1 or self.log_every < 1:
            raise UserError(f"fira_toy: steps, rank and log_every must be >= 1, got {self.steps}, {self.rank}, {self.log_every}")


def tracker_settings(out: str | Path, names: Sequence[str], experiment: str = "fira-toy") -> list[tuple[str, dict[str, Any]]]:
    """(tracker name, settings) pairs, as ``tracker=<name>`` takes them, writing under ``out``."""
    out = Path(out)
    where = {"local": {"path": str(out)},
             "mlflow": {"uri": f"sqlite:///{(out / 'mlflow.db').resolve()}", "experiment": experiment},
             "wandb": {"path": str(out / "wandb"), "project": experiment, "offline": True}}
    unknown = [n for n in names if n not in where]
    if unknown:
        raise UserError(f"fira_toy --tracker: '{unknown[0]}' is not one of {', '.join(where)}")
    return [(name, where[name]) for name in names]


def _model(cfg: ToyConfig):
    torch = require_extra("torch", "torch")
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        def __init__(self, d: int, heads: int):
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
            self.up, self.down = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

        def forward(self, x):
            b, t, d = x.shape
            h = self.ln1(x)
            q, k, v = (m(h).view(b, t, self.heads, d // self.heads).transpose(1, 2) for m in (self.q, self.k, self.v))
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
            x = x + self.o(att)
            return x + self.down(F.gelu(self.up(self.ln2(x))))

    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(cfg.vocab, cfg.d_model)
            self.pos = nn.Parameter(torch.zeros(cfg.seq_len, cfg.d_model))
            self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads) for _ in range(cfg.n_layers))
            self.ln = nn.LayerNorm(cfg.d_model)
            self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)

        def forward(self, idx):
            x = self.emb(idx) + self.pos[: idx.shape[1]]
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln(x))

        def matrices(self) -> list:
            return [m.weight for blk in self.blocks for m in (blk.q, blk.k, blk.v, blk.o, blk.up, blk.down)]

    return TinyLM()


class ScaledAdam:
    """Adam on every parameter; for the listed matrices, Fira's low-rank update (rank given) or full-rank Adam,
    both exposing the per-column scaling factor ||Adam(X)_j|| / ||X_j|| in ``scaling_factors`` (1-based)."""

    def __init__(self, params: Sequence[Any], matrices: Sequence[Any], lr: float, rank: int | None,
                 proj_gap: int = 50, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.torch = require_extra("torch", "torch")
        self.params = list(params)
        self.matrix_ids = {id(p): i for i, p in enumerate(matrices, start=1)}
        self.lr, self.rank, self.proj_gap, self.betas, self.eps = lr, rank, proj_gap, betas, eps
        self.state: dict[int, dict[str, Any]] = {}
        self.t = 0
        self.scaling_factors: dict[int, Any] = {}

    def zero_grad(self) -> None:
        """Drop every parameter's gradient."""
        for p in self.params:
            p.grad = None

    def _adam(self, st: dict[str, Any], g):
        b1, b2 = self.betas
        if "m" not in st or st["m"].shape != g.shape:
            st["m"], st["v"] = self.torch.zeros_like(g), self.torch.zeros_like(g)
        st["m"].mul_(b1).add_(g, alpha=1 - b1)
        st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
        m_hat = st["m"] / (1 - b1 ** self.t)
        v_hat = st["v"] / (1 - b2 ** self.t)
        return m_hat / (v_hat.sqrt() + self.eps)

    def step(self) -> None:
        """One update of every parameter; records the matrices' scaling factors."""
        torch = self.torch
        self.t += 1
        with torch.no_grad():
            for p in self.params:
                if p.grad is None:
                    continue
                st = self.state.setdefault(id(p), {})
                index = self.matrix_ids.get(id(p))
                if index is None:
                    p.add_(self._adam(st, p.grad), alpha=-self.lr)
                    continue
                flip = p.shape[0] < p.shape[1]  # columns = the smaller dimension
                g = p.grad.T if flip else p.grad
                if self.rank is None:
                    upd = self._adam(st, g)
                    factor = upd.norm(dim=0) / g.norm(dim=0).clamp_min(1e-30)
                else:
                    if "P" not in st or (self.t - 1) % self.proj_gap == 0:
                        u, _, _ = torch.linalg.svd(g, full_matrices=False)
                        st["P"] = u[:, : self.rank].contiguous()
                    P = st["P"]
                    R = P.T @ g
                    N = self._adam(st, R)
                    factor = N.norm(dim=0) / R.norm(dim=0).clamp_min(1e-30)
                    upd = P @ N + (g - P @ R) * factor
                p.add_(upd.T if flip else upd, alpha=-self.lr)
                self.scaling_factors[index] = factor.detach().clone()


def train(cfg: ToyConfig) -> Iterator[tuple[int, float, dict[int, Any]]]:
    """Train one variant; yield (step, loss, {matrix: per-column scaling factors}) at every step."""
    torch = require_extra("torch", "torch")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    transition = torch.softmax(3.0 * torch.randn(cfg.vocab, cfg.vocab, generator=gen), dim=1)
    model = _model(cfg)
    opt = ScaledAdam(model.parameters(), model.matrices(), lr=cfg.lr,
                     rank=cfg.rank if cfg.variant == "lowrank" else None, proj_gap=cfg.proj_gap)
    for step in range(1, cfg.steps + 1):
        seq = torch.empty(cfg.batch_size, cfg.seq_len + 1, dtype=torch.long)
        seq[:, 0] = torch.randint(cfg.vocab, (cfg.batch_size,), generator=gen)
        for t in range(cfg.seq_len):
            seq[:, t + 1] = torch.multinomial(transition[seq[:, t]], 1, generator=gen).squeeze(1)
        logits = model(seq[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab), seq[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        yield step, float(loss.detach()), dict(opt.scaling_factors)


def run_variant(cfg: ToyConfig, trackers: Sequence[Any], bar: Any = None) -> dict[str, Any]:
    """Train one variant and log its loss and scaling factors through the given trackers (one run each);
    ``bar`` (a progress bar) advances by one per step."""
    from toolkit.logging import open_logger

    name = RUN_NAMES[cfg.variant]
    config = {k: v for k, v in asdict(cfg).items() if k != "extra"} | dict(cfg.extra)
    logger = open_logger(list(trackers), name, config)
    sampler = ScalingFactorSampler(n_samples=cfg.n_samples, seed=cfg.sample_seed)
    status = "failed"
    last_loss = float("nan")
    try:
        for step, loss, factors in train(cfg):
            last_loss = loss
            if step % cfg.log_every == 0 or step == cfg.steps:
                log_scaling_factors(logger, step, factors, sampler, extra={"train/loss": loss})
            if bar is not None:
                bar.update(1)
        status = "finished"
    finally:
        logger.finish(status)
    return {"name": name, "final_loss": last_loss, "n_matrices": len(sampler.indices)}


def run_toy(trackers: Sequence[Any], variants: Sequence[str] = ("lowrank", "fullrank"), progress: bool = True,
            **settings: Any) -> list[dict[str, Any]]:
    """Both variants through the given tracker objects (or (name, settings) pairs, see ``tracker_settings``), quietly:
    one progress bar over every step (on a terminal), none of the trackers' own banners."""
    from toolkit.demo import quiet_trackers
    from toolkit.progress import progress_bar
    from toolkit.trackers import make_tracker

    quiet_trackers()
    built = [make_tracker(*t) if isinstance(t, tuple) else t for t in trackers]
    configs = [ToyConfig(variant=v, **settings) for v in variants]
    with progress_bar(sum(c.steps for c in configs), "training the toy runs", enabled=progress, unit="step") as bar:
        return [run_variant(cfg, built, bar) for cfg in configs]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train both variants and log them under --out."""
    ap = argparse.ArgumentParser(prog="python -m toolkit.examples.fira_toy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the runs (local files, mlflow.db, wandb/)")
    ap.add_argument("--tracker", nargs="+", default=["local"], choices=["local", "mlflow", "wandb"])
    ap.add_argument("--steps", type=int, default=ToyConfig.steps)
    ap.add_argument("--rank", type=int, default=ToyConfig.rank)
    ap.add_argument("--samples", type=int, default=ToyConfig.n_samples, help="sampled columns per matrix")
    ap.add_argument("--d-model", type=int, default=ToyConfig.d_model)
    ap.add_argument("--seed", type=int, default=ToyConfig.seed)
    ap.add_argument("--experiment", default="fira-toy", help="MLflow experiment / W&B project")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        started = time.perf_counter()
        Path(args.out).mkdir(parents=True, exist_ok=True)
        results = run_toy(tracker_settings(args.out, args.tracker, args.experiment), steps=args.steps, rank=args.rank,
                          n_samples=args.samples, d_model=args.d_model, seed=args.seed, progress=not args.no_progress)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in results:
        print(f"{r['name']}: final loss {r['final_loss']:.3f}, {r['n_matrices']} matrices")
    print(f"logged to {', '.join(args.tracker)} under {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
