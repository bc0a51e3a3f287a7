"""Analysis `spectral`: what does each spectral-norm estimator cost, and how far off is it? (needs the torch extra)

Runs with recipe ``none`` (no tracker data): it makes its own matrices, either

- ``shapes``: a preset (``gpt2-124m``, ``llama-60m``, ``llama-130m``, ``llama-350m``, ``llama-1b``: the model's hidden
  matrix shapes), a list of ``[rows, cols]``, or a list mixing both; each random matrix is W = U diag(s) V^T with a
  realistic decaying spectrum, s1/s2 = ``gap`` and s_i = s2 (i-1)^-``decay`` below, so the reference s1 is known
  exactly (float64, by construction); or
- ``checkpoint``: a ``torch.save``d state dict (loaded with ``weights_only=True``); its 2-D floating tensors, grouped
  by shape (at most ``max_per_shape`` each), with float64 ``svdvals`` on CPU as the reference.

For each estimator (``methods``: ``toolkit.spectral`` names, ``"power:30"`` for a step count), compute dtype and
shape it times one batched call (``batch`` matrices of the shape stacked; ``ms`` is per parameter = call / batch):
CUDA events after ``warmup`` calls, median of ``repeats``; on CPU ``perf_counter``. ``rel_error`` is the largest
|estimate - s1| / s1 over the batch. Outputs: ``benchmark.csv`` (method, steps, shape, rows, cols, batch, dtype,
device, ms, ms_call, rel_error, bias, repeats_done, skipped, speedup_vs_matrix_norm), ``pareto.png`` (time vs error
per shape) and a summary with the recommended estimator per accuracy budget (the fastest within 1% and within 5%),
per shape and overall; ``pareto.html`` is the same figure, interactive (hover: method, dtype, shape, time, error).

On the CPU the synthetic shapes are CPU-sized (``cpu_shapes: scaled``): a shape with a side above 512 is divided by
32 (the benchmark's shapes become ``SMALL_SHAPES``; ``cpu_shapes: full`` keeps them), and the replacements are
logged and listed in summary.json. Each (method, dtype, shape) cell has a time budget (``cell_budget_s``): warm-up
stops once it has used the budget, a cell whose first timed call takes longer is skipped (its row says why in
``skipped``, with no numbers; a larger shape of the same method and dtype is then skipped without a call), and the
timed repeats stop once they have used the budget (``repeats_done``). A progress bar counts the cells.
"""
from __future__ import annotations

import logging
import math
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, List, Optional

import numpy as np
import pandas as pd

from analyses.spectral_report import render_spectral
from toolkit.errors import UserError, require_extra
from toolkit.progress import progress_bar
from toolkit.protocol import AnalysisBase
from toolkit.settings import Choice, Settings, as_settings, at_least, bounded, fail

NAME = "spectral"
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
DEFAULT_METHODS = ["exact", "matrix_norm", "power:5", "power:10", "power", "ns5-fast", "ns3-accurate"]
DEFAULT_DTYPES = ["float32", "bfloat16"]
BUDGETS = {"within_1pct": 0.01, "within_5pct": 0.05}
# the shapes bench_spectral.py reports (and experiment=spectral_bench runs)
BENCH_SHAPES = [(768, 768), (768, 3072), (2048, 2048), (4096, 4096), (4096, 11008)]
SMALL_SHAPES = [(24, 24), (24, 96), (64, 64), (128, 128), (128, 344)]  # BENCH_SHAPES / 32 (CPU-sized)
CPU_MAX_SIDE = 512  # on the CPU (cpu_shapes: scaled) a shape with a side above this is divided by CPU_SCALE
CPU_SCALE = 32
log = logging.getLogger(__name__)
CpuShapes = Choice("CpuShapes", {"scaled": "scaled", "full": "full"}, module=__name__)


def _llama(hidden: int, inter: int, layers: int) -> dict[tuple[int, int], int]:
    """LLaMA hidden matrices as nn.Linear weights (out, in): q, k, v, o; gate, up; down."""
    return {(hidden, hidden): 4 * layers, (inter, hidden): 2 * layers, (hidden, inter): layers}


