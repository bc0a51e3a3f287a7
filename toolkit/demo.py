"""Synthetic lr x batch-size sweeps with planted constants, for tests, docs and trying the toolkit.

The planted law (all logs base 2), with ``horizon = bs * step * seq_len`` tokens:

    log2 lr*(horizon, bs) = A * log2(horizon) + B * log2(bs) + C
    train_loss = L_inf(horizon) + curvature * (log2 lr - log2 lr*)^2
                 + bs_curvature * (log2 bs - log2 bs*(horizon))^2 + noise * N(0, 1)
    L_inf(horizon) = loss_floor + loss_scale * (horizon / 2^20) ** -loss_exponent
    log2 bs*(horizon) = bs_A * log2(horizon) + bs_C
    log2 output_norm = norm_log2_opt + norm_slope * (log2 lr - log2 lr*) + norm_noise * N(0, 1)

so the output norm at the optimal learning rate is the same at every horizon and batch size (norm transfer),
and ``n_diverged`` runs at the largest learning rates blow up (loss x10, x100, x1e4, then inf, then NaN).

CLI: ``python -m toolkit.demo --out sweep.csv [--seed N] [--small] [--long]`` writes the wide history file (and
``sweep.planted.json``); ``--tracker local|mlflow|wandb --tracker-arg key=value ...`` logs the runs through a
tracker adapter instead (or as well), e.g. ``--tracker local --tracker-arg path=runs/``,
``--tracker mlflow --tracker-arg uri=sqlite:///mlflow.db --tracker-arg experiment=demo`` or
``--tracker wandb --tracker-arg path=wandb/ --tracker-arg offline=true``. The grid can be shrunk for a quick try:
``--lr-log2 -11,-10,-9,-8 --batch-sizes 32,64 --seeds 0 --horizons-log2 26,27 --log-every-tokens 33554432``;
``--long`` reaches the 2^33 tokens that ``experiment=norm_transfer`` asks for (horizons 2^28, 2^30, 2^32, 2^33).

``--scaling-table misfitting_scaling_results.csv`` writes a flat scaling-survey table instead (one row per model,
token count and peak lr: ``loss, N, D, C, model, peak_lr, tokens_per_param``, the (Mis)Fitting survey's layout) from
a planted law (natural logs in the loss, base 2 for the learning rate):

    loss = E + A / N^alpha + B / D^beta + lr_curvature * (log2 peak_lr - log2 lr*(N, D))^2, times exp(noise * N(0, 1))
    log2 lr*(N, D) = lr_N * log2(N) + lr_D * log2(D) + lr_C;   C = 6 N D

so the compute-optimal allocation is N* ~ C^(beta / (alpha + beta)), D* ~ C^(alpha / (alpha + beta)); the constants
go to ``<stem>.planted.json`` beside it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import UserError
from toolkit.outputs import atomic_write_text, write_json, write_parquet
from toolkit.progress import progress_bar
from toolkit.trackers import make_tracker, tracker_names

EXAMPLE_SWEEP = Path(__file__).resolve().parent / "data" / "example_sweep.csv"
HISTORY_COLUMNS = ("run_name", "step", "lr", "bs", "seed", "train_loss", "output_norm")
DEFAULT_LR_LOG2 = tuple(np.arange(-12.0, -4.75, 0.5))  # 2^-12 .. 2^-5, 15 values
SMALL_LR_LOG2 = tuple(np.arange(-11.5, -5.75, 0.5))  # 2^-11.5 .. 2^-6, 12 values
DEFAULT_HORIZONS_LOG2 = (26, 27, 28, 29, 30)
LONG_HORIZONS_LOG2 = (28, 30, 32, 33)  # the norm-transfer experiment's horizons (conf/experiment/norm_transfer.yaml)
LONG_LOG_EVERY_TOKENS = 2**25  # rows close enough that the averaging window stays narrow at every horizon


def run_name(lr: float, bs: int, seed: int) -> str:
    """Norm-transfer style run name whose lr parses back exactly: ``lr-<repr>-bs-<int>-seed-<int>``."""
    return f"lr-{float(lr)!r}-bs-{int(bs)}-seed-{int(seed)}"


def write_table(path: Path, frame: pd.DataFrame) -> None:
    """A frame as CSV or parquet (by the suffix), atomically."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        write_parquet(path, frame)
    elif suffix in (".csv", ""):
        atomic_write_text(path, frame.to_csv(index=False))
    else:
        raise UserError(f"demo: output file '{path.name}' should end in .csv or .parquet")


