"""Approach 3: the parametric loss L(N, D) = E + A/N^alpha + B/D^beta, fitted by Huber loss on log L.

Parameters are ``theta = (a, b, e, alpha, beta)`` with ``A = exp(a)``, ``B = exp(b)``, ``E = exp(e)``; the
prediction is ``logsumexp(a - alpha log N, b - beta log D, e)`` and the objective is the *sum* of
``Huber_delta(pred - log L)`` over the points (Hoffmann et al. 2022; Besiroglu et al. 2024).

The fit is the best local optimum over a grid of starts. The straightforward way runs scipy's L-BFGS-B once per
start (``fit_scipy_loop``, kept as the reference). ``fit_parametric`` gets the same optimum much faster:
a Levenberg-Marquardt iteration (Gauss-Newton on the IRLS majoriser of the Huber loss, exact gradient, one damping
factor per start) runs on all starts at once as numpy arrays; after ``prune_after`` iterations only the best
``keep`` starts go on; the best few distinct optima are then polished with scipy L-BFGS-B (analytic gradient,
tight tolerances), and the best polished optimum is the answer.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np

PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
BESIROGLU_GRID = {
    "a": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
    "b": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
    "e": [-1.0, -0.5, 0.0, 0.5, 1.0],
    "alpha": [0.0, 0.5, 1.0, 1.5, 2.0],
    "beta": [0.0, 0.5, 1.0, 1.5, 2.0],
}
DEFAULT_SCHEDULE = ((4, 1000), (4, 250), (4, 64))
IRLS_KAPPA = 0.3  # IRLS weight on points outside the Huber zone: < 1 converges faster on L1-like fits
POLISH_OPTIONS = {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000, "maxls": 50}


def make_grid(spec: Mapping[str, Sequence[float]] | None = None) -> np.ndarray:
    """The (n_starts, 5) array of starts: the product of the values per parameter (default: Besiroglu et al.'s 4,500)."""
    spec = dict(BESIROGLU_GRID if spec is None else spec)
    missing = [p for p in PARAM_NAMES if p not in spec]
    if missing:
        raise ValueError(f"start grid lacks {', '.join(missing)}")
    return np.array(list(product(*(np.atleast_1d(np.asarray(spec[p], float)) for p in PARAM_NAMES))), dtype=float)


def bounds_array(bounds: Mapping[str, Sequence[float | None] | None] | None) -> np.ndarray:
    """(5, 2) array of [low, high] per parameter; None or a missing entry means unbounded."""
    out = np.tile([-np.inf, np.inf], (5, 1)).astype(float)
    for i, name in enumerate(PARAM_NAMES):
        pair = (bounds or {}).get(name)
        if pair is not None:
            low, high = pair
            out[i] = [-np.inf if low is None else float(low), np.inf if high is None else float(high)]
    if np.any(out[:, 0] >= out[:, 1]):
        raise ValueError(f"bounds must have low < high: {out.tolist()}")
    return out


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss of residuals (0.5 r^2 inside |r| <= delta, linear outside)."""
    absr = np.abs(r)
    return np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta))


def predict_log_loss(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """log L(N, D) as logsumexp(a - alpha log N, b - beta log D, e); theta (..., 5) broadcasts against the data."""
    theta = np.asarray(theta, float)
    a, b, e, alpha, beta = (theta[..., i, None] for i in range(5))
    t1 = a - alpha * log_n
    t2 = b - beta * log_d
    m = np.maximum(np.maximum(t1, t2), e)
    return m + np.log(np.exp(t1 - m) + np.exp(t2 - m) + np.exp(e - m))


def objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float,
              weights: np.ndarray | None = None) -> np.ndarray:
    """Sum of Huber losses of log-prediction minus log L (per row of theta when batched)."""
    h = huber(predict_log_loss(theta, log_n, log_d) - log_l, delta)
    return (h if weights is None else h * weights).sum(axis=-1)


def _terms(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, ...]:
    """Prediction and the softmax weights of the three terms (batched over theta's rows)."""
    a, b, e, alpha, beta = (theta[..., i, None] for i in range(5))
    x1 = np.multiply(alpha, -log_n)
    x1 += a
    x2 = np.multiply(beta, -log_d)
    x2 += b
    m = np.maximum(x1, x2)
    np.maximum(m, e, out=m)
    x1 -= m
    np.exp(x1, out=x1)
    x2 -= m
    np.exp(x2, out=x2)
    x3 = e - m
    np.exp(x3, out=x3)
    s = x1 + x2
    s += x3
    pred = np.log(s)
    pred += m
    np.reciprocal(s, out=s)
    x1 *= s
    x2 *= s
    x3 *= s
    return pred, x1, x2, x3


def objective_and_grad(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float,
                       weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Objective and its analytic gradient for one theta (for scipy)."""
    pred, p1, p2, p3 = (t[0] for t in _terms(np.asarray(theta, float)[None, :], log_n, log_d))
    r = pred - log_l
    h = huber(r, delta)
    psi = np.clip(r, -delta, delta)
    if weights is not None:
        h = h * weights
        psi = psi * weights
    grad = np.array([psi @ p1, psi @ p2, psi @ p3, -(psi * p1) @ log_n, -(psi * p2) @ log_d])
    return float(h.sum()), grad


def _lm_quantities(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float,
                   weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched objective (S,), gradient (S, 5) and IRLS Gauss-Newton matrix J^T W J (S, 5, 5).

    With J = [p1, p2, p3, -p1 log N, -p2 log D] (p: the softmax weights of the three terms) every entry is a sum of
    one of nine products against 1, log N, log D or their squares: one (9S x n) @ (n x 6) matrix product.
    """
    pred, p1, p2, p3 = _terms(theta, log_n, log_d)
    r = pred
    r -= log_l
    absr = np.abs(r)
    inside = absr <= delta
    h = np.where(inside, 0.5 * r * r, delta * (absr - 0.5 * delta))
    psi = np.clip(r, -delta, delta)
    np.maximum(absr, 1e-300, out=absr)
    w = np.where(inside, 1.0, IRLS_KAPPA * delta / absr)  # psi(r)/r: the IRLS weight
    if weights is not None:
        h *= weights
        psi *= weights
        w *= weights
    s_count, n = p1.shape
    k = np.empty((9, s_count, n))
    u = np.multiply(w, p1, out=k[8])
    np.multiply(u, p1, out=k[0])  # w p1 p1
    np.multiply(u, p2, out=k[1])  # w p1 p2
    np.multiply(u, p3, out=k[2])  # w p1 p3
    v = w * p2
    np.multiply(v, p2, out=k[3])  # w p2 p2
    np.multiply(v, p3, out=k[4])  # w p2 p3
    np.multiply(w * p3, p3, out=k[5])  # w p3 p3
    np.multiply(psi, p1, out=k[6])
    np.multiply(psi, p2, out=k[7])
    k[8] = psi
    basis = _basis(log_n, log_d)
    sums = (k.reshape(9 * s_count, n) @ basis).reshape(9, s_count, 6)  # columns: 1, lnN, lnD, lnN^2, lnD^2, lnN lnD
    hess = np.empty((s_count, 5, 5))
    one, ln_, ld_, ln2, ld2, lnd = range(6)
    entries = {
        (0, 0): sums[0, :, one], (0, 1): sums[1, :, one], (0, 2): sums[2, :, one],
        (0, 3): -sums[0, :, ln_], (0, 4): -sums[1, :, ld_],
        (1, 1): sums[3, :, one], (1, 2): sums[4, :, one], (1, 3): -sums[1, :, ln_], (1, 4): -sums[3, :, ld_],
        (2, 2): sums[5, :, one], (2, 3): -sums[2, :, ln_], (2, 4): -sums[4, :, ld_],
        (3, 3): sums[0, :, ln2], (3, 4): sums[1, :, lnd], (4, 4): sums[3, :, ld2],
    }
    for (i, j), value in entries.items():
        hess[:, i, j] = value
        hess[:, j, i] = value
    grad = np.stack([sums[6, :, one], sums[7, :, one], sums[8, :, one] - sums[6, :, one] - sums[7, :, one],
                     -sums[6, :, ln_], -sums[7, :, ld_]], axis=1)
    return h.sum(axis=1), grad, hess


def _basis(log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """(n, 6) columns 1, log N, log D, log N^2, log D^2, log N log D."""
    return np.column_stack([np.ones_like(log_n), log_n, log_d, log_n**2, log_d**2, log_n * log_d])


def batched_lm(theta0: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float, *,
               weights: np.ndarray | None = None, iters: int = 50, bounds: np.ndarray | None = None,
               chunk: int = 256, rtol: float = 1e-13, tick=None) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on every start at once (in cache-sized chunks); returns (theta (S, 5), objective (S,));
    ``tick(k)`` is called after each chunk of k starts (a progress bar)."""
    theta0 = np.asarray(theta0, float)
    thetas, objs = [], []
    for lo in range(0, len(theta0), chunk):
        w = weights if weights is None or np.ndim(weights) == 1 else weights[lo:lo + chunk]
        t, f = _lm_chunk(theta0[lo:lo + chunk], log_n, log_d, log_l, delta, w, iters, bounds, rtol)
        thetas.append(t)
        objs.append(f)
        if tick is not None:
            tick(len(t))
    if not thetas:
        return np.empty((0, 5)), np.empty(0)
    return np.concatenate(thetas), np.concatenate(objs)


def _lm_chunk(theta0: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float,
              weights: np.ndarray | None, iters: int, bounds: np.ndarray | None, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """LM iterations for one chunk of starts; monotone per start, a start stops once its steps stop paying."""
    theta = np.array(theta0, float, copy=True)
    if bounds is not None:
        theta = np.clip(theta, bounds[:, 0], bounds[:, 1])
    s_count = len(theta)
    lam = np.full(s_count, 1e-3)
    f, g, h = _lm_quantities(theta, log_n, log_d, log_l, delta, weights)
    active = np.isfinite(f)
    eye = np.eye(5)
    for _ in range(iters):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        w_idx = weights if weights is None or weights.ndim == 1 else weights[idx]
        hh = h[idx]
        diag = np.einsum("sii->si", hh)
        damped = hh + lam[idx, None, None] * (diag[:, :, None] * eye + 1e-12 * eye)
        try:
            step = np.linalg.solve(damped, -g[idx][..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -g[idx] / (np.maximum(diag, 1e-12) * (1 + lam[idx, None]))
        new = theta[idx] + step
        if bounds is not None:
            new = np.clip(new, bounds[:, 0], bounds[:, 1])
        f_new, g_new, h_new = _lm_quantities(new, log_n, log_d, log_l, delta, w_idx)
        ok = np.isfinite(f_new) & (f_new <= f[idx])
        acc = idx[ok]
        gain = f[acc] - f_new[ok]
        stalled = gain <= rtol * np.abs(f[acc])
        theta[acc], f[acc], g[acc], h[acc] = new[ok], f_new[ok], g_new[ok], h_new[ok]
        lam[acc] = np.maximum(lam[acc] / 3.0, 1e-9)
        rej = idx[~ok]
        lam[rej] *= 4.0
        active[acc[stalled]] = False
        active[rej[lam[rej] > 1e10]] = False
    return theta, f


def polish(theta0: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float,
           bounds: np.ndarray | None = None, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """scipy L-BFGS-B from one start with the analytic gradient and tight tolerances."""
    from scipy.optimize import minimize

    scipy_bounds = None if bounds is None else [(None if np.isinf(lo) else lo, None if np.isinf(hi) else hi) for lo, hi in bounds]
    res = minimize(objective_and_grad, np.asarray(theta0, float), args=(log_n, log_d, log_l, delta, weights), jac=True,
                   method="L-BFGS-B", bounds=scipy_bounds, options=POLISH_OPTIONS)
    return np.asarray(res.x, float), float(res.fun)


@dataclass
class ParametricFit:
    """The best optimum of a multi-start fit, with the distinct runner-up optima and notes."""

    theta: np.ndarray
    objective: float
    delta: float
    n_points: int
    n_starts: int
    top: np.ndarray  # (k, 6): the polished distinct optima (theta, objective), best first
    warnings: list[str] = field(default_factory=list)

    @property
    def params(self) -> dict[str, float]:
        """E, A, B, alpha, beta, a, b (the compute-optimal exponents) and the raw log-parameters."""
        return parameters(self.theta)


def parameters(theta: Sequence[float]) -> dict[str, float]:
    """Natural parameters of theta: E, A, B, alpha, beta, exponents a, b and G."""
    la, lb, le, alpha, beta = (float(v) for v in theta)
    total = alpha + beta
    return {"E": float(np.exp(le)), "A": float(np.exp(la)), "B": float(np.exp(lb)), "alpha": alpha, "beta": beta,
            "a": beta / total if total else float("nan"), "b": alpha / total if total else float("nan"),
            "G": allocation_constant(theta), "log_A": la, "log_B": lb, "log_E": le}


def allocation_constant(theta: Sequence[float]) -> float:
    """G = (alpha A / (beta B))^(1/(alpha+beta)) of the compute-optimal allocation."""
    la, lb, _, alpha, beta = (float(v) for v in theta)
    if alpha <= 0 or beta <= 0:
        return float("nan")
    return float(np.exp((np.log(alpha) + la - np.log(beta) - lb) / (alpha + beta)))


def compute_optimal(theta: Sequence[float], compute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N*(C) = G (C/6)^a and D*(C) = G^-1 (C/6)^b for C = 6 N D."""
    p = parameters(theta)
    c6 = np.asarray(compute, float) / 6.0
    return p["G"] * c6 ** p["a"], c6 ** p["b"] / p["G"]


def _log_data(n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logs of the data, checked positive and finite."""
    arrays = [np.asarray(x, float) for x in (n, d, loss)]
    for name, x in zip(("N", "D", "loss"), arrays):
        if x.ndim != 1 or not np.all(np.isfinite(x)) or np.any(x <= 0):
            raise ValueError(f"{name} must be a 1-D array of positive finite numbers")
    if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]):
        raise ValueError("N, D and loss must have the same length")
    return tuple(np.log(x) for x in arrays)  # type: ignore[return-value]


MIN_VALUES = 3  # distinct N and distinct D that the fit needs (two would leave E, A, alpha or E, B, beta traded off)
COLLINEAR_RTOL = 1e-6  # log N and log D collinear when the smaller singular value of their centred spread is below this


def identifiability(n: np.ndarray, d: np.ndarray) -> str | None:
    """None when (N, D) can identify E, A, B, alpha and beta, else what is missing (with counts): >= 3 distinct N,
    >= 3 distinct D, more points than parameters, and N and D not collinear in log space (D = k N^s on every point
    mixes the N and D terms: the allocation a = beta / (alpha + beta) is then unknown)."""
    log_n, log_d = np.log(np.asarray(n, float)), np.log(np.asarray(d, float))
    counts = {"N": len(np.unique(np.round(log_n, 9))), "D": len(np.unique(np.round(log_d, 9)))}
    short = [f"{k} distinct {name}" for name, k in counts.items() if k < MIN_VALUES]
    if short:
        return (f"{' and '.join(short)} in {len(log_n)} points; approach 3 needs >= {MIN_VALUES} distinct values of "
                f"both N and D (spread in N and in D)")
    if len(log_n) <= len(PARAM_NAMES):
        return f"{len(log_n)} points for {len(PARAM_NAMES)} parameters; approach 3 needs >= {len(PARAM_NAMES) + 1}"
    spread = np.column_stack([log_n - log_n.mean(), log_d - log_d.mean()])
    sv = np.linalg.svd(spread, compute_uv=False)
    if sv[1] <= COLLINEAR_RTOL * sv[0]:
        slope = float(np.polyfit(log_n, log_d, 1)[0])
        return (f"log N and log D are collinear on all {len(log_n)} points (D ~ N^{slope:.3g}; {counts['N']} distinct N, "
                f"{counts['D']} distinct D); approach 3 needs N and D varied independently")
    return None


def _distinct(thetas: np.ndarray, objs: np.ndarray, k: int, tol: float = 1e-4) -> np.ndarray:
    """Indices of up to k rows, best objective first, whose parameters differ from the ones already taken."""
    order = np.argsort(objs, kind="stable")
    taken: list[int] = []
    for i in order:
        if not np.isfinite(objs[i]):
            continue
        if all(np.max(np.abs(thetas[i] - thetas[j]) / np.maximum(1.0, np.abs(thetas[j]))) > tol for j in taken):
            taken.append(int(i))
        if len(taken) >= k:
            break
    return np.array(taken, int)


def fit_parametric(n: np.ndarray, d: np.ndarray, loss: np.ndarray, *, delta: float = 1e-3,
                   grid: np.ndarray | None = None, bounds: np.ndarray | None = None,
                   schedule: Sequence[Sequence[int]] = DEFAULT_SCHEDULE, iters: int = 200, n_polish: int = 5,
                   weights: np.ndarray | None = None, tick=None) -> ParametricFit:
    """Multi-start fit: batched LM on all starts, pruned by ``schedule`` ([iterations, survivors] pairs), then the
    survivors run to convergence and the best distinct few are polished with scipy L-BFGS-B (``tick(k)``: k starts
    of one stage done; the total is ``start_work(len(grid), schedule)``)."""
    log_n, log_d, log_l = _log_data(n, d, loss)
    starts = make_grid() if grid is None else np.asarray(grid, float)
    theta, f = starts, np.zeros(len(starts))
    for steps, survivors in schedule:
        theta, f = batched_lm(theta, log_n, log_d, log_l, delta, weights=weights, iters=int(steps), bounds=bounds,
                              tick=tick)
        order = np.argsort(np.where(np.isfinite(f), f, np.inf), kind="stable")[:int(survivors)]
        theta, f = theta[order], f[order]
    theta, f = batched_lm(theta, log_n, log_d, log_l, delta, weights=weights, iters=iters, bounds=bounds, tick=tick)
    chosen = _distinct(theta, f, n_polish, tol=1e-3)
    thetas, objs = theta[chosen].copy(), f[chosen].copy()
    for j, i in enumerate(chosen):
        t_pol, f_pol = polish(theta[i], log_n, log_d, log_l, delta, bounds, weights)
        if f_pol <= objs[j]:
            thetas[j], objs[j] = t_pol, f_pol
    keep_idx = _distinct(thetas, objs, n_polish, tol=1e-4)
    top = np.column_stack([thetas[keep_idx], objs[keep_idx]])
    fit = ParametricFit(theta=top[0, :5].copy(), objective=float(top[0, 5]), delta=delta, n_points=len(log_n),
                        n_starts=len(starts), top=top)
    fit.warnings.extend(fit_warnings(fit, bounds))
    return fit


def start_work(n_starts: int, schedule: Sequence[Sequence[int]] = DEFAULT_SCHEDULE) -> int:
    """How many start-stages ``fit_parametric`` runs: the starts entering each stage and the final run."""
    total, count = 0, int(n_starts)
    for _, survivors in schedule:
        total += count
        count = min(count, int(survivors))
    return total + count


def fit_warnings(fit: ParametricFit, bounds: np.ndarray | None, agree_rtol: float = 1e-3) -> list[str]:
    """Notes when the best fit sits on a bound or the next-best optimum fits as well with different parameters."""
    notes = []
    if bounds is not None:
        for name, value, pair in zip(PARAM_NAMES, fit.theta, bounds):
            for side, edge in zip(("lower", "upper"), pair):
                if np.isfinite(edge) and abs(value - edge) <= 1e-6 * max(1.0, abs(edge)):
                    notes.append(f"approach 3: the best fit sits on the {side} bound of {name} ({edge:g}); widen approach3.bounds or distrust it")
    for other in fit.top[1:]:  # the best is fit.top[0]
        close = other[5] <= fit.top[0, 5] * (1 + agree_rtol) + 1e-15
        differ = np.max(np.abs(other[:5] - fit.top[0, :5]) / np.maximum(1e-3, np.abs(fit.top[0, :5]))) > 0.01
        if close and differ:
            diffs = ", ".join(f"{n}={v:.4g}" for n, v in zip(PARAM_NAMES, other[:5]))
            notes.append(f"approach 3: the top starts disagree: another optimum ({diffs}) fits within "
                         f"{agree_rtol:.0e} of the best objective; the parameters are poorly identified")
            break
    return notes


def fit_scipy_loop(n: np.ndarray, d: np.ndarray, loss: np.ndarray, *, delta: float = 1e-3,
                   grid: np.ndarray | None = None, bounds: np.ndarray | None = None, jac: bool = False,
                   options: Mapping[str, Any] | None = None) -> tuple[np.ndarray, float]:
    """The straightforward reference: scipy L-BFGS-B from every start, best optimum kept (slow)."""
    from scipy.optimize import minimize

    log_n, log_d, log_l = _log_data(n, d, loss)
    starts = make_grid() if grid is None else np.asarray(grid, float)
    scipy_bounds = None if bounds is None else [(None if np.isinf(lo) else lo, None if np.isinf(hi) else hi) for lo, hi in bounds]
    best_theta, best_f = None, np.inf
    fun = objective_and_grad if jac else lambda t, *data: float(objective(t, *data))
    for x0 in starts:
        res = minimize(fun, x0, args=(log_n, log_d, log_l, delta), jac=bool(jac), method="L-BFGS-B",
                       bounds=scipy_bounds, options=dict(options or {}))
        if np.isfinite(res.fun) and res.fun < best_f:
            best_theta, best_f = np.asarray(res.x, float), float(res.fun)
    if best_theta is None:
        raise ValueError("no start converged to a finite objective")
    return best_theta, best_f


def bootstrap_starts(fit: ParametricFit, spread: Mapping[str, float] | None = None) -> np.ndarray:
    """Warm starts for refits: the full-data optimum plus a small grid around it (corners of +-spread)."""
    spread = dict(spread or {"alpha": 0.05, "beta": 0.05})
    offsets = np.array(list(product(*([-1.0, 1.0] if spread.get(p, 0) else [0.0] for p in PARAM_NAMES))))
    scale = np.array([float(spread.get(p, 0.0)) for p in PARAM_NAMES])
    return np.vstack([fit.theta[None, :], fit.theta + offsets * scale])


def refit_weighted(n: np.ndarray, d: np.ndarray, loss: np.ndarray, fit: ParametricFit, counts: np.ndarray, *,
                   iters: int = 60, bounds: np.ndarray | None = None, chunk: int = 250, starts: np.ndarray | None = None,
                   tick=None) -> np.ndarray:
    """(R, 5) refits with per-point weights (one row of ``counts`` per refit), warm-started, in one batched LM."""
    log_n, log_d, log_l = _log_data(n, d, loss)
    starts = bootstrap_starts(fit) if starts is None else np.asarray(starts, float)
    k = len(starts)
    out = np.empty((len(counts), 5))
    for lo in range(0, len(counts), chunk):
        cw = counts[lo:lo + chunk]
        r = len(cw)
        theta, f = batched_lm(np.tile(starts, (r, 1)), log_n, log_d, log_l, fit.delta, weights=np.repeat(cw, k, axis=0),
                              iters=iters, bounds=bounds)
        f = np.where(np.isfinite(f), f, np.inf).reshape(r, k)
        out[lo:lo + r] = theta.reshape(r, k, 5)[np.arange(r), f.argmin(axis=1)]
        if tick is not None:
            tick(r)
    return out


def bootstrap_parametric(n: np.ndarray, d: np.ndarray, loss: np.ndarray, fit: ParametricFit, *, n_boot: int = 1000,
                         seed: int = 0, iters: int = 60, bounds: np.ndarray | None = None, chunk: int = 250,
                         starts: np.ndarray | None = None, rng: np.random.Generator | None = None,
                         tick=None) -> np.ndarray:
    """(n_boot, 5) refits on points resampled with replacement, warm-started, all replicates in one batched LM
    (``rng``: the stream to draw from; None: ``default_rng(seed)``)."""
    m = len(np.asarray(n))
    rng = np.random.default_rng(seed) if rng is None else rng
    counts = np.stack([np.bincount(rng.integers(0, m, m), minlength=m) for _ in range(n_boot)]).astype(float)
    return refit_weighted(n, d, loss, fit, counts.reshape(n_boot, m), iters=iters, bounds=bounds, chunk=chunk,
                          starts=starts, tick=tick)


def jackknife_parametric(n: np.ndarray, d: np.ndarray, loss: np.ndarray, fit: ParametricFit, *, iters: int = 60,
                         bounds: np.ndarray | None = None, max_groups: int = 200) -> np.ndarray:
    """(g, 5) leave-one-out refits for BCa's acceleration: one per point, or with more than ``max_groups`` points
    one per group of points (point i in group i mod max_groups: the grouped jackknife)."""
    m = len(np.asarray(n))
    groups = min(m, max_groups)
    counts = (np.arange(m)[None, :] % groups != np.arange(groups)[:, None]).astype(float)
    return refit_weighted(n, d, loss, fit, counts, iters=iters, bounds=bounds)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> list[float]:
    """[low, high] percentile interval of the finite samples (NaNs when there are none)."""
    x = np.asarray(samples, float)
    x = x[np.isfinite(x)]
    if not len(x):
        return [float("nan"), float("nan")]
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(x, tail)), float(np.percentile(x, 100 - tail))]


def natural_samples(thetas: np.ndarray) -> dict[str, np.ndarray]:
    """Arrays of E, A, B, alpha, beta, a, b for bootstrap thetas."""
    la, lb, le, alpha, beta = (thetas[:, i] for i in range(5))
    total = alpha + beta
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"E": np.exp(le), "A": np.exp(la), "B": np.exp(lb), "alpha": alpha, "beta": beta,
                "a": beta / total, "b": alpha / total}
