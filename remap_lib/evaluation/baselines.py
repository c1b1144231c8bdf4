"""Peers of the network on identical splits: The Cannon and a χ² grid fit.

Both take spectra already on one instrument grid and continuum-normalized the same way
(:func:`remap_lib.spectra.preprocess.to_instrument`, as in :mod:`remap_lib.training.trainsets`), with an inverse
variance per pixel (0 = masked). Both have ``fit(flux, ivar, labels)`` and
``predict(flux, ivar) -> (n, 3)`` labels (Teff [K], log g, [Fe/H]); ``predict(..., return_sigma=True)``
also returns per-star 1-σ uncertainties (NaN where none could be had).

:class:`CannonBaseline`
    The Cannon (Ness et al. 2015) as implemented by ``annieslasso`` 0.2.96 (``import thecannon``,
    A. Casey): a quadratic polynomial in the three labels per pixel, with a per-pixel scatter,
    trained on the fine-tuning stars.
:class:`Chi2GridFit`
    χ² of each spectrum against every node of the synthetic grid (one matrix product), then a
    refinement between nodes by trilinear interpolation of the grid flux and a bounded
    optimizer; the uncertainty is the Δχ² = 1 (Gauss-Newton) error of the interpolated model.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy import optimize
from tqdm import tqdm

from remap_lib.constants import LABEL_NAMES

__all__ = ["CannonBaseline", "Chi2GridFit", "clean_inputs"]

_IVAR_MAX = 1e12  # 'noise-free' (inf) inverse variances are clipped to this


def clean_inputs(flux, ivar) -> tuple[np.ndarray, np.ndarray]:
    """float64 copies with masked pixels made harmless: ivar 0 where flux or ivar is not finite,
    ivar < 0, and flux 0 there; infinite ivar (noise-free synthetic) clipped to 1e12."""
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64)).copy()
    ivar = np.atleast_2d(np.asarray(ivar, dtype=np.float64)).copy()
    if flux.shape != ivar.shape:
        raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} differ in shape")
    ivar[np.isposinf(ivar)] = _IVAR_MAX
    bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar < 0)
    ivar[bad] = 0.0
    flux[bad | (ivar == 0)] = 0.0
    return flux, np.minimum(ivar, _IVAR_MAX)


def _labels_array(labels, n: int) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.float64)
    if labels.shape != (n, 3):
        raise ValueError(f"labels has shape {labels.shape}, expected ({n}, 3)")
    return labels


# --------------------------------------------------------------------------------------------
# The Cannon
# --------------------------------------------------------------------------------------------

def _import_thecannon():
    """``import thecannon`` without its import-time side effects.

    thecannon/__init__.py calls ``warnings.simplefilter("ignore", RuntimeWarning)`` (and RankWarning)
    process-wide and attaches a DEBUG StreamHandler to its logger; we restore the warning filters
    and keep its logger at WARNING.
    """
    with warnings.catch_warnings():
        import thecannon
        from thecannon import fitting, utils, vectorizer
    logging.getLogger("thecannon").setLevel(logging.WARNING)
    return thecannon, fitting, utils, vectorizer


class _TqdmWrapper:
    """Stands in for ``thecannon.utils.wrapper`` (which draws its own progress bar on stdout and runs
    ``stty size`` in a subshell): same call signature, a tqdm bar on stderr instead."""

    desc = "The Cannon"
    disable = True

    def __init__(self, f, args, kwds, N, message=None, size=100):
        self.f, self.args, self.kwds = f, list(args or []), dict(kwds or {})
        self.bar = tqdm(total=int(N), desc=message or self.desc, disable=self.disable, leave=False)

    def __call__(self, x):
        result = self.f(*(list(x) + self.args), **self.kwds)
        self.bar.update()
        if self.bar.n >= self.bar.total:
            self.bar.close()
        return result


@contextlib.contextmanager
def _quiet_cannon(utils_module, progress: bool, desc: str):
    """Route thecannon's progress bar through tqdm and keep its INFO log lines out."""
    logger = logging.getLogger("thecannon")
    old_level, old_wrapper = logger.level, utils_module.wrapper
    wrapper = type("_Wrapper", (_TqdmWrapper,), {"desc": desc, "disable": not progress})
    logger.setLevel(logging.ERROR)
    utils_module.wrapper = wrapper
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # scipy 1.17 on fmin_l_bfgs_b(disp=), logger.warn
            yield
    finally:
        utils_module.wrapper = old_wrapper
        logger.setLevel(old_level)


