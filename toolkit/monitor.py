"""Training monitor: metrics of a torch training loop logged through any ``log_metrics(metrics, step)`` writer.

    monitor = TrainingMonitor(logger, model, optimizer, spectral_every=100, total_steps=1750,
                              tokens_per_step=8 * 64 * 1024, flops_per_token=6 * n_params)
    for step in range(1, 1751):
        loss = model(batch).backward() ...; optimizer.step()
        monitor.step(step, loss)                 # after optimizer.step(), before zero_grad (grads still there)
        if step % 125 == 0:
            with monitor.paused():               # validation time does not count as training time
                val = evaluate(model)
            monitor.step(step, loss, val_loss=val)   # or pass val_loss on the regular call
    monitor.close()                              # removes the activation hooks

``logger`` is a ``toolkit.protocol.RunWriter`` (e.g. ``adapters.local.LocalTracker(path).start_run(...)``) or a
``toolkit.logging.Logger`` fanning out to several; the monitor never finishes it. Call ``step`` once per optimizer
step on every rank: under ``torch.distributed`` the losses are averaged over ranks (one all-reduce) and only rank 0
computes the rest, logs and prints (DDP: gradients and parameters are already identical on every rank).

Logged keys (the seed's metric groups):

- ``Time/training_time_ms``: wall time since the monitor started (or ``start()``), minus ``paused()`` blocks,
  ``Time/step_avg_ms``: training_time_ms / number of ``step`` calls, ``Time/total_time_s``: wall time incl. pauses,
  ``Time/monitor_ms``: time this ``step`` call spent on monitoring (logged from the next step: it includes itself
  up to the point of logging), ``Time/spectral_ms``: the spectral-norm estimate (steps where it runs).
- ``Loss/train_loss`` every step, ``Loss/val_loss`` when given (both averaged over ranks).
- ``Optimization/grad_norm`` (global L2 norm of the gradients; omitted without gradients), ``Optimization/lr`` and
  ``Optimization/momentum`` (momentum or beta1 of the first param group) with an optimizer.
- ``Model/param_norm`` every step; ``Model/spectral_norm_max``, ``Model/spectral_norm_mean``,
  ``Model/spectral_norm_std`` (population std) every
  ``spectral_every`` steps over the 2-D weight matrices (``spectral_filter``; default: every 2-D parameter but
  ``nn.Embedding`` tables), with ``toolkit.spectral`` (``spectral_method``, warm-started from the previous call), and
  ``Model/spectral_norm/<param name>`` per matrix when ``per_matrix``.
- ``Hardware/peak_memory_mb`` and ``Hardware/reserved_memory_mb`` (CUDA only), ``Hardware/tokens_per_s`` (with
  ``tokens_per_step``, the global tokens per optimizer step), ``Hardware/mfu`` (fraction of the GPU's dense bf16 peak,
  with ``flops_per_token``; H100, H200, A100, B200 known, ``peak_flops`` overrides; unknown GPU or CPU: omitted,
  said once as a RuntimeWarning).
- ``Activations/<module>_mean``, ``_std``, ``_max``, ``_min``, ``_l2_norm`` with ``activations=True`` every
  ``activations_every`` steps (default ``spectral_every``): forward hooks on ``activation_modules`` (default: the
  children of every ``nn.ModuleList``, i.e. the blocks; without one, the leaf modules with parameters), taken from
  the last training-mode forward pass before the step; ``close()`` removes the hooks.

Console (rank 0, every ``console_every`` steps and every step with a validation loss), modded-nanogpt's form:
``step:1000/1750 val_loss:3.2847 train_time:180420ms step_avg:180.42ms``.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from toolkit.errors import require_extra

# dense bf16 tensor-core peaks per GPU (FLOP/s); the first substring of the device name that matches wins
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
]
ACTIVATION_STATS = ("mean", "std", "max", "min", "l2_norm")


def peak_flops_for(device_name: str | None) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU from its name, or None when unknown."""
    name = (device_name or "").lower()
    return next((value for key, value in PEAK_BF16_FLOPS if key.lower() in name), None)


