"""Infinitely wide networks as kernels: dual activations, the NNGP and neural tangent kernel (NTK)
recursions over depth, and the kernel classifiers they define.

Conventions (those of Radhakrishnan, Belkin and Uhler, 2023). Inputs lie on the unit sphere, so a
pair of inputs is described by its cosine ``rho = x . z``. A network has ``depth`` hidden layers,
no biases, weights N(0, 1) in the NTK parametrization (layer l+1 sees W a / sqrt(width)) and an
activation ``phi`` normalized so that E[phi(u)^2] = 1 for u ~ N(0, 1). Its *dual*

    xi(rho) = E[phi(u) phi(v)],   (u, v) standard Gaussians with correlation rho,

maps the correlation of two inputs at one layer to the next, xi(1) = 1, and xi'(rho) =
E[phi'(u) phi'(v)]. At infinite width the network's Gaussian-process kernel (NNGP) and its neural
tangent kernel obey (Jacot et al., 2018; Lee et al., 2018)

    Sigma^(0) = rho,                    Sigma^(l) = xi(Sigma^(l-1)),
    Theta^(0) = rho,                    Theta^(l) = Sigma^(l) + Theta^(l-1) xi'(Sigma^(l-1)).

A trained infinitely wide network is kernel regression (interpolation) with Theta^(depth); its
classifier is the sign of that regression.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from ..core.params import ParameterError, check_choice, check_positive

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------
# Dual activations
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DualActivation:
    """An activation ``phi`` (normalized, E[phi(u)^2] = 1) with its dual ``xi`` and ``xi'``.

    ``phi`` and ``dphi`` act on torch tensors (for finite networks); ``dual`` and ``dual_prime`` act
    on tensors of correlations in [-1, 1].
    """
    name: str
    phi: Callable[[Tensor], Tensor]
    dphi: Callable[[Tensor], Tensor]
    dual: Callable[[Tensor], Tensor]
    dual_prime: Callable[[Tensor], Tensor]
    note: str = field(default="", compare=False)
    leading: tuple[float, int] | None = None  # xi(rho) ~ c rho^k as rho -> 0 (None when xi(0) != 0)

    def slope(self, rho: float) -> float:
        """xi'(rho) as a Python float."""
        return float(self.dual_prime(torch.tensor([float(rho)], dtype=torch.float64))[0])

    def value(self, rho: float) -> float:
        """xi(rho) as a Python float."""
        return float(self.dual(torch.tensor([float(rho)], dtype=torch.float64))[0])


def relu_dual(rho: Tensor) -> Tensor:
    """Normalized arc-cosine kernel of degree 1 (Cho and Saul, 2009): the dual of sqrt(2) relu,
    (sqrt(1 - rho^2) + rho (pi - arccos rho)) / pi."""
    rho = rho.clamp(-1.0, 1.0)
    return (torch.sqrt((1 - rho * rho).clamp_min(0.0)) + rho * (math.pi - torch.arccos(rho))) / math.pi


def relu_dual_prime(rho: Tensor) -> Tensor:
    """Derivative of :func:`relu_dual`, the arc-cosine kernel of degree 0: (pi - arccos rho) / pi."""
    return (math.pi - torch.arccos(rho.clamp(-1.0, 1.0))) / math.pi


def _relu() -> DualActivation:
    return DualActivation(
        "relu", lambda z: math.sqrt(2.0) * torch.relu(z), lambda z: math.sqrt(2.0) * (z > 0).to(z.dtype),
        relu_dual, relu_dual_prime, "sqrt(2) max(z, 0); dual: arc-cosine kernel", None)


def _erf() -> DualActivation:
    c = math.asin(2 / 3)  # E[erf(u)^2] = (2/pi) asin(2/3); the dual of erf is (2/pi) asin(2 rho / 3)
    scale = 1 / math.sqrt(2 / math.pi * c)
    return DualActivation(
        "erf", lambda z: scale * torch.erf(z), lambda z: scale * 2 / math.sqrt(math.pi) * torch.exp(-z * z),
        lambda r: torch.asin(2 * r.clamp(-1, 1) / 3) / c,
        lambda r: (2 / 3) / torch.sqrt(1 - 4 * r.clamp(-1, 1) ** 2 / 9) / c,
        "erf(z), rescaled; dual: asin(2 rho / 3) / asin(2 / 3)", ((2 / 3) / c, 1))


