"""Spectral-norm estimators for weight matrices (needs the ``torch`` extra; imported lazily).

Every estimator returns the largest singular value s1 of each matrix. Matrices of one shape are stacked and
estimated in one batched call, so a model's hidden matrices cost one call per shape; results come back as plain
floats per parameter name (one device sync per call):

    state = {}                                      # warm-start cache: name -> top right singular vector
    norms = spectral_norms(dict(model.named_parameters()), method="power", steps=10, state=state)
    norms = spectral_norms([w1, w2, w3])            # a list (or any iterable) of tensors: named "0", "1", "2"

Methods (``method`` or ``"<method>:<steps>"``, e.g. ``"power:30"``):

- ``exact``: ``torch.linalg.svdvals`` (fp32; bf16 input is rounded to bf16 first, then decomposed in fp32).
- ``matrix_norm``: ``torch.linalg.matrix_norm(ord=2)`` (an SVD inside; same accuracy and similar cost as exact).
- ``power``: power iteration on W^T W for ``steps`` steps (default 20); the estimate is the Rayleigh quotient
  sqrt(v^T W^T W v), a lower bound of s1 up to rounding. Its error shrinks like (s2/s1)^(4k): it depends on the
  spectrum's top gap, not on the size. With ``state`` the start vector is the previous call's vector for that
  parameter (a monitor called every N steps converges in a few steps; shapes that changed are restarted).
- ``ns5-fast``: Muon's quintic Newton-Schulz polar factor Q (a, b, c = 3.4445, -4.7750, 2.0315, 5 steps), then power
  iteration (default 7 steps) on H = Q^T W ~ (W^T W)^(1/2) without forming H (v -> Q^T (W v)).
- ``ns3-accurate``: the cubic Newton-Schulz iteration X <- 1.5 X - 0.5 X X^T X (default 12 steps), then power
  iteration (default 10 steps) on H as above.

For the two Newton-Schulz methods the estimate is ||W v|| at the final vector v (free: W v is computed anyway),
not the eigenvalue v^T H v: the latter carries the polynomial's bias f(s1) (ns5's singular values land in about
[0.7, 1.2], hence the seed's "tens of percent"); ``ns_estimate="h"`` returns it anyway. Power iteration on H
contracts like s2/s1 per step, slower than on W^T W ((s2/s1)^2), and the polar factor costs matrix-matrix
products: on the spectra measured here these methods never beat plain power iteration (see analysis ``spectral``).

Matmuls run in ``dtype`` (default: the parameter's dtype; ``torch.bfloat16`` asks for bf16), norms and the
iteration vectors in fp32.

Measured relative error, worst case (CPU, torch 2.13; W = U diag(s) V^T with s_i = s2 (i-1)^-0.5 below s2, shapes
24x24 .. 512x1376, cold start, default steps; ``python benchmarks/bench_spectral.py --small [--gap 1.5]``):

    method             s1/s2 = 1.1          s1/s2 = 1.5          note
                       fp32      bf16       fp32      bf16
    exact              5e-7      3e-4       4e-7      3e-4       bf16: the rounding of W itself
    matrix_norm        5e-7      3e-4       4e-7      3e-4       same SVD inside
    power:5            6e-2      6e-2       3e-3      3e-3       error ~ (s2/s1)^(4k) x start angle
    power:10           2e-2      2e-2       2e-5      2e-3
    power (20)         7e-3      7e-3       1e-7      2e-3       bf16 floor ~2e-3 (bf16 matvecs)
    ns5-fast           9e-2      1.2e-1     3.3e-1    3.3e-1     may lock onto s2, s3 (non-monotone polynomial)
    ns3-accurate       9e-2      9e-2       2e-2      2e-2       H contracts like s2/s1 per step only

Always below the true value (a Rayleigh quotient), up to bf16 rounding. ``DOCUMENTED_ERROR`` holds the bounds the
tests check at s1/s2 = 1.5. Warm starts (``state``) remove the start-angle factor: a monitor called every N steps on
slowly moving weights gets the converged accuracy from a few steps per call.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from toolkit.errors import UserError, require_extra

METHODS = ("exact", "matrix_norm", "power", "ns5-fast", "ns3-accurate")
ITERATIVE = ("power", "ns5-fast", "ns3-accurate")
DEFAULT_STEPS = {"power": 20, "ns5-fast": 7, "ns3-accurate": 10}
DEFAULT_NS_STEPS = {"ns5-fast": 5, "ns3-accurate": 12}
NS5_COEFFS = (3.4445, -4.7750, 2.0315)
# relative error bounds checked by the tests on matrices with a known spectrum (gap s1/s2 = 1.5), per compute dtype
DOCUMENTED_ERROR = {
    ("exact", "float32"): 1e-5,
    ("matrix_norm", "float32"): 1e-5,
    ("power", "float32"): 1e-4,
    ("ns3-accurate", "float32"): 3e-2,
    ("ns5-fast", "float32"): 0.35,
    ("exact", "bfloat16"): 1e-3,
    ("matrix_norm", "bfloat16"): 1e-3,
    ("power", "bfloat16"): 5e-3,
    ("ns3-accurate", "bfloat16"): 3e-2,
    ("ns5-fast", "bfloat16"): 0.35,
}
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "float64": "float64", "fp64": "float64"}


def _torch() -> Any:
    """The torch module, or a one-line error naming the extra."""
    return require_extra("torch", "torch")


def parse_method(spec: str) -> tuple[str, int | None]:
    """Split ``"power:30"`` into ``("power", 30)``; a bare name gives its default steps (None)."""
    name, _, steps = str(spec).partition(":")
    name = name.strip()
    if name not in METHODS:
        raise UserError(f"spectral: unknown method '{spec}' (expected one of {', '.join(METHODS)}, optionally ':<steps>')")
    if not steps:
        return name, None
    if name not in ITERATIVE:
        raise UserError(f"spectral: method '{name}' takes no step count (got '{spec}')")
    try:
        n = int(steps)
    except ValueError:
        raise UserError(f"spectral: '{spec}': the step count must be an integer") from None
    if n < 1:
        raise UserError(f"spectral: '{spec}': the step count must be at least 1")
    return name, n


def resolve_dtype(dtype: Any) -> Any:
    """A torch dtype from a torch dtype, a name (``float32``, ``bf16``, ...) or None (None stays None)."""
    torch = _torch()
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).replace("torch.", "").lower()
    if key not in _DTYPES:
        raise UserError(f"spectral: unknown dtype '{dtype}' (expected float32 or bfloat16)")
    return getattr(torch, _DTYPES[key])


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).replace("torch.", "")


@dataclass
class Estimate:
    """A batched estimate: s1 per matrix (fp32 tensor), the final vectors (iterative methods) and steps run."""

    sigma: Any
    vectors: Any = None
    steps: int = 0


def _oriented(w: Any) -> Any:
    """View a (B, m, n) stack with m <= n (s1 is transpose-invariant; vectors live in the longer dimension)."""
    return w.mT if w.shape[-2] > w.shape[-1] else w


def _start_vectors(batch: int, n: int, device: Any, v0: Any, seed: int) -> Any:
    """Unit fp32 start vectors (B, n): ``v0`` where given, else seeded Gaussian."""
    torch = _torch()
    if v0 is not None:
        v = v0.to(device=device, dtype=torch.float32)
    else:
        gen = torch.Generator().manual_seed(int(seed))
        v = torch.randn(batch, n, generator=gen, dtype=torch.float32).to(device)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def _matvec(w: Any, v: Any) -> Any:
    """(B, m, n) @ (B, n) in w's dtype, returned as fp32 (B, m)."""
    return (w @ v.to(w.dtype).unsqueeze(-1)).squeeze(-1).float()