@dataclass
class DemoSweep:
    """A synthetic sweep: the wide ``history`` (one row per run and logged step) and the ``planted`` constants."""

    history: pd.DataFrame
    planted: dict[str, Any]

    def optimal_log2_lr(self, horizon: Any, bs: Any) -> Any:
        """Planted log2 of the optimal learning rate at ``horizon`` tokens and batch size ``bs``."""
        p = self.planted
        return p["A"] * np.log2(horizon) + p["B"] * np.log2(bs) + p["C"]

    def lr_bs_table(self) -> pd.DataFrame:
        """The sweep as recipe lr_bs_sweep's table (runs named by their run name, the planted seq_len)."""
        from toolkit.recipes import lr_bs_sweep
        from toolkit.runset import RunSet

        h = self.history
        first = h.drop_duplicates("run_name")
        runs = pd.DataFrame({"run_id": first["run_name"].to_numpy(), "name": first["run_name"].to_numpy(),
                             "state": "finished", "created_at": None, "tags": ""})
        runset = RunSet(runs, h.rename(columns={"run_name": "run_id"})[["run_id", "step", "train_loss", "output_norm"]])
        return lr_bs_sweep.build(runset, {"seq_len": self.planted["seq_len"]}, lambda _: None)

    def optimal_lr(self, horizon: Any, bs: Any) -> Any:
        """Planted optimal learning rate at ``horizon`` tokens and batch size ``bs``."""
        return np.exp2(self.optimal_log2_lr(horizon, bs))

    def noiseless_loss(self, lr: Any, bs: Any, horizon: Any) -> Any:
        """The planted loss without noise (and without divergence)."""
        return _loss(self.planted, np.log2(lr), np.log2(bs), np.log2(horizon))

    def noiseless_log2_norm(self, lr: Any, bs: Any, horizon: Any) -> Any:
        """The planted log2 output norm without noise."""
        p = self.planted
        return p["norm_log2_opt"] + p["norm_slope"] * (np.log2(lr) - self.optimal_log2_lr(horizon, bs))

    def write(self, path: str | Path, decimals: int | None = 6) -> Path:
        """Write the wide history (CSV, or parquet by suffix) and ``<stem>.planted.json`` beside it, atomically."""
        rounded = {"train_loss": decimals, "output_norm": decimals}
        frame = self.history if decimals is None else self.history.round(rounded)
        return _write_with_planted(path, frame, self.planted)


def _write_with_planted(path: str | Path, frame: pd.DataFrame, planted: dict[str, Any]) -> Path:
    """Write ``frame`` (CSV, or parquet by suffix) and ``planted`` to ``<stem>.planted.json`` beside it."""
    path = Path(path)
    write_table(path, frame)
    write_json(planted_path(path), planted)
    return path