def sine_activation(a: float) -> DualActivation:
    """phi(z) = sqrt(2 / (1 - e^(-2a))) sin(sqrt(a) z), whose dual is sinh(a rho) / sinh(a).

    The paper's simple activations: xi'(0) = a / sinh(a), xi'(1) = a coth(a).
    """
    check_positive("a", a)
    c = math.sqrt(2 / (1 - math.exp(-2 * a)))
    s = math.sqrt(a)
    return DualActivation(
        f"sine({a:g})", lambda z: c * torch.sin(s * z), lambda z: c * s * torch.cos(s * z),
        lambda r: torch.sinh(a * r) / math.sinh(a), lambda r: a * torch.cosh(a * r) / math.sinh(a),
        f"sqrt(2/(1-exp(-2a))) sin(sqrt(a) z), a = {a:g}; dual: sinh(a rho) / sinh(a)", (a / math.sinh(a), 1))


def hermite(k: int, z: Tensor) -> Tensor:
    """Normalized probabilists' Hermite polynomial He_k(z) / sqrt(k!) (orthonormal under N(0, 1))."""
    h_prev, h = torch.ones_like(z), z
    if k == 0:
        return h_prev
    for j in range(1, k):
        h_prev, h = h, z * h - j * h_prev
    return h / math.sqrt(math.factorial(k))


def hermite_activation(coeffs: dict[int, float], name: str | None = None) -> DualActivation:
    """phi = sum_k sqrt(c_k) He_k / sqrt(k!), whose dual is the polynomial sum_k c_k rho^k.

    ``coeffs`` maps degrees k >= 1 to weights c_k >= 0 that sum to one (so that xi(1) = 1).
    """
    if not coeffs or any(int(k) != k or k < 1 for k in coeffs) or any(c < 0 for c in coeffs.values()):
        raise ParameterError("coeffs must map Hermite degrees k >= 1 to non-negative weights.")
    total = sum(coeffs.values())
    if abs(total - 1) > 1e-9:
        raise ParameterError(f"coeffs must sum to 1 so that the dual has xi(1) = 1; they sum to {total:g}.")
    items = sorted((int(k), float(c)) for k, c in coeffs.items() if c > 0)

    def phi(z):
        return sum(math.sqrt(c) * hermite(k, z) for k, c in items)

    def dphi(z):  # d/dz He_k / sqrt(k!) = sqrt(k) He_{k-1} / sqrt((k-1)!)
        return sum(math.sqrt(c * k) * hermite(k - 1, z) for k, c in items)

    label = name or "hermite(" + ", ".join(f"{c:g} h{k}" for k, c in items) + ")"
    poly = " + ".join(f"{c:g} rho^{k}" for k, c in items)
    top = items[-1][0]
    coef = [0.0] * (top + 1)
    for k, c in items:
        coef[k] = c

    def horner(a, r):  # sum_j a[j] r^j, by Horner's rule (much faster than powers on large tensors)
        out = torch.full_like(r, a[-1])
        for c in reversed(a[:-1]):
            out = out.mul_(r).add_(c) if c else out.mul_(r)
        return out

    dcoef = [j * coef[j] for j in range(1, top + 1)]
    return DualActivation(label, phi, dphi, lambda r: horner(coef, r),
                          lambda r: horner(dcoef, r) if len(dcoef) > 1 else torch.full_like(r, dcoef[0]),
                          f"sum of normalized Hermite polynomials; dual: {poly}", (items[0][1], items[0][0]))


# The paper's activations whose infinitely deep kernel classifier is consistent for data on the
# sphere S^(dim-1) in R^dim: the dual is a polynomial with xi'(0) = xi'(1)^(-(dim-1)/2).
CONSISTENT_DUALS = {2: {1: 0.5, 7: 0.5}, 3: {1: 0.5, 3: 0.5}, 5: {1: 0.25, 2: 0.5, 3: 0.25},
                    9: {1: 1 / 16, 2: 7 / 8, 3: 1 / 16}}


def consistent_activation(dim: int) -> DualActivation:
    """The paper's Hermite-polynomial activation that makes the infinitely deep network consistent for
    inputs on the sphere in R^dim (dim in 2, 3, 5, 9)."""
    check_choice("dim", dim, CONSISTENT_DUALS)
    return hermite_activation(CONSISTENT_DUALS[dim], name=f"consistent for S^{dim - 1}")