class CannonBaseline:
    """The Cannon, quadratic in (Teff, log g, [Fe/H]), via ``thecannon.CannonModel``.

    ``fit`` drops stars with a NaN label, sets ivar 0 on non-finite or masked pixels, and trains
    (per pixel: L-BFGS-B for the 10 coefficients θ, then the scatter s²). ``predict`` runs the
    test step (``scipy.optimize.leastsq`` per star) from several starting points and returns the
    best; per-star σ are the square roots of the diagonal of thecannon's covariance (the leastsq
    ``cov_x`` in scaled labels, rescaled to label units).
    """

    def __init__(self, order: int = 2, regularization: float | None = None, threads: int | None = None,
                 progress: bool = False):
        self.order = order
        self.regularization = regularization
        self.threads = threads
        self.progress = progress
        self.model = None
        self.n_train = 0

    def fit(self, flux, ivar, labels) -> CannonBaseline:
        thecannon, _, utils, vectorizer = _import_thecannon()
        flux, ivar = clean_inputs(flux, ivar)
        labels = _labels_array(labels, len(flux))
        keep = np.isfinite(labels).all(axis=1)
        vec = vectorizer.PolynomialVectorizer(LABEL_NAMES, self.order)
        n_coef = 1 + len(vec.terms)
        if keep.sum() < 2 * n_coef:
            raise ValueError(f"{int(keep.sum())} stars with all labels; The Cannon needs at least "
                             f"{2 * n_coef} (twice its {n_coef} coefficients per pixel)")
        self.model = thecannon.CannonModel(labels[keep], flux[keep], ivar[keep], vec,
                                           regularization=self.regularization)
        with _quiet_cannon(utils, self.progress, "The Cannon: training"):
            self._train()
        self.n_train = int(keep.sum())
        return self

    def _train(self) -> None:
        """``CannonModel.train()`` pixel by pixel, as thecannon 0.2.96 does it, but storing the
        scatter as a float: ``fitting.fit_pixel_fixed_scatter`` returns s² as a 1-element array
        (``scipy.optimize.fmin`` output) and ``train()`` then fails on NumPy >= 2.4 with
        'setting an array element with a sequence'."""
        _, fitting, _, _ = _import_thecannon()
        model = self.model
        flux, ivar = model.training_set_flux, model.training_set_ivar
        n_pix, n_coef = flux.shape[1], model.design_matrix.shape[1]
        theta = np.full((n_pix, n_coef), np.nan)
        s2 = np.full(n_pix, np.nan)
        kwds = dict(op_method=None, op_strict=True, op_kwds=None)
        for pixel in tqdm(range(n_pix), desc="The Cannon: training", disable=not self.progress, leave=False):
            pixel_theta, pixel_s2, _ = fitting.fit_pixel_fixed_scatter(
                flux[:, pixel], ivar[:, pixel], model._initial_theta(pixel),
                model._censored_design_matrix(pixel), model._pixel_access(model.regularization, pixel, 0.0),
                None, **kwds)
            theta[pixel], s2[pixel] = pixel_theta, float(np.ravel(pixel_s2)[0])
        model._theta, model._s2 = theta, s2

    def _starts(self) -> np.ndarray:
        fid, scale = self.model._fiducials, self.model._scales
        # thecannon discards a result equal to its starting point, so never start exactly on a node
        offsets = np.array([[0.0137, -0.0211, 0.0173], [-0.25, 0.2, -0.25], [0.25, -0.2, 0.25]])
        return fid + offsets * scale

    def predict(self, flux, ivar, return_sigma: bool = False):
        if self.model is None:
            raise RuntimeError("fit() first")
        _, _, utils, _ = _import_thecannon()
        flux, ivar = clean_inputs(flux, ivar)
        starts = np.broadcast_to(self._starts(), (len(flux), 3, 3))
        with _quiet_cannon(utils, self.progress, "The Cannon: test step"):
            labels, covs, _ = self.model.test(flux, ivar, initial_labels=starts, threads=self.threads)
        labels = np.asarray(labels, dtype=np.float64).reshape(len(flux), 3)
        if not return_sigma:
            return labels
        sigma = np.full((len(flux), 3), np.nan)
        scales = self.model._scales
        for i, cov in enumerate(covs):
            cov = None if cov is None else np.asarray(cov, dtype=np.float64)
            # thecannon substitutes a matrix of ones when leastsq gives no covariance
            if cov is None or cov.shape != (3, 3) or np.all(cov == 1.0):
                continue
            sigma[i] = np.sqrt(np.clip(np.diag(cov), 0, None)) * scales
        return labels, sigma