def planted_path(path: str | Path) -> Path:
    """The sidecar holding a sweep file's planted constants: ``<stem>.planted.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.planted.json")


def load_planted(path: str | Path = EXAMPLE_SWEEP) -> dict[str, Any]:
    """Planted constants of a sweep file written by ``DemoSweep.write`` (default: the bundled example)."""
    side = planted_path(path)
    if not side.is_file():
        raise UserError(f"demo: no planted constants beside '{Path(path).name}' (expected {side.name})")
    return json.loads(side.read_text(encoding="utf-8"))


def _loss(p: Mapping[str, Any], log2_lr: Any, log2_bs: Any, log2_h: Any) -> Any:
    opt = p["A"] * log2_h + p["B"] * log2_bs + p["C"]
    l_inf = p["loss_floor"] + p["loss_scale"] * np.exp2(-p["loss_exponent"] * (log2_h - 20.0))
    bs_opt = p["bs_A"] * log2_h + p["bs_C"]
    return l_inf + p["curvature"] * (log2_lr - opt) ** 2 + p["bs_curvature"] * (log2_bs - bs_opt) ** 2


def make_lr_bs_sweep(
    seed: int = 0, *,
    lr_log2: Sequence[float] = DEFAULT_LR_LOG2, batch_sizes: Sequence[int] = (32, 64, 128, 256),
    seeds: Sequence[int] = (0, 1), seq_len: int = 1024,
    horizons_log2: Sequence[int] = DEFAULT_HORIZONS_LOG2, log_every_tokens: int = 2**23,
    A: float = -0.25, B: float = 0.5, C: float = -4.75, curvature: float = 0.05, noise: float = 0.01,
    loss_floor: float = 2.0, loss_scale: float = 5.0, loss_exponent: float = 0.3,
    bs_A: float = 0.5, bs_C: float = -8.0, bs_curvature: float = 0.02,
    norm_log2_opt: float = 6.0, norm_slope: float = 1.0, norm_noise: float = 0.01,
    n_diverged: int = 2,
) -> DemoSweep:
    """Make a deterministic synthetic sweep (lr x bs x seed runs logged on a common token grid up to the last horizon).

    Every run logs at tokens ``k * log_every_tokens`` (k = 1, 2, ...), i.e. at step ``tokens / (bs * seq_len)``, so every
    horizon in ``2**horizons_log2`` is a logged step of every batch size. Vectorised: 2,000 runs x 1,000 steps take ~1 s.
    """
    lr_log2 = np.asarray(lr_log2, dtype=float)
    bss = np.asarray([int(b) for b in batch_sizes], dtype=np.int64)
    seeds_arr = np.asarray([int(s) for s in seeds], dtype=np.int64)
    horizons = [int(2 ** int(h)) for h in horizons_log2]
    if not len(lr_log2) or not len(bss) or not len(seeds_arr) or not horizons:
        raise UserError("demo: lr_log2, batch_sizes, seeds and horizons_log2 must each have at least one value")
    for bs in bss:
        if log_every_tokens % (int(bs) * seq_len):
            raise UserError(f"demo: log_every_tokens={log_every_tokens} is not a multiple of bs*seq_len={int(bs) * seq_len} (bs={int(bs)})")
    for h in horizons:
        if h % log_every_tokens:
            raise UserError(f"demo: horizon {h} is not a multiple of log_every_tokens={log_every_tokens}")
    planted: dict[str, Any] = dict(
        A=A, B=B, C=C, seq_len=int(seq_len), curvature=curvature, noise=noise,
        loss_floor=loss_floor, loss_scale=loss_scale, loss_exponent=loss_exponent,
        bs_A=bs_A, bs_C=bs_C, bs_curvature=bs_curvature,
        norm_log2_opt=norm_log2_opt, norm_slope=norm_slope, norm_noise=norm_noise,
        optimal_output_norm=float(2.0**norm_log2_opt),
        horizons=horizons, horizons_log2=[int(h) for h in horizons_log2],
        batch_sizes=[int(b) for b in bss], seeds=[int(s) for s in seeds_arr],
        lr_log2=[float(x) for x in lr_log2], lrs=[float(2.0**x) for x in lr_log2],
        log_every_tokens=int(log_every_tokens), generator_seed=int(seed),
        law="log2 lr* = A*log2(horizon) + B*log2(bs) + C; horizon = bs*step*seq_len tokens",
    )
    # one run per (lr, bs, seed), ordered lr-major
    g_lr, g_bs, g_seed = (a.ravel() for a in np.meshgrid(lr_log2, bss, seeds_arr, indexing="ij"))
    n_runs = g_lr.size
    n_points = max(horizons) // log_every_tokens
    tokens = np.arange(1, n_points + 1, dtype=np.int64) * log_every_tokens
    steps = tokens[None, :] // (g_bs[:, None] * seq_len)  # (runs, points)
    log2_h = np.log2(tokens.astype(float))[None, :]
    log2_bs = np.log2(g_bs.astype(float))[:, None]
    x = g_lr[:, None]
    rng = np.random.default_rng(seed)
    loss = _loss(planted, x, log2_bs, log2_h) + noise * rng.standard_normal((n_runs, n_points))
    opt = A * log2_h + B * log2_bs + C
    norm = np.exp2(norm_log2_opt + norm_slope * (x - opt) + norm_noise * rng.standard_normal((n_runs, n_points)))
    lrs = np.exp2(g_lr)
    names = np.array([run_name(lr, bs, s) for lr, bs, s in zip(lrs, g_bs, g_seed)], dtype=object)
    diverged = _diverge(rng, loss, norm, g_lr, n_diverged)
    planted["diverged_runs"] = [str(names[i]) for i in diverged]
    history = pd.DataFrame({
        "run_name": np.repeat(names, n_points),
        "step": steps.ravel(),
        "lr": np.repeat(lrs, n_points),
        "bs": np.repeat(g_bs, n_points),
        "seed": np.repeat(g_seed, n_points),
        "train_loss": loss.ravel(),
        "output_norm": norm.ravel(),
    })
    return DemoSweep(history, planted)


def _diverge(rng: np.random.Generator, loss: np.ndarray, norm: np.ndarray, g_lr: np.ndarray, n: int) -> list[int]:
    """Blow up ``n`` runs among the two largest learning rates in place; return their indices."""
    if n <= 0:
        return []
    top = np.unique(g_lr)[-2:]
    candidates = np.flatnonzero(np.isin(g_lr, top))
    if n > candidates.size:
        candidates = np.arange(g_lr.size)
    chosen = np.sort(rng.choice(candidates, size=min(n, candidates.size), replace=False))
    n_points = loss.shape[1]
    for i in chosen:
        start = int(rng.integers(n_points // 4, max(n_points // 2, n_points // 4 + 1)))
        for values, factors in ((loss, [10.0, 100.0, 1e4, np.inf]), (norm, [2.0, 4.0, 8.0, np.inf])):
            tail = values[i, start:]
            blow = np.array(factors)[: tail.size]
            tail[: blow.size] *= blow
            tail[blow.size:] = np.nan
    return [int(i) for i in chosen]


def make_example_sweep() -> DemoSweep:
    """The small sweep shipped as ``toolkit/data/example_sweep.csv`` (4 bs x 12 lrs x 2 seeds, horizons 2^26..2^30)."""
    return make_lr_bs_sweep(0, lr_log2=SMALL_LR_LOG2, log_every_tokens=2**25)


def make_long_sweep(seed: int = 0) -> DemoSweep:
    """The sweep ``--long`` writes: the default grid with horizons 2^28, 2^30, 2^32 and 2^33 (120 runs x 256 rows)."""
    return make_lr_bs_sweep(seed, horizons_log2=LONG_HORIZONS_LOG2, log_every_tokens=LONG_LOG_EVERY_TOKENS)


@dataclass
class DemoScalingTable:
    """A synthetic scaling survey: the flat ``table`` (one row per model, D and peak_lr) and the ``planted`` constants."""

    table: pd.DataFrame
    planted: dict[str, Any]

    def optimal_log2_lr(self, N: Any, D: Any) -> Any:
        """Planted log2 of the optimal peak learning rate of a model of N parameters trained on D tokens."""
        p = self.planted
        return p["lr_N"] * np.log2(N) + p["lr_D"] * np.log2(D) + p["lr_C"]

    def write(self, path: str | Path) -> Path:
        """Write the table (CSV, or parquet by suffix) and ``<stem>.planted.json`` beside it, atomically."""
        return _write_with_planted(path, self.table, self.planted)


def make_scaling_table(
    seed: int = 0, *,
    models_log2: Sequence[int] = (24, 25, 26, 27, 28, 29, 30), tokens_per_param_log2: Sequence[int] = tuple(range(10)),
    lr_offsets_log2: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0),
    E: float = 1.69, A: float = 406.4, B: float = 410.7, alpha: float = 0.34, beta: float = 0.28,
    lr_N: float = -0.5, lr_D: float = -0.125, lr_C: float = 8.5, lr_curvature: float = 0.02, noise: float = 0.002,
) -> DemoScalingTable:
    """A deterministic synthetic (Mis)Fitting-style survey: models of N = 2^k parameters (``models_log2``), each trained
    to D = N * 2^j tokens (``tokens_per_param_log2``, so every D is a power of two) at each of the peak lrs
    ``2^(round(log2 lr*(N, D_mid)) + offset)`` (``lr_offsets_log2``; one lr grid per model, centred on its optimum at
    its middle token count, as a survey tunes per model). Defaults: Chinchilla's fitted constants (Hoffmann et al.),
    7 models x 10 token counts x 5 lrs = 350 rows, lr* inside every model's grid.
    """
    models = np.asarray([int(k) for k in models_log2], dtype=np.int64)
    ratios = np.asarray([int(j) for j in tokens_per_param_log2], dtype=np.int64)
    offsets = np.asarray([float(o) for o in lr_offsets_log2], dtype=float)
    if not len(models) or not len(ratios) or not len(offsets):
        raise UserError("demo: models_log2, tokens_per_param_log2 and lr_offsets_log2 must each have at least one value")
    planted: dict[str, Any] = dict(
        E=E, A=A, B=B, alpha=alpha, beta=beta,
        a=beta / (alpha + beta), b=alpha / (alpha + beta),
        lr_N=lr_N, lr_D=lr_D, lr_C=lr_C, lr_curvature=lr_curvature, noise=noise,
        models_log2=[int(k) for k in models], tokens_per_param_log2=[int(j) for j in ratios],
        lr_offsets_log2=[float(o) for o in offsets], generator_seed=int(seed),
        law="loss = E + A/N^alpha + B/D^beta + lr_curvature*(log2 peak_lr - log2 lr*)^2 (x exp(noise*N(0,1))); "
            "log2 lr* = lr_N*log2(N) + lr_D*log2(D) + lr_C; C = 6*N*D; N* ~ C^a, D* ~ C^b",
    )
    g_n, g_r, g_o = (a.ravel() for a in np.meshgrid(models, ratios, offsets, indexing="ij"))
    log2_n = g_n.astype(float)
    log2_d = log2_n + g_r
    mid = np.median(ratios.astype(float))
    centre = np.round(lr_N * log2_n + lr_D * (log2_n + mid) + lr_C)
    log2_lr = centre + g_o
    opt = lr_N * log2_n + lr_D * log2_d + lr_C
    n_params, tokens = np.exp2(log2_n), np.exp2(log2_d)
    rng = np.random.default_rng(seed)
    loss = (E + A / n_params**alpha + B / tokens**beta + lr_curvature * (log2_lr - opt) ** 2) \
        * np.exp(noise * rng.standard_normal(g_n.size))
    table = pd.DataFrame({
        "loss": np.round(loss, 6),
        "N": n_params.astype(np.int64),
        "D": tokens.astype(np.int64),
        "C": 6.0 * n_params * tokens,
        "model": [f"lm-{int(round(n / 1e6))}M" for n in n_params],
        "peak_lr": np.exp2(log2_lr),
        "tokens_per_param": np.exp2(g_r.astype(float)).astype(np.int64),
    })
    return DemoScalingTable(table, planted)


def log_sweep(sweep: DemoSweep, tracker: Any, progress: bool = True) -> int:
    """Log every run of ``sweep`` through a tracker's write side (``start_run`` -> writer); return the number of runs."""
    hist = sweep.history
    seq_len = int(sweep.planted["seq_len"])
    diverged = set(sweep.planted.get("diverged_runs", []))
    names = hist["run_name"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, names[1:] != names[:-1], True])
    steps = hist["step"].to_numpy()
    loss = hist["train_loss"].to_numpy(dtype=float)
    norm = hist["output_norm"].to_numpy(dtype=float)
    quiet_trackers()
    with progress_bar(len(bounds) - 1, "logging runs", enabled=progress, unit="run") as bar:
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            row = hist.iloc[lo]
            config = {"lr": float(row["lr"]), "bs": int(row["bs"]), "seed": int(row["seed"]), "seq_len": seq_len}
            writer = tracker.start_run(str(names[lo]), config)
            for j in range(lo, hi):
                metrics = {key: float(v) for key, v in (("train_loss", loss[j]), ("output_norm", norm[j]))
                           if math.isfinite(v)}
                if metrics:
                    writer.log_metrics(metrics, int(steps[j]))
            writer.finish("failed" if names[lo] in diverged else "finished")
            bar.update(1)
    return len(bounds) - 1