def gauss_dual(f: Callable, g: Callable, rho, n_points: int = 64) -> Tensor:
    """E[f(u) g(v)] for standard Gaussians (u, v) with correlation ``rho``, by two-dimensional
    Gauss-Hermite quadrature (u = t1, v = rho t1 + sqrt(1 - rho^2) t2). ``f`` and ``g`` are torch
    functions; ``rho`` may be a number or a 1-d array. Returns a float64 tensor."""
    t, w = np.polynomial.hermite_e.hermegauss(n_points)
    t, w = torch.tensor(t), torch.tensor(w / w.sum())
    rho = torch.atleast_1d(torch.as_tensor(rho, dtype=torch.float64))
    u = t[None, :, None]
    v = rho[:, None, None] * u + torch.sqrt((1 - rho ** 2).clamp_min(0))[:, None, None] * t[None, None, :]
    return torch.einsum("i,j,rij->r", w, w, f(u) * g(v))


def numeric_activation(name: str, f: Callable, df: Callable, n_grid: int = 2049, n_points: int = 96) -> DualActivation:
    """A dual computed numerically, for activations with no closed form.

    ``f`` and ``df`` are torch functions (the raw activation and its derivative). The activation is
    rescaled to unit second moment; its dual and the dual's derivative are tabulated by
    :func:`gauss_dual` on a grid of correlations (denser near +-1) and interpolated linearly.
    """
    scale = 1 / math.sqrt(float(gauss_dual(f, f, 1.0, n_points)[0]))
    grid = torch.sin(math.pi / 2 * torch.linspace(-1, 1, n_grid, dtype=torch.float64))  # dense near +-1
    val = gauss_dual(f, f, grid, n_points) * scale ** 2
    der = gauss_dual(df, df, grid, n_points) * scale ** 2
    val[-1] = 1.0

    def interp(table):
        def fn(r):
            r = r.clamp(-1, 1)
            gg, tt = grid.to(r.device), table.to(r.device)
            i = torch.searchsorted(gg, r.contiguous()).clamp(1, len(gg) - 1)
            x0, x1, y0, y1 = gg[i - 1], gg[i], tt[i - 1], tt[i]
            return y0 + (y1 - y0) * (r - x0) / (x1 - x0)
        return fn

    xi0 = float(gauss_dual(f, f, 0.0, n_points)[0]) * scale ** 2
    lead = (float(gauss_dual(df, df, 0.0, n_points)[0]) * scale ** 2, 1) if abs(xi0) < 1e-12 else None
    return DualActivation(name, lambda z: scale * f(z), lambda z: scale * df(z), interp(val), interp(der),
                          f"{name}, rescaled to unit second moment; dual by quadrature", lead)


def _tanh() -> DualActivation:
    return numeric_activation("tanh", torch.tanh, lambda z: 1 - torch.tanh(z) ** 2)


_BUILTIN = {"relu": _relu, "erf": _erf, "tanh": _tanh, "hermite3": lambda: hermite_activation({3: 1.0}, "hermite3"),
            "hermite2": lambda: hermite_activation({2: 1.0}, "hermite2")}


def get_activation(name) -> DualActivation:
    """A :class:`DualActivation` by name: 'relu', 'erf', 'tanh', 'hermite2', 'hermite3',
    'sine:<a>' (see :func:`sine_activation`) or 'consistent:<dim>' (see :func:`consistent_activation`).
    A DualActivation passes through unchanged."""
    if isinstance(name, DualActivation):
        return name
    if isinstance(name, str) and name.startswith("sine:"):
        return sine_activation(float(name.split(":", 1)[1]))
    if isinstance(name, str) and name.startswith("consistent:"):
        return consistent_activation(int(name.split(":", 1)[1]))
    if name not in _BUILTIN:
        raise ParameterError(f"activation must be one of {', '.join(map(repr, _BUILTIN))}, 'sine:<a>' or "
                             f"'consistent:<dim>'; got {name!r}.")
    return _builtin(name)


@functools.lru_cache(maxsize=None)
def _builtin(name: str) -> DualActivation:
    return _BUILTIN[name]()  # cached: the tanh table takes a second to build


# ----------------------------------------------------------------------------------------------
# The recursions
# ----------------------------------------------------------------------------------------------