# --------------------------------------------------------------------------------------------
# χ² against the synthetic grid
# --------------------------------------------------------------------------------------------

@dataclass
class _Local:
    axes: list  # per label: the (up to 3) lattice values around the best node
    cube: dict  # (i, j, k) index into axes -> node row (missing nodes absent)


class Chi2GridFit:
    """χ² fit of observed spectra against a grid of synthetic spectra on the same pixels.

    Parameters
    ----------
    continuum_degree : None for no freedom (model compared as is); 0 for a free scale factor;
        d >= 1 for a multiplicative Legendre polynomial of degree d in pixel index, fitted
        linearly for every (star, node) pair.
    refine : interpolate between nodes (trilinear in flux over the 2×2×2 cells around the best
        node, bounded L-BFGS-B in each complete cell, kept only if it beats the node); else return
        the best node.
    rescale_sigma : multiply the Δχ² = 1 uncertainties by sqrt(reduced χ²) when that exceeds 1
        (a model-mismatch allowance).
    chunk : observed spectra per block in the coarse search (memory).

    The grid may be irregular: the lattice along each label is the sorted set of distinct node
    values (e.g. Teff steps of 100 K below 4000 K and 250 K above), and missing nodes are allowed;
    a cell is used only if all 8 corners exist. The third label is the grid's [M/H], returned as
    the [Fe/H] column.
    """

    def __init__(self, continuum_degree: int | None = 0, refine: bool = True, rescale_sigma: bool = True,
                 chunk: int = 256, progress: bool = False):
        if continuum_degree is not None and continuum_degree < 0:
            raise ValueError("continuum_degree must be None or >= 0")
        self.continuum_degree = continuum_degree
        self.refine = refine
        self.rescale_sigma = rescale_sigma
        self.chunk = chunk
        self.progress = progress

    # ---------------------------------------------------------------- grid
    def fit(self, flux, ivar, labels) -> Chi2GridFit:
        """Store the grid: ``flux`` (n_nodes, n_pix), ``ivar`` (0 marks a bad grid pixel; its
        values are otherwise unused), node ``labels`` (n_nodes, 3). Rows with NaN labels are
        dropped; a pixel bad in any node is ignored for every comparison."""
        flux, ivar = clean_inputs(flux, ivar)
        labels = _labels_array(labels, len(flux))
        keep = np.isfinite(labels).all(axis=1)
        if keep.sum() == 0:
            raise ValueError("no grid node with finite labels")
        flux, ivar, labels = flux[keep], ivar[keep], labels[keep]
        rounded = np.round(labels, 6)
        _, first = np.unique(rounded, axis=0, return_index=True)
        if len(first) != len(labels):
            raise ValueError("grid has duplicate nodes")
        self.pixel_ok = (ivar > 0).all(axis=0)
        self.grid_flux = np.where(self.pixel_ok, flux, 0.0)
        self.grid_labels = labels
        self.axes = [np.unique(rounded[:, d]) for d in range(3)]
        self.node_index = {tuple(r): i for i, r in enumerate(map(tuple, rounded))}
        n_pix = flux.shape[1]
        if self.continuum_degree is None:
            self.basis = None
        else:
            x = np.linspace(-1.0, 1.0, n_pix)
            self.basis = np.polynomial.legendre.legvander(x, self.continuum_degree).T  # (K, n_pix)
        return self

    # ---------------------------------------------------------------- χ²
    def _chi2_nodes(self, y, w) -> np.ndarray:
        """χ² (n_obs, n_nodes) of each spectrum against every node, continuum solved linearly."""
        M = self.grid_flux
        base = np.sum(w * y * y, axis=1)[:, None]
        if self.basis is None:
            return base - 2.0 * (w * y) @ M.T + w @ (M * M).T
        L = self.basis
        K = len(L)
        b = np.stack([(w * y * L[k]) @ M.T for k in range(K)], axis=-1)  # (n_obs, n_nodes, K)
        A = np.empty(b.shape + (K,))
        M2 = (M * M).T
        for k in range(K):
            for m in range(k, K):
                A[..., k, m] = A[..., m, k] = (w * L[k] * L[m]) @ M2
        A += np.eye(K) * 1e-12 * np.maximum(np.trace(A, axis1=-2, axis2=-1)[..., None, None], 1e-300)
        sol = np.linalg.solve(A, b[..., None])[..., 0]
        return base - np.sum(b * sol, axis=-1)

    def _chi2_model(self, y, w, model) -> float:
        """χ² of one spectrum against one model spectrum (continuum solved linearly)."""
        if self.basis is None:
            r = y - model
            return float(np.sum(w * r * r))
        design = self.basis * model  # (K, n_pix)
        A = (design * w) @ design.T
        b = (design * w) @ y
        try:
            coef = np.linalg.solve(A + np.eye(len(A)) * 1e-12 * max(np.trace(A), 1e-300), b)
        except np.linalg.LinAlgError:
            return np.inf
        r = y - coef @ design
        return float(np.sum(w * r * r))

    # ---------------------------------------------------------------- refinement
    def _local(self, node: int) -> _Local:
        lab = np.round(self.grid_labels[node], 6)
        axes = []
        for d in range(3):
            k = int(np.searchsorted(self.axes[d], lab[d]))
            axes.append(self.axes[d][max(k - 1, 0):k + 2])
        cube = {}
        for idx in product(*(range(len(a)) for a in axes)):
            key = tuple(axes[d][idx[d]] for d in range(3))
            if key in self.node_index:
                cube[idx] = self.node_index[key]
        return _Local(axes, cube)

    def _refine(self, y, w, node: int, chi2_node: float):
        local = self._local(node)
        lab0 = np.round(self.grid_labels[node], 6)
        centre = tuple(int(np.flatnonzero(local.axes[d] == lab0[d])[0]) for d in range(3))
        best_x, best_chi2, best_cell = self.grid_labels[node].copy(), chi2_node, None
        for cell in product(*([(c - 1, c), (c, c + 1)] for c in centre)):
            if any(lo < 0 or hi >= len(local.axes[d]) for d, (lo, hi) in enumerate(cell)):
                continue
            corners = list(product(*cell))
            if any(c not in local.cube for c in corners):
                continue
            lo = np.array([local.axes[d][cell[d][0]] for d in range(3)])
            hi = np.array([local.axes[d][cell[d][1]] for d in range(3)])
            spectra = np.stack([self.grid_flux[local.cube[c]] for c in corners])  # (8, n_pix)
            bits = np.array([[c[d] - cell[d][0] for d in range(3)] for c in corners], dtype=float)

            def chi2_at(u, spectra=spectra, bits=bits):
                weights = np.prod(np.where(bits == 1, u, 1.0 - u), axis=1)
                return self._chi2_model(y, w, weights @ spectra)

            u_node = np.array([1.0 if cell[d][0] != centre[d] else 0.0 for d in range(3)])  # the best node
            if best_cell is None:
                best_cell = (lo, hi, spectra, bits, u_node)
            if not self.refine:
                break
            u0 = np.abs(u_node - 0.02)  # start just inside the cell
            res = optimize.minimize(chi2_at, u0, method="L-BFGS-B", bounds=[(0.0, 1.0)] * 3,
                                    options={"eps": 1e-5, "maxiter": 200})
            if np.isfinite(res.fun) and res.fun < best_chi2:
                best_chi2, best_x = float(res.fun), lo + res.x * (hi - lo)
                best_cell = (lo, hi, spectra, bits, np.asarray(res.x, dtype=float))
        return best_x, best_chi2, best_cell

    def _sigma(self, y, w, cell, chi2_min: float, n_dof: int) -> np.ndarray:
        """Δχ² = 1 (Gauss-Newton) σ of the labels at the best point, continuum coefficients
        marginalized: cov = (Jᵀ W J)⁻¹ with J the derivative of the trilinear model, which is
        exact inside a cell (the model is linear along each label there)."""
        if cell is None:
            return np.full(3, np.nan)
        lo, hi, spectra, bits, u = cell

        def model(uu):
            return np.prod(np.where(bits == 1, uu, 1.0 - uu), axis=1) @ spectra

        m0 = model(u)
        cols = []
        for d in range(3):
            up, dn = u.copy(), u.copy()
            up[d], dn[d] = min(u[d] + 0.25, 1.0), max(u[d] - 0.25, 0.0)
            cols.append((model(up) - model(dn)) / ((up[d] - dn[d]) * (hi[d] - lo[d])))
        J = np.array(cols)  # (3, n_pix) d model / d label
        if self.basis is not None:
            design = self.basis * m0
            A = (design * w) @ design.T
            coef = np.linalg.lstsq(A, (design * w) @ y, rcond=None)[0]
            J = np.vstack([J * (coef @ self.basis), design])
        F = (J * w) @ J.T
        try:
            cov = np.linalg.inv(F)[:3, :3]
        except np.linalg.LinAlgError:
            return np.full(3, np.nan)
        diag = np.diag(cov)
        if not np.all(np.isfinite(diag)) or np.any(diag <= 0):
            return np.full(3, np.nan)
        sigma = np.sqrt(diag)
        if self.rescale_sigma and n_dof > 0:
            sigma *= np.sqrt(max(chi2_min / n_dof, 1.0))
        return sigma

    # ---------------------------------------------------------------- predict
    def predict(self, flux, ivar, return_sigma: bool = False, return_chi2: bool = False):
        """Best labels (n, 3); with ``return_sigma`` also σ (n, 3); with ``return_chi2`` also the
        minimum χ² and its number of degrees of freedom (n,) each."""
        if not hasattr(self, "grid_flux"):
            raise RuntimeError("fit() first")
        flux, ivar = clean_inputs(flux, ivar)
        if flux.shape[1] != self.grid_flux.shape[1]:
            raise ValueError(f"spectra have {flux.shape[1]} pixels, the grid {self.grid_flux.shape[1]}")
        w = np.where(self.pixel_ok, ivar, 0.0)
        y = np.where(w > 0, flux, 0.0)
        n = len(y)
        labels = np.full((n, 3), np.nan)
        sigma = np.full((n, 3), np.nan)
        chi2_min = np.full(n, np.nan)
        n_free = 3 + (0 if self.basis is None else len(self.basis))
        dof = (w > 0).sum(axis=1) - n_free
        bar = tqdm(total=n, desc="chi2 grid fit", disable=not self.progress, leave=False)
        for start in range(0, n, self.chunk):
            sl = slice(start, min(start + self.chunk, n))
            chi2 = self._chi2_nodes(y[sl], w[sl])
            for j, i in enumerate(range(sl.start, sl.stop)):
                if not (w[i] > 0).any():
                    bar.update()
                    continue
                node = int(np.argmin(chi2[j]))
                best = self.grid_labels[node].copy()
                value = self._chi2_model(y[i], w[i], self.grid_flux[node])  # exact, no cancellation
                if self.refine or return_sigma:
                    best, value, cell = self._refine(y[i], w[i], node, value)
                labels[i], chi2_min[i] = best, value
                if return_sigma:
                    sigma[i] = self._sigma(y[i], w[i], cell, value, int(dof[i]))
                bar.update()
        bar.close()
        out = [labels]
        if return_sigma:
            out.append(sigma)
        if return_chi2:
            out += [chi2_min, dof]
        return out[0] if len(out) == 1 else tuple(out)