def _iterate(w: Any, right: Any, v: Any, steps: int, tol: float | None) -> tuple[Any, Any, Any, int]:
    """Power iteration v <- right(W v); returns (||W v||, v.right(W v), v, steps run) for the last start vector."""
    prev = wv_norm = rq = None
    for k in range(steps):
        u = _matvec(w, v)
        z = right(u)
        if tol is not None or k == steps - 1:  # the estimates cost reductions: only when they are read
            wv_norm = u.norm(dim=-1)
            rq = (v * z).sum(-1)
        v = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        if tol is not None:
            if prev is not None and bool(((wv_norm - prev).abs() <= tol * wv_norm.abs()).all()):
                break
            prev = wv_norm
    assert wv_norm is not None and rq is not None
    return wv_norm, rq, v, k + 1


def newton_schulz5(x: Any, steps: int = 5) -> Any:
    """Muon's quintic Newton-Schulz polar factor of a (B, m, n) stack with m <= n, in x's dtype."""
    a, b, c = NS5_COEFFS
    x = x / (x.float().norm(dim=(-2, -1), keepdim=True) + 1e-7).to(x.dtype)
    for _ in range(steps):
        g = x @ x.mT
        x = a * x + (b * g + c * (g @ g)) @ x
    return x


def newton_schulz3(x: Any, steps: int = 12) -> Any:
    """Cubic Newton-Schulz polar factor (X <- 1.5 X - 0.5 X X^T X) of a (B, m, n) stack with m <= n."""
    x = x / (x.float().norm(dim=(-2, -1), keepdim=True) + 1e-7).to(x.dtype)
    for _ in range(steps):
        x = 1.5 * x - 0.5 * ((x @ x.mT) @ x)
    return x