def cosines(X1: Tensor, X2: Tensor | None = None) -> Tensor:
    """Cosines between the rows of X1 and X2 (X1 with itself when X2 is None, diagonal exactly 1), in
    float64, clipped to [-1, 1]."""
    X1 = torch.as_tensor(X1).to(torch.float64)
    X1 = X1 / X1.norm(dim=1, keepdim=True)
    if X2 is None:
        rho = (X1 @ X1.T).clamp(-1, 1)
        rho.fill_diagonal_(1.0)
        return rho
    X2 = torch.as_tensor(X2).to(device=X1.device, dtype=torch.float64)
    X2 = X2 / X2.norm(dim=1, keepdim=True)
    return (X1 @ X2.T).clamp(-1, 1)


def recursion(rho: Tensor, act, depths: Iterable[int], log: bool = False, progress: bool | str = False):
    """Yield ``(depth, Sigma, Theta)`` for each requested depth (ascending), running the NNGP and NTK
    recursions once from ``rho`` (a tensor of cosines) up to the largest depth.

    With ``log=True`` it yields ``(depth, log Sigma, log Theta)`` instead, computed in log space so
    that nothing underflows however deep the network (the kernels of activations with xi(0) = 0 decay
    like xi'(0)^depth off the diagonal, or faster). This needs ``rho >= 0`` (then every kernel value is
    non-negative, since a dual is a power series with non-negative coefficients); values of Sigma below
    e^-200 use the dual's leading term ``c rho^k``.

    ``progress`` shows a tqdm bar over the layers (a string names it).
    """
    act = get_activation(act)
    depths = sorted(set(int(d) for d in depths))
    if not depths or depths[0] < 0:
        raise ParameterError("depths must be non-negative integers.")
    if log and (rho < 0).any():
        raise ParameterError("the log-space recursion needs non-negative cosines (inputs in one orthant).")
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=depths[-1], desc=progress if isinstance(progress, str) else "layers", mininterval=1.0)
    relu = act.dual is relu_dual and not log
    c, k = act.leading if act.leading is not None else (1.0, 1)
    if log:
        a = torch.log(rho.to(torch.float64))  # log Sigma
    else:
        a = rho.to(torch.float64).clamp(-1, 1)  # Sigma
    b = a.clone()                               # Theta (or log Theta)
    layer = 0
    try:
        for target in depths:
            while layer < target:
                if relu:  # the arc-cosine step with few tensor operations (deep ReLU runs 10^5 layers)
                    slope = torch.arccos(a).neg_().add_(math.pi).div_(math.pi)          # xi'(Sigma)
                    new = (1 - a * a).clamp_min_(0).sqrt_().div_(math.pi).addcmul_(a, slope)
                    b.mul_(slope).add_(new)
                    a = new.clamp_(-1, 1)
                elif not log:
                    new = act.dual(a).clamp(-1, 1)
                    b = new + b * act.dual_prime(a)
                    a = new
                else:
                    small = a < -200.0
                    sig = torch.exp(a)
                    log_xi = torch.log(act.dual(sig).clamp(0, 1))
                    log_dxi = torch.log(act.dual_prime(sig).clamp_min(0))
                    if act.leading is not None:
                        log_xi = torch.where(small, math.log(c) + k * a, log_xi)
                        log_dxi = torch.where(small, math.log(c * k) + (k - 1) * a, log_dxi)
                    b = torch.logaddexp(log_xi, b + log_dxi)
                    a = log_xi
                layer += 1
                if bar is not None:
                    bar.update(1)
            yield layer, a.clone(), b.clone()
    finally:
        if bar is not None:
            bar.close()


def nngp_ntk(X1: Tensor, X2: Tensor | None, act, depth: int, log: bool = False) -> tuple[Tensor, Tensor]:
    """The NNGP kernel Sigma and the NTK Theta of an infinitely wide network with ``depth`` hidden
    layers and activation ``act`` (a name or a :class:`DualActivation`), between the rows of X1 and
    X2 (X1 with itself when X2 is None). Rows are projected onto the unit sphere. With ``log=True``
    returns their logarithms (see :func:`recursion`)."""
    check_positive("depth", depth, integer=True, allow_zero=True)
    (_, sigma, theta), = recursion(cosines(X1, X2), act, [depth], log=log)
    return sigma, theta


# ----------------------------------------------------------------------------------------------
# Kernel machines and the classical classifiers they turn into
# ----------------------------------------------------------------------------------------------