# matrix shape -> how many of them the model has (embeddings and the head left out)
PRESETS: dict[str, dict[tuple[int, int], int]] = {
    # HF GPT-2 Conv1D weights are (in, out): c_attn 768x2304, attn c_proj 768x768, c_fc 768x3072, mlp c_proj 3072x768
    "gpt2-124m": {(768, 2304): 12, (768, 768): 12, (768, 3072): 12, (3072, 768): 12},
    "llama-60m": _llama(512, 1376, 8),
    "llama-130m": _llama(768, 2048, 12),
    "llama-350m": _llama(1024, 2736, 24),
    "llama-1b": _llama(2048, 5461, 24),
}


def preset_shapes(name: str) -> dict[tuple[int, int], int]:
    """The hidden-matrix shapes of a preset model, with their counts."""
    if name not in PRESETS:
        raise UserError(f"analysis.spectral: unknown shapes preset '{name}' (expected one of {', '.join(PRESETS)} "
                        "or a list of [rows, cols])")
    return dict(PRESETS[name])


def _shape(item: Any) -> tuple[int, int]:
    """[rows, cols] or 'RxC' -> (rows, cols)."""
    if isinstance(item, str) and "x" in item and item.replace("x", "").isdigit():
        item = item.split("x")
    try:
        rows, cols = (int(v) for v in item)
    except (TypeError, ValueError):
        raise UserError(f"analysis.spectral: shape {item!r} is not [rows, cols] or a preset name") from None
    if rows < 1 or cols < 1:
        raise UserError(f"analysis.spectral: shape {item!r} must have positive sizes")
    return rows, cols


def resolve_shapes(spec: Any) -> dict[tuple[int, int], int]:
    """The shapes to benchmark (with their model counts) from ``shapes``: a preset, a list of shapes, or a mix."""
    if spec is None:
        raise UserError("analysis.spectral: give shapes (a preset or [[rows, cols], ...]) or a checkpoint")
    items = [spec] if isinstance(spec, str) else list(spec)
    shapes: dict[tuple[int, int], int] = {}
    for item in items:
        if isinstance(item, str) and not item.replace("x", "").isdigit():
            for shape, count in preset_shapes(item).items():
                shapes[shape] = max(shapes.get(shape, 0), count)
        else:
            shapes.setdefault(_shape(item), 1)
    if not shapes:
        raise UserError("analysis.spectral: the shapes list is empty")
    return shapes