def estimate(w: Any, method: str = "power", steps: int | None = None, dtype: Any = None, v0: Any = None,
             tol: float | None = None, ns_steps: int | None = None, ns_estimate: str = "wv", seed: int = 0) -> Estimate:
    """Estimate s1 of every matrix of a (B, m, n) or (m, n) tensor with one batched computation."""
    torch = _torch()
    name, spec_steps = parse_method(method)
    steps = steps if steps is not None else spec_steps if spec_steps is not None else DEFAULT_STEPS.get(name, 0)
    dtype = resolve_dtype(dtype) or w.dtype
    if name in ITERATIVE and steps < 1:
        raise UserError(f"spectral: {name} needs at least 1 step (got {steps})")
    with torch.no_grad():
        w = w.detach()
        if w.ndim == 2:
            w = w.unsqueeze(0)
        if w.ndim != 3:
            raise UserError(f"spectral: expected a matrix or a stack of matrices, got shape {tuple(w.shape)}")
        if name in ("exact", "matrix_norm"):
            full = torch.float64 if dtype == torch.float64 else torch.float32
            x = w.to(dtype).to(full)  # bf16: the rounded matrix, decomposed in fp32 (no bf16 SVD)
            sigma = torch.linalg.svdvals(x)[..., 0] if name == "exact" else torch.linalg.matrix_norm(x, ord=2)
            return Estimate(sigma.float())
        x = _oriented(w.to(dtype))
        batch, _, n = x.shape
        v = _start_vectors(batch, n, x.device, v0, seed)
        if name == "power":
            wv, _, v, done = _iterate(x, lambda u: _matvec(x.mT, u), v, steps, tol)
            return Estimate(wv, v, done)
        k = ns_steps if ns_steps is not None else DEFAULT_NS_STEPS[name]
        q = newton_schulz5(x, k) if name == "ns5-fast" else newton_schulz3(x, k)
        wv, rq, v, done = _iterate(x, lambda u: _matvec(q.mT, u), v, steps, tol)
        return Estimate(rq if ns_estimate == "h" else wv, v, done)


def named_matrices(params: Mapping[str, Any] | Iterable[Any]) -> Mapping[str, Any]:
    """``params`` as a name -> tensor mapping: a mapping as given, a list (or any iterable) of tensors named by
    their position ``"0"``, ``"1"``, ... (entries that are not 2-D keep their number; they are skipped later)."""
    if isinstance(params, Mapping):
        return params
    torch = _torch()
    if torch.is_tensor(params) or isinstance(params, (str, bytes)) or not isinstance(params, Iterable):
        what = f"a tensor of shape {tuple(params.shape)}" if torch.is_tensor(params) else f"a {type(params).__name__}"
        raise UserError(f"spectral_norms: expected a mapping name -> tensor or a list of tensors, got {what} "
                        "(spectral_norm(w) takes one matrix)")
    return {str(i): p for i, p in enumerate(params)}