def kernel_regress(K_train: Tensor, y_train: Tensor, K_test: Tensor, ridge: float = 1e-12, log: bool = False,
                   normalize_rows: bool = False) -> Tensor:
    """Kernel (ridge)less regression: K_test (K_train + ridge I)^-1 y_train.

    ``K_test`` is (n_test, n_train). The system is rescaled by its largest diagonal entry first,
    since the NTK of a deep network can be astronomically large on the diagonal; ``ridge`` (relative to
    that entry) is a numerical jitter that keeps the solve defined for the finite-rank kernels of
    shallow polynomial networks (for full-rank kernels it changes nothing). With ``log=True`` the
    kernels are given as logarithms. ``normalize_rows`` divides each test row by its largest entry
    (a positive factor per test point: it keeps the sign of the prediction, and keeps test rows whose
    entries are all astronomically small from vanishing)."""
    K_train = K_train.to(torch.float64)
    K_test = K_test.to(torch.float64)
    if log:
        scale = K_train.diagonal().max()
        A = torch.exp(K_train - scale)
        B = K_test - (K_test.max(1, keepdim=True).values if normalize_rows else scale)
        B = torch.exp(B)
    else:
        scale = K_train.diagonal().abs().max()
        A = K_train / scale
        B = K_test / (K_test.abs().max(1, keepdim=True).values.clamp_min(1e-300) if normalize_rows else scale)
    if ridge:
        A = A + ridge * torch.eye(len(A), dtype=A.dtype, device=A.device)
    y = y_train.to(dtype=torch.float64, device=A.device)
    coef = torch.linalg.solve(A, y if y.ndim == 2 else y[:, None])
    out = B @ coef
    return out if y.ndim == 2 else out[:, 0]


def kernel_classify(K_train: Tensor, y_train: Tensor, K_test: Tensor, ridge: float = 1e-12, log: bool = False) -> Tensor:
    """Labels predicted by kernel regression on +-1 labels (two classes) or one-hot labels (several);
    ``y_train`` holds labels in {-1, +1}, or class indices 0..C-1 for C > 2 classes. Returns labels of
    the same kind. With ``log=True`` the kernels are logarithms (from ``recursion(..., log=True)``)."""
    y = torch.as_tensor(y_train).to(K_train.device)
    classes = torch.unique(y)
    if set(classes.tolist()) <= {-1, 1}:
        out = kernel_regress(K_train, y.double(), K_test, ridge, log=log, normalize_rows=True)
        return torch.where(out >= 0, 1, -1).to(y.dtype)
    onehot = torch.nn.functional.one_hot(y.long()).double()
    return kernel_regress(K_train, onehot, K_test, ridge, log=log, normalize_rows=True).argmax(1)


# ----------------------------------------------------------------------------------------------
# Finite networks, to check the recursions against
# ----------------------------------------------------------------------------------------------

def empirical_ntk(X: Tensor, act, width: int, depth: int, seed: int = 0, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """The NTK and the output covariance of one randomly initialized finite network of the kind the
    recursion describes (``depth`` hidden layers of ``width`` units, no biases, NTK parametrization,
    normalized activation), at the rows of X (projected to the unit sphere).

    Returns (Theta, Sigma_hat): Theta from the parameter Jacobian (torch.func.jacrev), Sigma_hat the
    empirical NNGP kernel phi(z^L) phi(z^L)' / width of the last hidden layer."""
    from torch.func import jacrev
    act = get_activation(act)
    check_positive("width", width, integer=True)
    check_positive("depth", depth, integer=True)
    dev = X.device
    X = (X / X.norm(dim=1, keepdim=True)).to(dtype)
    g = torch.Generator(device="cpu").manual_seed(seed)
    dims = [X.shape[1]] + [width] * depth + [1]
    params = {f"W{i}": torch.randn(b, a, generator=g, dtype=dtype).to(dev) for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))}

    def forward(p, x):
        h = x
        for i in range(len(dims) - 1):
            z = h @ p[f"W{i}"].T / (1.0 if i == 0 else math.sqrt(width))  # first layer: |x| = 1 gives unit variance
            h = act.phi(z) if i < len(dims) - 2 else z
        return h[..., 0]

    jac = jacrev(forward)(params, X)
    theta = sum(j.reshape(len(X), -1) @ j.reshape(len(X), -1).T for j in jac.values())
    h = X
    for i in range(depth):
        h = act.phi(h @ params[f"W{i}"].T / (1.0 if i == 0 else math.sqrt(width)))
    sigma_hat = h @ h.T / width
    return theta.double(), sigma_hat.double()