def resolve_device(spec: Any) -> tuple[str, str]:
    """(device, a note saying how it was chosen) for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    torch = require_extra("torch", "torch")
    spec = str(spec or "auto")
    if spec == "auto":
        if torch.cuda.is_available():
            return "cuda", f"device: cuda ({torch.cuda.get_device_name()}), chosen automatically"
        return "cpu", "device: cpu (no CUDA device available; analysis.spectral.device=cuda on a GPU machine)"
    if not DEVICE.fullmatch(spec):
        raise UserError(f"analysis.spectral: device '{spec}': expected auto, cpu, cuda or cuda:N")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"analysis.spectral: device '{spec}' asked for, but torch sees no CUDA device")
    name = f" ({torch.cuda.get_device_name()})" if spec.startswith("cuda") else ""
    return spec, f"device: {spec}{name}, as configured"


@dataclass
class SpectralSettings(Settings):
    """Every knob of the spectral benchmark; see conf/analysis/spectral.yaml."""

    shapes: Any = "gpt2-124m"
    checkpoint: Optional[str] = None
    max_per_shape: int = at_least(8, 1)
    methods: List[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    dtypes: List[str] = field(default_factory=lambda: list(DEFAULT_DTYPES))
    device: str = "auto"
    repeats: int = at_least(5, 1)
    warmup: int = at_least(2, 0)
    seed: int = 0
    gap: float = bounded(1.1, "s1/s2 >= 1", ge=1)
    decay: float = bounded(0.5, "a tail exponent >= 0", ge=0)
    batch: Any = 1
    cpu_shapes: CpuShapes = CpuShapes.scaled
    cell_budget_s: Optional[float] = bounded(5.0, "seconds > 0 per (method, dtype, shape), or null (no budget)", gt=0)
    who: ClassVar[str] = NAME

    def __post_init__(self) -> None:
        from toolkit.spectral import parse_method

        self.shape_counts = None if self.checkpoint else resolve_shapes(self.shapes)
        for key in ("methods", "dtypes"):
            if not getattr(self, key):
                raise fail(NAME, key, getattr(self, key), "a non-empty list")
        for m in self.methods:
            try:
                parse_method(m)
            except UserError as exc:
                raise UserError(f"{NAME}: methods: {exc}") from None
        if not DEVICE.fullmatch(self.device):
            raise fail(NAME, "device", self.device, "auto, cpu, cuda or cuda:N")
        if not (self.batch in ("model", "preset") or type(self.batch) is int and self.batch >= 1):
            raise fail(NAME, "batch", self.batch, "a count >= 1, or model (the preset's count of each shape)")
        super().__post_init__()


def cpu_sized(shape: tuple[int, int]) -> tuple[int, int]:
    """A shape as the CPU runs it: unchanged up to CPU_MAX_SIDE per side, else each side / CPU_SCALE (rounded)."""
    rows, cols = shape
    if max(rows, cols) <= CPU_MAX_SIDE:
        return rows, cols
    return max(2, math.floor(rows / CPU_SCALE + 0.5)), max(2, math.floor(cols / CPU_SCALE + 0.5))


def plan_shapes(shape_counts: Mapping[tuple[int, int], int], device: str, cpu_shapes: Any = "scaled"
                ) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], tuple[int, int]]]:
    """The shapes (with counts) to benchmark on ``device`` and the ones replaced by CPU-sized shapes (on the CPU with
    ``cpu_shapes`` scaled: original -> replacement; shapes that meet keep the larger count)."""
    if not str(device).startswith("cpu") or str(cpu_shapes) == "full":
        return dict(shape_counts), {}
    planned: dict[tuple[int, int], int] = {}
    replaced: dict[tuple[int, int], tuple[int, int]] = {}
    for shape, count in shape_counts.items():
        small = cpu_sized(shape)
        if small != tuple(shape):
            replaced[tuple(shape)] = small
        planned[small] = max(planned.get(small, 0), count)
    return planned, replaced


def _shape_text(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def replaced_note(replaced: Mapping[tuple[int, int], tuple[int, int]]) -> str:
    """The log line of the CPU-sized replacements."""
    pairs = ", ".join(f"{_shape_text(a)} replaced by {_shape_text(b)}" for a, b in replaced.items())
    return (f"cpu: {pairs} (shapes with a side above {CPU_MAX_SIDE} / {CPU_SCALE}; "
            f"set analysis.spectral.cpu_shapes=full to keep them)")


def synthetic_case(shape: tuple[int, int], batch: int, gap: float, decay: float, seed: int, device: str) -> tuple[Any, list[float]]:
    """A float64 (batch, rows, cols) stack with known spectra on ``device`` and its s1 per matrix."""
    torch = require_extra("torch", "torch")
    from toolkit.spectral import decaying_spectrum, known_spectrum

    rows, cols = shape
    mats, refs = [], []
    for i in range(batch):
        top = 1.0 + 0.25 * i  # different scales, so a batched bug cannot hide
        s = decaying_spectrum(min(rows, cols), gap=gap, decay=decay, top=top)
        mats.append(known_spectrum(s, shape, seed=seed * 1000 + i, device=device))
        refs.append(top)
    return torch.stack(mats), refs


def checkpoint_cases(path: str, max_per_shape: int) -> dict[tuple[int, int], tuple[Any, list[float], list[str]]]:
    """The 2-D floating tensors of a state dict, grouped by shape, with float64 CPU svdvals references."""
    torch = require_extra("torch", "torch")
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"analysis.spectral: checkpoint '{path}' does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad input
        raise UserError(f"analysis.spectral: checkpoint '{path}' could not be loaded with weights_only=True: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise UserError(f"analysis.spectral: checkpoint '{path}' holds a {type(obj).__name__}, not a state dict")
    groups: dict[tuple[int, int], list[tuple[str, Any]]] = {}
    for name, t in obj.items():
        if torch.is_tensor(t) and t.ndim == 2 and t.is_floating_point() and min(t.shape) > 1:
            groups.setdefault(tuple(t.shape), []).append((str(name), t))
    if not groups:
        raise UserError(f"analysis.spectral: checkpoint '{path}' has no 2-D floating tensors")
    cases = {}
    for shape, items in groups.items():
        items = items[: max(1, int(max_per_shape))]
        stack = torch.stack([t.to(torch.float64) for _, t in items])
        refs = torch.linalg.svdvals(stack)[:, 0].tolist()
        cases[shape] = (stack, refs, [n for n, _ in items])
    return cases


@dataclass
class CellTiming:
    """One cell's timing: the median ms of its timed calls (NaN when skipped), its last result, how many timed
    calls ran, and why it was skipped ("" when it was not)."""

    ms: float
    result: Any
    repeats_done: int
    skipped: str = ""


def time_cell(fn: Callable[[], Any], device: str, repeats: int, warmup: int, budget_s: float | None = None) -> CellTiming:
    """Time ``fn()``: ``warmup`` untimed calls, then the median of ``repeats`` timed calls (CUDA events on a GPU,
    perf_counter on CPU). With ``budget_s``: the warm-up stops once it has taken that long, the cell is skipped when its
    first timed call does, and the timed repeats stop once together they have."""
    torch = require_extra("torch", "torch")
    cuda = str(device).startswith("cuda")
    budget = math.inf if budget_s is None else float(budget_s)
    spent = 0.0
    for _ in range(max(0, warmup)):
        t0 = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize()
        spent += time.perf_counter() - t0
        if spent > budget:
            break
    times: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeats)):
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        if cuda:
            start.record()
        result = fn()
        if cuda:
            end.record()
            torch.cuda.synchronize()
        took = time.perf_counter() - t0
        spent += took
        times.append(start.elapsed_time(end) if cuda else took * 1e3)
        if len(times) == 1 and spent > budget:
            return CellTiming(math.nan, result, 1, f"first timed call took {spent:.3g} s > cell_budget_s={budget:g}")
        if spent > budget:
            break
    return CellTiming(statistics.median(times), result, len(times))


def benchmark(cases: dict[tuple[int, int], tuple[Any, list[float]]], methods: Sequence[str], dtypes: Sequence[str],
              device: str, repeats: int = 5, warmup: int = 2, seed: int = 0,
              progress: Callable[[str], None] | None = None, budget_s: float | None = None,
              bar: bool = True) -> pd.DataFrame:
    """Time and score every (method, dtype, shape); ``cases`` maps shape -> (stack on device, s1 per matrix).

    ``budget_s``: each cell's time budget (see ``time_cell``); once a cell is skipped, the larger shapes of its
    method and dtype are skipped without a call. ``bar``: a tqdm bar over the cells, total known up front (silent off
    a terminal; the analysis passes the run's ``progress`` switch)."""
    torch = require_extra("torch", "torch")
    from toolkit.spectral import DEFAULT_STEPS, dtype_name, estimate, parse_method, resolve_dtype

    rows = []
    too_slow: dict[tuple[str, str], tuple[int, str, str]] = {}  # (method, dtype) -> (elements, shape, reason) skipped
    with progress_bar(len(cases) * len(dtypes) * len(methods), "spectral", enabled=bar, unit="cell") as pbar:
        for shape, (stack64, refs) in cases.items():
            ref = np.asarray(refs, dtype=float)
            size = shape[0] * shape[1]
            for dt in dtypes:
                dtype = resolve_dtype(dt)
                w = stack64.to(device=device, dtype=dtype)  # the parameters as they are stored in training
                for spec in methods:
                    name, steps = parse_method(spec)
                    steps = steps if steps is not None else DEFAULT_STEPS.get(name)
                    pbar.set_postfix_str(f"{spec} {dtype_name(dtype)} {_shape_text(shape)}", refresh=False)
                    row = {"method": spec, "estimator": name, "steps": steps, "shape": _shape_text(shape),
                           "rows": shape[0], "cols": shape[1], "batch": len(ref), "dtype": dtype_name(dtype),
                           "device": device}
                    slow = too_slow.get((spec, dtype_name(dtype)))
                    if slow is not None and size >= slow[0]:
                        timing = CellTiming(math.nan, None, 0, f"not run: the smaller {slow[1]} was skipped ({slow[2]})")
                    else:
                        call = partial(estimate, w, spec, dtype=dtype, seed=seed)
                        timing = time_cell(call, device, repeats, warmup, budget_s)
                    if timing.skipped:
                        if slow is None or size < slow[0]:
                            too_slow[(spec, dtype_name(dtype))] = (size, _shape_text(shape), timing.skipped)
                        row.update(ms=math.nan, ms_call=math.nan, rel_error=math.nan, bias=math.nan,
                                   repeats_done=timing.repeats_done, skipped=timing.skipped)
                    else:
                        got = timing.result.sigma.double().cpu().numpy()
                        err = (got - ref) / ref
                        row.update(ms=timing.ms / len(ref), ms_call=timing.ms, rel_error=float(np.max(np.abs(err))),
                                   bias=float(np.mean(err)), repeats_done=timing.repeats_done, skipped="")
                    rows.append(row)
                    pbar.update(1)
                    if progress:
                        what = (f"skipped ({row['skipped']})" if row["skipped"] else
                                f"{row['ms']:9.3f} ms rel_error {row['rel_error']:.2e}")
                        progress(f"{spec:>14} {dtype_name(dtype):>8} {_shape_text(shape)}: {what}")
                del w
                if str(device).startswith("cuda"):
                    torch.cuda.empty_cache()
    df = pd.DataFrame(rows)
    base = df[df["estimator"] == "matrix_norm"].set_index(["shape", "dtype"])["ms"]
    key = list(zip(df["shape"], df["dtype"]))
    df["speedup_vs_matrix_norm"] = [base.get(k, np.nan) / ms if ms > 0 else np.nan for k, ms in zip(key, df["ms"])]
    return df


def _pick(df: pd.DataFrame, budget: float) -> dict[str, Any] | None:
    """The fastest row within ``budget`` relative error (None when none is)."""
    ok = df[df["rel_error"] <= budget]
    if ok.empty:
        return None
    row = ok.sort_values(["ms", "rel_error"]).iloc[0]
    return {"method": row["method"], "dtype": row["dtype"], "ms": float(row["ms"]), "rel_error": float(row["rel_error"]),
            "speedup_vs_matrix_norm": None if pd.isna(row["speedup_vs_matrix_norm"]) else float(row["speedup_vs_matrix_norm"])}


def recommend(df: pd.DataFrame) -> dict[str, Any]:
    """Fastest estimator within each accuracy budget, per shape and overall (within budget on every shape; a
    skipped cell counts as not within)."""
    per_shape = {shape: {b: _pick(g, tol) for b, tol in BUDGETS.items()} for shape, g in df.groupby("shape", sort=False)}
    n_shapes = df["shape"].nunique()
    ran = df[df["skipped"].fillna("").astype(str).eq("")] if "skipped" in df.columns else df
    agg = ran.groupby(["method", "dtype"]).agg(worst=("rel_error", "max"), total_ms=("ms", "sum"),
                                               n=("shape", "nunique"))
    overall: dict[str, Any] = {}
    for b, tol in BUDGETS.items():
        best = agg[(agg["worst"] <= tol) & (agg["n"] == n_shapes)].sort_values("total_ms")
        overall[b] = None if best.empty else {
            "method": best.index[0][0], "dtype": best.index[0][1],
            "total_ms_per_parameter_over_shapes": float(best["total_ms"].iloc[0]),
            "worst_rel_error": float(best["worst"].iloc[0])}
    return {"per_shape": per_shape, "overall": overall}


def run(table: pd.DataFrame | None, params: Mapping[str, Any] | SpectralSettings | None, out: Any) -> dict[str, Any]:
    """Benchmark the spectral-norm estimators; write benchmark.csv, pareto.png and pareto.html; return the summary."""
    torch = require_extra("torch", "torch")
    from toolkit.spectral import resolve_dtype

    s = as_settings(SpectralSettings, params, who=NAME)
    for d in s.dtypes:
        resolve_dtype(d)
    device, note = resolve_device(s.device)
    replaced: dict[tuple[int, int], tuple[int, int]] = {}
    if s.checkpoint:
        loaded = checkpoint_cases(s.checkpoint, s.max_per_shape)
        cases = {shape: (stack.to(device), refs) for shape, (stack, refs, _) in loaded.items()}
        source = f"checkpoint {Path(s.checkpoint).name}: " + ", ".join(
            f"{sh[0]}x{sh[1]} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" for sh, (_, _, names) in loaded.items())
        reference = "float64 torch.linalg.svdvals on CPU"
    else:
        torch.manual_seed(s.seed)
        planned, replaced = plan_shapes(s.shape_counts, device, s.cpu_shapes)
        if replaced:
            log.info("%s", replaced_note(replaced))
        batches = {shape: count if s.batch in ("model", "preset") else s.batch for shape, count in planned.items()}
        cases = {shape: synthetic_case(shape, n, s.gap, s.decay, s.seed, device) for shape, n in batches.items()}
        source = f"synthetic: W = U diag(s) V^T, s1/s2 = {s.gap}, s_i = s2 (i-1)^-{s.decay}"
        reference = "s1 by construction (float64), equal to float64 svdvals"
    df = benchmark(cases, s.methods, s.dtypes, device, s.repeats, s.warmup, s.seed, budget_s=s.cell_budget_s,
                   bar=bool(getattr(out, "progress", True)))
    out.table("benchmark", df)
    skipped = df[df["skipped"].ne("")]
    if len(skipped):
        cells = "; ".join(f"{r.method} {r.dtype} {r.shape} ({r.skipped})" for r in skipped.head(5).itertuples())
        out.warn(f"{len(skipped)} of {len(df)} cell(s) skipped over cell_budget_s={s.cell_budget_s:g} s: {cells}"
                 f"{'; ...' if len(skipped) > 5 else ''} (benchmark.csv column skipped; raise analysis.spectral."
                 f"cell_budget_s, or null, to time them)")
    cut = df[df["skipped"].eq("") & (df["repeats_done"] < max(1, s.repeats))]
    if len(cut):
        log.info("%d cell(s) over cell_budget_s=%g s ran fewer than repeats=%d timed calls (benchmark.csv column "
                 "repeats_done), e.g. %s", len(cut), s.cell_budget_s, s.repeats,
                 ", ".join(f"{r.method} {r.dtype} {r.shape}: {r.repeats_done}" for r in cut.head(3).itertuples()))
    from analyses.spectral_plots import pareto_figure, pareto_interactive

    caption = (f"Time (ms per parameter matrix) vs relative error of s1 for every estimator and dtype, one panel per shape, on "
               f"{device} (dashed: Pareto front; dotted: 1% and 5%)")
    out.figure("pareto", pareto_figure(df), caption=caption)
    out.figure("pareto", pareto_interactive(df), caption=caption + "; hover a point for its method, dtype and shape")
    rec = recommend(df)
    for b in BUDGETS:
        if rec["overall"][b] is None:
            out.warn(f"no estimator is {b.replace('_', ' ').replace('pct', '%')} of s1 on every shape")
    return {
        "device": device,
        "device_note": note,
        "torch_version": torch.__version__,
        "source": source,
        "reference": reference,
        "timing": "CUDA events, median of repeats after warm-up" if device.startswith("cuda")
        else "perf_counter (synchronous on CPU), median of repeats after warm-up",
        "recommended": rec,
        "n_rows": len(df),
        "n_skipped": len(skipped),
        "cell_budget_s": s.cell_budget_s,
        "shapes_replaced": {_shape_text(a): _shape_text(b) for a, b in replaced.items()},
        "shapes_note": replaced_note(replaced) if replaced else None,
        "settings": {**s.to_dict(), "shapes": None if s.checkpoint else [f"{sh[0]}x{sh[1]}" for sh in cases]},
    }


class Spectral(AnalysisBase):
    """The spectral-norm benchmark (``_target_: analyses.spectral.Spectral``); it reads no table columns."""

    name = NAME
    settings_type = SpectralSettings
    report_tables = staticmethod(render_spectral)

    def run(self, table: pd.DataFrame | None, settings: SpectralSettings, out: Any) -> dict[str, Any]:
        """See the module-level ``run``."""
        return run(table, settings, out)