def spectral_norms(named_params: Mapping[str, Any] | Iterable[Any], method: str = "power", steps: int | None = None,
                   dtype: Any = None, state: MutableMapping[str, Any] | None = None, tol: float | None = None,
                   ns_steps: int | None = None, seed: int = 0) -> dict[str, float]:
    """s1 per 2-D parameter name, one batched call per (shape, device, dtype); ``state`` caches warm-start vectors.
    ``named_params`` is a mapping name -> tensor or a list of tensors (then named ``"0"``, ``"1"``, ... by position)."""
    torch = _torch()
    named_params = named_matrices(named_params)
    groups: dict[tuple, list[str]] = {}
    for pname, p in named_params.items():
        if getattr(p, "ndim", 0) == 2:
            groups.setdefault((tuple(p.shape), str(p.device), p.dtype), []).append(pname)
    name, _ = parse_method(method)
    sigmas: list[Any] = []
    order: list[str] = []
    with torch.no_grad():
        for (shape, _, _), names in groups.items():
            w = torch.stack([named_params[n].detach() for n in names])
            v0 = None
            if state is not None and name in ITERATIVE:
                n_long = max(shape)
                cached = [state.get(n) for n in names]
                if any(c is not None and c.shape == (n_long,) for c in cached):
                    fresh = _start_vectors(len(names), n_long, w.device, None, seed)
                    v0 = torch.stack([c.to(w.device, torch.float32) if c is not None and c.shape == (n_long,) else fresh[i]
                                      for i, c in enumerate(cached)])
            est = estimate(w, method, steps=steps, dtype=dtype, v0=v0, tol=tol, ns_steps=ns_steps, seed=seed)
            if state is not None and est.vectors is not None:
                for i, n in enumerate(names):
                    state[n] = est.vectors[i].detach()
            sigmas.append(est.sigma.float().cpu())
            order.extend(names)
    return dict(zip(order, torch.cat(sigmas).tolist())) if sigmas else {}


def spectral_norm(w: Any, method: str = "power", **kwargs: Any) -> float:
    """s1 of one matrix as a float (see ``estimate`` for the keyword arguments)."""
    return float(estimate(w, method, **kwargs).sigma[0])


def reference_norm(w: Any) -> float:
    """The reference s1: float64 ``svdvals`` on CPU."""
    torch = _torch()
    return float(torch.linalg.svdvals(w.detach().to("cpu", torch.float64))[0])


def known_spectrum(s: Any, shape: tuple[int, int], seed: int = 0, device: Any = "cpu", dtype: Any = None) -> Any:
    """W = U diag(s) V^T of ``shape`` with the given singular values (random orthogonal U, V; float64 by default)."""
    torch = _torch()
    m, n = shape
    r = min(m, n)
    s = torch.as_tensor(s, dtype=torch.float64)
    if s.numel() != r:
        raise UserError(f"spectral: {s.numel()} singular values for a {m}x{n} matrix (expected {r})")
    gen = torch.Generator().manual_seed(int(seed))
    u, v = (torch.linalg.qr(torch.randn(k, r, generator=gen, dtype=torch.float64).to(device))[0] for k in (m, n))
    w = (u * s.to(device)) @ v.T
    return w if dtype is None else w.to(resolve_dtype(dtype))


def decaying_spectrum(r: int, gap: float = 1.1, decay: float = 0.5, top: float = 1.0) -> list[float]:
    """Singular values with s1/s2 = ``gap`` and a power-law tail s_i = s2 (i-1)^-decay (i >= 2), s1 = ``top``."""
    if gap < 1:
        raise UserError(f"spectral: the top gap s1/s2 must be >= 1 (got {gap})")
    s2 = top / gap
    return [top] + [s2 * (i ** -decay) for i in range(1, r)]


__all__ = [
    "METHODS", "DEFAULT_STEPS", "DEFAULT_NS_STEPS", "NS5_COEFFS", "DOCUMENTED_ERROR", "Estimate",
    "estimate", "spectral_norms", "named_matrices", "spectral_norm", "reference_norm", "known_spectrum", "decaying_spectrum",
    "newton_schulz5", "newton_schulz3", "parse_method", "resolve_dtype", "dtype_name",
]