# what the trackers' own libraries would print per run (banners, run summaries, INFO lines): the demo says less
QUIET_ENV = {"WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true", "MLFLOW_LOGGING_LEVEL": "WARNING"}
QUIET_LOGGERS = ("mlflow", "alembic", "aim", "dvclive", "lightning", "lightning.pytorch", "pytorch_lightning",
                 "tensorboard", "absl")


def quiet_trackers() -> None:
    """Silence the tracker libraries' per-run console output for this process (a value already set is kept)."""
    import logging
    import os
    import warnings

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for module in ("mlflow", "aim", "dvclive", "lightning", "pytorch_lightning", "google", "wandb"):
        warnings.filterwarnings("ignore", module=module)


def build_tracker(name: str, args: Sequence[str]) -> Any:
    """The tracker ``tracker=<name>`` gives, with ``key=value`` settings (cast and checked by its schema)."""
    options: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key.strip():
            raise UserError(f"demo: --tracker-arg '{arg}' should look like key=value")
        options[key.strip()] = value
    try:
        return make_tracker(name, options)
    except UserError as exc:
        raise UserError(f"demo: {exc}") from None


def _number_list(text: str, cast: Any, what: str) -> list:
    """Parse a comma-separated list of numbers for a CLI option (a UserError naming the option if malformed)."""
    try:
        values = [cast(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"demo: {what} '{text}' should be a comma-separated list of numbers") from None
    if not values:
        raise UserError(f"demo: {what} is empty")
    return values


def sweep_kwargs(ns: argparse.Namespace) -> dict[str, Any]:
    """``make_lr_bs_sweep`` keyword arguments from the CLI options (``--small`` first, then each option given)."""
    kwargs: dict[str, Any] = dict(lr_log2=SMALL_LR_LOG2, log_every_tokens=2**25) if ns.small else {}
    if getattr(ns, "long", False):
        kwargs.update(horizons_log2=LONG_HORIZONS_LOG2, log_every_tokens=LONG_LOG_EVERY_TOKENS)
    for key, cast in (("lr_log2", float), ("batch_sizes", int), ("seeds", int), ("horizons_log2", int)):
        if getattr(ns, key) is not None:
            kwargs[key] = _number_list(getattr(ns, key), cast, "--" + key.replace("_", "-"))
    kwargs.update({k: getattr(ns, k) for k in ("log_every_tokens", "seq_len", "n_diverged")
                   if getattr(ns, k) is not None})
    return kwargs


LIST_OPTIONS = ("--lr-log2", "--batch-sizes", "--seeds", "--horizons-log2")


def _join_list_values(argv: list[str]) -> list[str]:
    """``--lr-log2 -11,-10`` -> ``--lr-log2=-11,-10``: argparse would take a value starting with '-' for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in LIST_OPTIONS and arg.startswith("-") and arg[1:2].isdigit():
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a demo sweep to a file and/or log it through a tracker."""
    parser = argparse.ArgumentParser(prog="python -m toolkit.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the wide history here (.csv or .parquet) plus <stem>.planted.json")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the noise (default 0)")
    parser.add_argument("--small", action="store_true", help="the small sweep shipped as the bundled example")
    parser.add_argument("--long", action="store_true",
                        help="horizons 2^28, 2^30, 2^32 and 2^33 tokens (a row every 2^25 tokens), as "
                             "experiment=norm_transfer asks for")
    parser.add_argument("--lr-log2", metavar="LIST", help="log2 learning rates, comma-separated (e.g. -11,-10,-9)")
    parser.add_argument("--batch-sizes", metavar="LIST", help="batch sizes, comma-separated (default 32,64,128,256)")
    parser.add_argument("--seeds", metavar="LIST", help="seeds, comma-separated (default 0,1)")
    parser.add_argument("--horizons-log2", metavar="LIST",
                        help="log2 token horizons, comma-separated (default 26,27,28,29,30)")
    parser.add_argument("--log-every-tokens", type=int, metavar="N", help="tokens between logged steps (default 2^23)")
    parser.add_argument("--seq-len", type=int, metavar="N", help="tokens per sequence (default 1024)")
    parser.add_argument("--n-diverged", type=int, metavar="N", help="runs that diverge (default 2)")
    parser.add_argument("--scaling-table", metavar="PATH",
                        help="write a synthetic scaling-survey table here instead (loss, N, D, C, model, peak_lr; "
                             ".csv or .parquet) plus <stem>.planted.json")
    parser.add_argument("--tracker", choices=tracker_names(), help="log the runs through this tracker adapter")
    parser.add_argument("--tracker-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="constructor argument of the tracker (repeat), e.g. path=runs/ or uri=http://...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while logging")
    ns = parser.parse_args(_join_list_values(sys.argv[1:] if argv is None else list(argv)))
    if not ns.out and not ns.tracker and not ns.scaling_table:
        parser.error("give --out PATH and/or --tracker NAME, or --scaling-table PATH")
    try:
        if ns.scaling_table:
            survey = make_scaling_table(ns.seed)
            path = survey.write(ns.scaling_table)
            print(f"wrote {survey.table['model'].nunique()} models ({len(survey.table)} rows) to {path} "
                  f"and {planted_path(path).name}")
            if not ns.out and not ns.tracker:
                return 0
        sweep = make_lr_bs_sweep(ns.seed, **sweep_kwargs(ns))
        n_runs = sweep.history["run_name"].nunique()
        if ns.out:
            path = sweep.write(ns.out)
            print(f"wrote {n_runs} runs ({len(sweep.history)} rows) to {path} and {planted_path(path).name}")
        if ns.tracker:
            tracker = build_tracker(ns.tracker, ns.tracker_arg)
            logged = log_sweep(sweep, tracker, progress=not ns.no_progress)
            print(f"logged {logged} runs through {ns.tracker}")
    except UserError as exc:
        from toolkit.secrets import scrub

        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