def _dist_info() -> tuple[int, int]:
    """(rank, world size) under an initialised torch.distributed, else (0, 1)."""
    torch = require_extra("torch", "torch")
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return int(d.get_rank()), int(d.get_world_size())
    return 0, 1


def _total_norm(tensors: Sequence[Any]) -> Any:
    """Global L2 norm of a list of tensors as a 0-d fp32 tensor (None for an empty list)."""
    torch = require_extra("torch", "torch")
    if not tensors:
        return None
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm(tensors, norm_type=2.0).float()
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


def default_spectral_filter(model: Any) -> Callable[[str, Any], bool]:
    """2-D parameters that are not embedding tables."""
    torch = require_extra("torch", "torch")
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return lambda name, p: p.ndim == 2 and id(p) not in embedding_ids


def default_activation_modules(model: Any) -> dict[str, Any]:
    """The children of every nn.ModuleList (the blocks), else the leaf modules that own parameters."""
    torch = require_extra("torch", "torch")
    found: dict[str, Any] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList):
            for i, child in enumerate(mod):
                found[f"{name}.{i}" if name else str(i)] = child
    if found:
        return found
    return {name: m for name, m in model.named_modules()
            if name and not list(m.children()) and any(True for _ in m.parameters(recurse=False))}


class TrainingMonitor:
    """Logs time, loss, optimisation, model, hardware and activation metrics of a training loop (see module doc)."""

    def __init__(self, logger: Any, model: Any, optimizer: Any = None,
                 spectral_every: int = 100, spectral_method: str = "power", spectral_steps: int | None = 10,
                 spectral_dtype: Any = None, spectral_filter: Callable[[str, Any], bool] | None = None,
                 per_matrix: bool = False, activations: bool = False, activations_every: int | None = None,
                 activation_modules: Sequence[str] | None = None, total_steps: int | None = None,
                 tokens_per_step: int | None = None, flops_per_token: float | None = None,
                 peak_flops: float | None = None, console: bool = True, console_every: int = 1,
                 print_fn: Callable[[str], None] = print) -> None:
        """Set up the monitor (activation hooks are registered here on rank 0); the clock starts now."""
        torch = require_extra("torch", "torch")
        from toolkit.spectral import parse_method

        parse_method(spectral_method)
        self.logger = logger
        self.model = model
        self.optimizer = optimizer
        self.spectral_every = int(spectral_every or 0)
        self.spectral_method = spectral_method
        self.spectral_steps = spectral_steps
        self.spectral_dtype = spectral_dtype
        self.spectral_filter = spectral_filter or default_spectral_filter(model)
        self.per_matrix = per_matrix
        self.activations = activations
        self.activations_every = int(activations_every or self.spectral_every or 1)
        self.total_steps = total_steps
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.console = console
        self.console_every = max(1, int(console_every))
        self.print_fn = print_fn
        self.rank, self.world_size = _dist_info()
        self._spectral_state: dict[str, Any] = {}
        self._hooks: list[Any] = []
        self._act_stats: dict[str, Any] = {}
        self._capture = True
        first = next(iter(model.parameters()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.cuda = self.device.type == "cuda"
        self.device_name = torch.cuda.get_device_name(self.device) if self.cuda else "cpu"
        self.peak_flops = peak_flops if peak_flops is not None else peak_flops_for(self.device_name if self.cuda else None)
        if flops_per_token and self.peak_flops is None and self.rank == 0:
            warnings.warn(f"TrainingMonitor: no peak FLOP/s known for '{self.device_name}': Hardware/mfu is not logged "
                          "(pass peak_flops=... to set it)", RuntimeWarning, stacklevel=2)
        if activations and self.rank == 0:
            self._register_hooks(activation_modules)
        self.start()

    # ------------------------------------------------------------------------------------------- clock

    def start(self) -> None:
        """(Re)start the clock: training time counts from here."""
        self._t0 = time.perf_counter()
        self._paused = 0.0
        self._n = 0
        self._last_train_s = 0.0
        self._last_n = 0
        self._monitor_ms: float | None = None

    def _train_s(self) -> float:
        """Seconds of training so far (pauses excluded)."""
        return time.perf_counter() - self._t0 - self._paused

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Exclude the block's time (validation, checkpointing) from the training time."""
        self._sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self._paused += time.perf_counter() - t

    def _sync(self) -> None:
        """Wait for queued CUDA work so that wall-clock times mean something."""
        if self.cuda:
            require_extra("torch", "torch").cuda.synchronize(self.device)

    # ------------------------------------------------------------------------------------------- hooks

    def _register_hooks(self, names: Sequence[str] | None) -> None:
        """Forward hooks computing mean/std/max/min/l2 of each module's output (training mode only)."""
        modules = dict(self.model.named_modules())
        if names is None:
            chosen = default_activation_modules(self.model)
        else:
            missing = [n for n in names if n not in modules]
            if missing:
                raise KeyError(f"TrainingMonitor: no module named {', '.join(missing)} in the model")
            chosen = {n: modules[n] for n in names}
        self._hooks.extend(module.register_forward_hook(self._make_hook(name)) for name, module in chosen.items())

    def _make_hook(self, name: str) -> Callable[..., None]:
        """A forward hook storing the output statistics of one module."""
        torch = require_extra("torch", "torch")

        def hook(module: Any, inputs: Any, output: Any) -> None:
            if not self._capture or not module.training:
                return
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            if not torch.is_tensor(out) or not out.is_floating_point() or out.numel() == 0:
                return
            with torch.no_grad():
                x = out.detach().float()
                std = x.std() if x.numel() > 1 else torch.zeros((), device=x.device)
                self._act_stats[name] = torch.stack([x.mean(), std, x.max(), x.min(), torch.linalg.vector_norm(x)])

        return hook

    @property
    def hooks(self) -> list[Any]:
        """The registered forward-hook handles (empty after close())."""
        return list(self._hooks)

    def close(self) -> None:
        """Remove the activation hooks (idempotent); the logger stays open."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._act_stats.clear()

    def __enter__(self) -> TrainingMonitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- step

    def _reduce_losses(self, loss: Any, val_loss: Any) -> tuple[float, float | None]:
        """Average the losses over ranks (one all-reduce) and return them as floats."""
        torch = require_extra("torch", "torch")
        values = [loss, val_loss if val_loss is not None else 0.0]
        if self.world_size > 1:
            t = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.device).detach().reshape(())
                             for v in values])
            d = torch.distributed
            d.all_reduce(t, op=d.ReduceOp.SUM)
            out = (t / self.world_size).tolist()
        else:
            out = [float(v.detach().float().item()) if torch.is_tensor(v) else float(v) for v in values]
        return out[0], (out[1] if val_loss is not None else None)

    def _spectral(self, metrics: dict[str, float]) -> None:
        """Spectral-norm statistics over the selected 2-D matrices."""
        from toolkit.spectral import spectral_norms

        t = time.perf_counter()
        params = {n: p for n, p in self.model.named_parameters() if self.spectral_filter(n, p)}
        norms = spectral_norms(params, method=self.spectral_method, steps=self.spectral_steps,
                               dtype=self.spectral_dtype, state=self._spectral_state)
        if not norms:
            return
        values = list(norms.values())
        mean = sum(values) / len(values)
        metrics["Model/spectral_norm_max"] = max(values)
        metrics["Model/spectral_norm_mean"] = mean
        metrics["Model/spectral_norm_std"] = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        if self.per_matrix:
            metrics.update({f"Model/spectral_norm/{name}": value for name, value in norms.items()})
        metrics["Time/spectral_ms"] = (time.perf_counter() - t) * 1e3

    def step(self, step: int, loss: Any, val_loss: Any = None) -> dict[str, float]:
        """Record one optimizer step; returns the metrics logged (empty on ranks other than 0)."""
        torch = require_extra("torch", "torch")
        self._sync()
        now_train = self._train_s()
        t_enter = time.perf_counter()
        self._n += 1
        train_loss, val = self._reduce_losses(loss, val_loss)
        if self.rank != 0:
            return {}
        metrics: dict[str, float] = {
            "Time/training_time_ms": now_train * 1e3,
            "Time/step_avg_ms": now_train * 1e3 / self._n,
            "Time/total_time_s": time.perf_counter() - self._t0,
            "Loss/train_loss": train_loss,
        }
        if self._monitor_ms is not None:
            metrics["Time/monitor_ms"] = self._monitor_ms
        if val is not None:
            metrics["Loss/val_loss"] = val
        with torch.no_grad():
            params = [p.detach() for p in self.model.parameters()]
            grads = [p.grad.detach() for p in self.model.parameters() if p.grad is not None]
            norms = [_total_norm(params)] + ([_total_norm(grads)] if grads else [])
            values = torch.stack([n.to("cpu") if n.device.type != "cpu" else n for n in norms]).tolist()
        metrics["Model/param_norm"] = values[0]
        if grads:
            metrics["Optimization/grad_norm"] = values[1]
        if self.optimizer is not None and getattr(self.optimizer, "param_groups", None):
            group = self.optimizer.param_groups[0]
            if "lr" in group:
                metrics["Optimization/lr"] = float(group["lr"])
            momentum = group.get("momentum", group.get("betas", (None,))[0])
            if momentum is not None:
                metrics["Optimization/momentum"] = float(momentum)
        if self.spectral_every > 0 and step % self.spectral_every == 0:
            self._spectral(metrics)
        if self.activations and step % self.activations_every == 0 and self._act_stats:
            names = list(self._act_stats)
            rows = torch.stack([self._act_stats[n].cpu() for n in names]).tolist()
            metrics.update({f"Activations/{name}_{stat}": value for name, row in zip(names, rows)
                            for stat, value in zip(ACTIVATION_STATS, row)})
            self._act_stats.clear()
        self._capture = self.activations and (step + 1) % self.activations_every == 0
        if self.cuda:
            metrics["Hardware/peak_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            metrics["Hardware/reserved_memory_mb"] = torch.cuda.memory_reserved(self.device) / 2**20
        if self.tokens_per_step:
            dt = now_train - self._last_train_s
            dn = self._n - self._last_n
            if dt > 0 and dn > 0:
                metrics["Hardware/tokens_per_s"] = tps = self.tokens_per_step * dn / dt
                if self.flops_per_token and self.peak_flops:
                    metrics["Hardware/mfu"] = self.flops_per_token * tps / (self.peak_flops * self.world_size)
        self._last_train_s, self._last_n = now_train, self._n
        self.logger.log_metrics(metrics, step)
        if self.console and (val is not None or step % self.console_every == 0):
            self.print_fn(self.console_line(step, metrics))
        self._monitor_ms = (time.perf_counter() - t_enter) * 1e3
        return metrics

    def console_line(self, step: int, metrics: dict[str, float]) -> str:
        """modded-nanogpt's line: ``step:1000/1750 val_loss:3.2847 train_time:180420ms step_avg:180.42ms``."""
        head = f"step:{step}/{self.total_steps}" if self.total_steps else f"step:{step}"
        loss = "val_loss" if "Loss/val_loss" in metrics else "train_loss"
        return (f"{head} {loss}:{metrics['Loss/' + loss]:.4f} train_time:{metrics['Time/training_time_ms']:.0f}ms "
                f"step_avg:{metrics['Time/step_avg_ms']:.2f}ms")
