"""On-the-fly augmentation of continuum-normalized spectra (torch, batched).

Pretraining on noise-free synthetic spectra only transfers to observed ones if the network has
seen the ways an observation differs from a model. :class:`Augmenter` applies,
per spectrum of a ``(B, npix)`` batch on one instrument's pixel grid and in this order:

1. **resolution** — extra Gaussian broadening: the effective LSF FWHM becomes FWHM·(1+u),
   u ~ U(0, ``resolution_jitter``), i.e. a Gaussian of σ_extra = FWHM·√((1+u)²−1)/2.3548 is
   convolved in (per sample *and* per pixel, so an LSF varying in pixels is handled);
2. **rv** — a radial-velocity shift v ~ U(−``rv_max_kms``, +``rv_max_kms``):
   flux'(λ) = flux(λ/(1+v/c)), by linear interpolation in wavelength on the pixel grid
   (linear or log-linear alike: the wavelength array is used directly);
3. **wave_jitter** — a smooth wavelength-solution error: an extra shift by δ(x) pixels, a random
   polynomial of degree ``wave_jitter_degree`` in x with max |δ| = a, a ~ U(0, ``wave_jitter_pixels``);
   (2) and (3) are done as one resampling, so the spectrum is interpolated once;
4. **scale** and **tilt** — a residual continuum-normalization error: flux·(1+s)(1+t·x),
   s ~ U(±``scale``), t ~ U(±``tilt``), x ∈ [−1, 1] linear in wavelength across the window;
5. **noise** — Gaussian noise of constant σ = 1/SNR per pixel of normalized flux (not scaled by
   √flux: at the S/N of interest the difference in lines is second order), SNR log-uniform in
   ``snr_range``;
6. **bad_pixels** — single pixels and short runs (1 … ``bad_pixel_max_run`` pixels, uniform) set
   to 1.0 (the continuum, so they carry no signal once the model subtracts 1) with ivar 0 and
   mask True; on average ``bad_pixel_frac`` of the pixels of a spectrum that gets this effect.

Each effect is applied to a spectrum with probability ``p_<effect>`` (drawn per spectrum), and only
if named in ``AugmentConfig.enabled``: ``config.without("rv")`` is the ablation without RV shifts,
``AugmentConfig.none()`` does nothing at all.

Inverse variances: noise-free input (ivar = inf, synthetic) gets ivar = 1/σ² from the noise step;
already noisy input gets 1/(1/ivar + σ²). Rescaling by (1+s)(1+t·x) scales the variance with it;
resampling interpolates the *variance* linearly (conservative: the correlation interpolation
introduces is ignored); broadening leaves ivar as it is (also conservative). Masked pixels —
input ``mask``, ivar 0, non-finite flux, pixels shifted in from outside the grid (flux 1.0), bad
pixels — come back with mask True and ivar 0. The pixel-mixing steps (1–3) read masked input
pixels as 1.0 and mask output pixels that draw on them (broadening: ≥ 1 % of the kernel weight).

Randomness: every draw goes through the ``torch.Generator`` passed in, so the same generator
state gives bit-identical output. **The caller owns the generator** (training seeds one per epoch,
so a run resumed at epoch k sees the very augmentations of the uninterrupted run).
The draws for all effects are made for every spectrum whatever is enabled, so an ablation changes
only the effect switched off. A CPU generator may be used
with CUDA data (draws are moved to the data's device), or one on the data's device.

Example::

    aug = Augmenter(dataset.wave, MARVELS, AugmentConfig())
    gen = torch.Generator().manual_seed(seed)
    for batch in loader:
        flux, ivar, mask = aug(batch["flux"], batch["ivar"], batch["mask"], generator=gen)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch

from remap_lib.constants import C_KMS, FWHM_TO_SIGMA
from remap_lib.spectra.instruments import Instrument

#: The effects in the order they are applied.
EFFECTS = ("resolution", "rv", "wave_jitter", "scale", "tilt", "noise", "bad_pixels")

#: Output pixels drawing at least this fraction of their broadening kernel from masked pixels are masked.
_MASK_WEIGHT = 0.01


@dataclass(frozen=True)
class AugmentConfig:
    """What :class:`Augmenter` does; every amplitude is the *maximum* of a uniform draw.

    ``p_<effect>`` is the probability that a given spectrum gets that effect; ``enabled`` names
    the effects that may happen at all (see :data:`EFFECTS`).
    """

    snr_range: tuple[float, float] = (20.0, 200.0)  # S/N per pixel, drawn log-uniformly
    p_noise: float = 1.0
    resolution_jitter: float = 0.1  # FWHM -> FWHM·(1+u), u ~ U(0, jitter)
    p_resolution: float = 0.5
    rv_max_kms: float = 30.0  # v ~ U(-max, max)
    p_rv: float = 0.5
    wave_jitter_pixels: float = 0.3  # max |δ| of the wavelength-solution error, pixels
    wave_jitter_degree: int = 2
    p_wave_jitter: float = 0.5
    scale: float = 0.02  # (1+s), s ~ U(-scale, scale)
    p_scale: float = 0.5
    tilt: float = 0.03  # (1+t·x), t ~ U(-tilt, tilt), x in [-1, 1]
    p_tilt: float = 0.5
    bad_pixel_frac: float = 0.005  # expected fraction of bad pixels
    bad_pixel_max_run: int = 4  # runs of 1..max pixels
    p_bad_pixels: float = 0.5
    enabled: tuple[str, ...] = EFFECTS

    def __post_init__(self):
        enabled = tuple(self.enabled)
        unknown = sorted(set(enabled) - set(EFFECTS))
        if unknown:
            raise ValueError(f"unknown augmentation effect(s) {unknown}; known: {list(EFFECTS)}")
        object.__setattr__(self, "enabled", tuple(e for e in EFFECTS if e in enabled))  # canonical order
        lo, hi = (float(v) for v in self.snr_range)
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"snr_range must be 0 < low <= high < inf, got {self.snr_range!r}")
        object.__setattr__(self, "snr_range", (lo, hi))
        for effect in EFFECTS:
            p = getattr(self, f"p_{effect}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"p_{effect} must be a probability in [0, 1], got {p!r}")
        for name in ("resolution_jitter", "rv_max_kms", "wave_jitter_pixels", "scale", "tilt", "bad_pixel_frac"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.scale >= 1 or self.tilt >= 1:
            raise ValueError("scale and tilt must be below 1 (the continuum would change sign)")
        if self.rv_max_kms >= 0.1 * C_KMS:
            raise ValueError(f"rv_max_kms={self.rv_max_kms} is not a stellar radial velocity")
        if self.bad_pixel_frac > 0.5:
            raise ValueError(f"bad_pixel_frac must be <= 0.5, got {self.bad_pixel_frac}")
        if int(self.bad_pixel_max_run) < 1 or int(self.wave_jitter_degree) < 0:
            raise ValueError("bad_pixel_max_run must be >= 1 and wave_jitter_degree >= 0")

    @classmethod
    def none(cls) -> AugmentConfig:
        """A configuration that changes nothing (the identity)."""
        return cls(enabled=())

    def without(self, *effects: str) -> AugmentConfig:
        """This configuration with ``effects`` switched off (for ablations)."""
        unknown = sorted(set(effects) - set(EFFECTS))
        if unknown:
            raise ValueError(f"unknown augmentation effect(s) {unknown}; known: {list(EFFECTS)}")
        return replace(self, enabled=tuple(e for e in self.enabled if e not in effects))

    def only(self, *effects: str) -> AugmentConfig:
        """This configuration with nothing but ``effects`` switched on."""
        unknown = sorted(set(effects) - set(EFFECTS))
        if unknown:
            raise ValueError(f"unknown augmentation effect(s) {unknown}; known: {list(EFFECTS)}")
        return replace(self, enabled=tuple(effects))

    def active(self, effect: str) -> bool:
        """Whether ``effect`` can happen at all (enabled, with a nonzero probability and amplitude)."""
        if effect not in self.enabled or getattr(self, f"p_{effect}") == 0:
            return False
        amplitude = {"resolution": self.resolution_jitter, "rv": self.rv_max_kms,
                     "wave_jitter": self.wave_jitter_pixels, "scale": self.scale, "tilt": self.tilt,
                     "noise": 1.0, "bad_pixels": self.bad_pixel_frac}[effect]
        return amplitude > 0

    def to_dict(self) -> dict:
        """Plain dict (JSON-able) of the fields."""
        data = asdict(self)
        data["snr_range"] = list(self.snr_range)
        data["enabled"] = list(self.enabled)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown augmentation field(s) {unknown}; known: {sorted(known)}")
        data = dict(data)
        for key in ("snr_range", "enabled"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def describe(self) -> str:
        """One line per effect: on/off, probability and range (for logs and the book)."""
        text = {
            "resolution": f"LSF FWHM x (1+u), u ~ U(0, {self.resolution_jitter:g})",
            "rv": f"RV shift v ~ U(-{self.rv_max_kms:g}, {self.rv_max_kms:g}) km/s",
            "wave_jitter": (f"wavelength-solution error: degree-{self.wave_jitter_degree} polynomial, "
                            f"max |shift| ~ U(0, {self.wave_jitter_pixels:g}) px"),
            "scale": f"continuum scale (1+s), s ~ U(-{self.scale:g}, {self.scale:g})",
            "tilt": f"continuum tilt (1+t*x), t ~ U(-{self.tilt:g}, {self.tilt:g}), x in [-1, 1]",
            "noise": (f"Gaussian noise sigma = 1/SNR, SNR log-uniform in "
                      f"[{self.snr_range[0]:g}, {self.snr_range[1]:g}]"),
            "bad_pixels": (f"bad pixels: {100 * self.bad_pixel_frac:g} % in runs of 1-{self.bad_pixel_max_run} px, "
                           f"set to 1.0, ivar 0, masked"),
        }
        lines = []
        for effect in EFFECTS:
            state = f"p={getattr(self, f'p_{effect}'):.2g}" if self.active(effect) else "off"
            lines.append(f"  {effect:<12} {state:<7} {text[effect]}")
        return "\n".join(lines)


@dataclass
class AugmentParams:
    """The random draws for one batch (all tensors on the data's device; B = batch size).

    A zero (``snr`` inf, ``bad`` all False) means that spectrum doesn't get the effect. Build one
    with :meth:`Augmenter.sample`, or by hand for controlled experiments, and pass it to
    :meth:`Augmenter.apply`.
    """

    broaden: torch.Tensor  # (B,) u: FWHM -> FWHM·(1+u)
    rv_kms: torch.Tensor  # (B,) km/s
    wave_shift: torch.Tensor  # (B, npix) δ in pixels (float64)
    scale: torch.Tensor  # (B,) s
    tilt: torch.Tensor  # (B,) t
    snr: torch.Tensor  # (B,) S/N per pixel (inf = no noise)
    noise: torch.Tensor  # (B, npix) standard normal draws
    bad: torch.Tensor  # (B, npix) bool

    @classmethod
    def identity(cls, batch: int, npix: int, device=None) -> AugmentParams:
        """Parameters that change nothing (start from these to build a controlled case)."""
        zeros = torch.zeros(batch, dtype=torch.float64, device=device)
        return cls(broaden=zeros.clone(), rv_kms=zeros.clone(),
                   wave_shift=torch.zeros(batch, npix, dtype=torch.float64, device=device),
                   scale=zeros.clone(), tilt=zeros.clone(), snr=torch.full_like(zeros, math.inf),
                   noise=torch.zeros(batch, npix, dtype=torch.float32, device=device),
                   bad=torch.zeros(batch, npix, dtype=torch.bool, device=device))


class Augmenter:
    """Random augmentation of batches of spectra on one pixel grid (see the module docstring).

    Parameters
    ----------
    wave
        Pixel-centre wavelengths (Å, strictly increasing), e.g. ``instrument.wavelength_grid()``.
    instrument
        Gives the LSF FWHM at each pixel (``instrument.lsf_fwhm(wave)``) for the broadening.
    config
        What to do; default :class:`AugmentConfig()`.
    """

    def __init__(self, wave, instrument: Instrument, config: AugmentConfig | None = None):
        wave = np.asarray(wave.detach().cpu() if isinstance(wave, torch.Tensor) else wave, dtype=np.float64)
        if wave.ndim != 1 or len(wave) < 2 or not np.all(np.diff(wave) > 0):
            raise ValueError("wave must be a 1-D, strictly increasing array of at least 2 wavelengths")
        self.config = config if config is not None else AugmentConfig()
        self.instrument = instrument
        self.npix = len(wave)
        self._wave = torch.from_numpy(wave)
        # Linear and log-linear grids are inverted analytically (fractional pixel of a wavelength);
        # any other increasing grid by a binary search.
        self._grid_kind, self._grid_step = "general", 0.0
        for kind, coord in (("linear", wave), ("log", np.log(wave))):
            step = (coord[-1] - coord[0]) / (len(wave) - 1)
            if np.abs(np.diff(coord) / step - 1).max() < 1e-8:
                self._grid_kind, self._grid_step = kind, float(step)
                break
        x = 2.0 * (wave - wave[0]) / (wave[-1] - wave[0]) - 1.0
        self._x = torch.from_numpy(x)
        # LSF σ in pixels at each pixel (local dispersion from the grid itself).
        dispersion = np.gradient(wave)
        lsf_sigma_pix = instrument.lsf_fwhm(wave) * FWHM_TO_SIGMA / dispersion
        self._lsf_sigma_pix = torch.from_numpy(lsf_sigma_pix)
        # LSF constant in pixels (MARVELS: R and log pixels; MILES: FWHM and linear pixels) to 0.1 %:
        # broadening is then a plain convolution per spectrum, much faster than per-pixel kernels.
        self._constant_lsf = bool(lsf_sigma_pix.max() / lsf_sigma_pix.min() - 1 < 1e-3)
        self._lsf_sigma_const = float(np.median(lsf_sigma_pix))
        # Legendre basis for the wavelength-solution error.
        deg = int(self.config.wave_jitter_degree)
        self._legendre = torch.from_numpy(np.polynomial.legendre.legvander(x, deg).T.copy())  # (deg+1, npix)
        self._cache: dict = {}

    def _on(self, device) -> dict:
        """Grid constants on ``device`` (cached)."""
        key = str(device)
        if key not in self._cache:
            self._cache[key] = {name: getattr(self, f"_{name}").to(device)
                                for name in ("wave", "x", "lsf_sigma_pix", "legendre")}
        return self._cache[key]

    def _kernel_table(self, max_u: float, device) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Kernel half-width (±4 σ_extra at the largest ``u``) and its variance table on ``device``."""
        max_extra = float(self._lsf_sigma_pix.max()) * math.sqrt((1 + max_u) ** 2 - 1)
        half = max(1, math.ceil(4.0 * max_extra))
        key = ("table", half, str(device))
        if key not in self._cache:
            self._cache[key] = tuple(t.to(device) for t in _sampled_gaussian_variance_table(half))
        return (half, *self._cache[key])

    def __repr__(self) -> str:
        return (f"Augmenter({self.instrument.name}, {self.npix} px, "
                f"{self._wave[0]:.1f}-{self._wave[-1]:.1f} Å)\n{self.describe()}")

    def describe(self) -> str:
        """What is on, with probabilities and ranges."""
        return self.config.describe()

    # -- random draws -------------------------------------------------------------------------
    def sample(self, batch: int, generator: torch.Generator | None = None, device=None) -> AugmentParams:
        """Draw the parameters for a batch of ``batch`` spectra (on ``device``).

        The same draws are made whatever is enabled (fixed order and shapes), then the disabled or
        not-selected effects are zeroed.
        """
        cfg = self.config
        device = torch.device(device) if device is not None else torch.device("cpu")
        gdev = generator.device if generator is not None else device
        npix, ncoef = self.npix, self._legendre.shape[0]
        # columns: 7 selection draws, u, v, a, s, t, snr, then ncoef polynomial coefficients
        scalars = torch.rand(batch, 13 + ncoef, generator=generator, device=gdev, dtype=torch.float64).to(device)
        noise = torch.randn(batch, npix, generator=generator, device=gdev, dtype=torch.float32).to(device)
        bad_u = torch.rand(batch, npix, generator=generator, device=gdev, dtype=torch.float32).to(device)

        def picked(i: int, effect: str) -> torch.Tensor:
            if not cfg.active(effect):
                return torch.zeros(batch, dtype=torch.bool, device=device)
            return scalars[:, i] < getattr(cfg, f"p_{effect}")

        sel = {effect: picked(i, effect) for i, effect in enumerate(EFFECTS)}
        u, v, a, s, t, r = (scalars[:, 7 + k] for k in range(6))
        broaden = torch.where(sel["resolution"], cfg.resolution_jitter * u, 0.0)
        rv = torch.where(sel["rv"], cfg.rv_max_kms * (2 * v - 1), 0.0)
        scale = torch.where(sel["scale"], cfg.scale * (2 * s - 1), 0.0)
        tilt = torch.where(sel["tilt"], cfg.tilt * (2 * t - 1), 0.0)
        lo, hi = (math.log(x) for x in cfg.snr_range)
        snr = torch.where(sel["noise"], torch.exp(lo + (hi - lo) * r), math.inf)
        # wavelength-solution error: a random polynomial normalised to max |δ| = a·max
        const = self._on(device)
        coef = 2 * scalars[:, 13:] - 1
        shape = coef @ const["legendre"]  # (B, npix)
        peak = shape.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        amp = torch.where(sel["wave_jitter"], cfg.wave_jitter_pixels * a, 0.0)
        wave_shift = shape / peak * amp[:, None]
        # bad pixels: a run starts where bad_u < q; its length is uniform in 1..max_run
        max_run = int(cfg.bad_pixel_max_run)
        q = cfg.bad_pixel_frac / ((max_run + 1) / 2)
        starts = (bad_u < q) & sel["bad_pixels"][:, None]
        length = torch.floor(bad_u / q * max_run).long() + 1 if q > 0 else torch.ones_like(bad_u, dtype=torch.long)
        bad = starts.clone()
        for k in range(1, max_run):
            bad[:, k:] |= starts[:, :-k] & (length[:, :-k] > k)
        return AugmentParams(broaden=broaden, rv_kms=rv, wave_shift=wave_shift, scale=scale, tilt=tilt,
                             snr=snr, noise=noise, bad=bad)

    # -- application --------------------------------------------------------------------------
    def __call__(self, flux: torch.Tensor, ivar: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None):
        """Augment a batch: ``flux`` (B, npix) or (npix,); ``ivar`` None = noise-free (inf);
        ``mask`` None = nothing masked. Returns new float32 ``(flux, ivar, mask)`` on flux's device.
        ``generator=None`` uses torch's global RNG (reproducible only through torch.manual_seed)."""
        flux = torch.as_tensor(flux)
        batch = 1 if flux.ndim == 1 else flux.shape[0]
        if not any(self.config.active(e) for e in EFFECTS):
            return self.apply(flux, ivar, mask, None)
        params = self.sample(batch, generator, flux.device)
        return self.apply(flux, ivar, mask, params)

    def apply(self, flux, ivar=None, mask=None, params: AugmentParams | None = None):
        """Apply given draws ``params`` (None = identity) to a batch; see :meth:`__call__`."""
        flux = torch.as_tensor(flux)
        squeeze = flux.ndim == 1
        flux = flux.reshape(1, -1) if squeeze else flux
        if flux.ndim != 2 or flux.shape[1] != self.npix:
            raise ValueError(f"flux must have shape (B, {self.npix}) or ({self.npix},), got {tuple(flux.shape)}")
        device = flux.device
        flux = flux.to(torch.float32).clone()
        ivar = (torch.full_like(flux, math.inf) if ivar is None
                else torch.as_tensor(ivar, device=device).to(torch.float32).reshape(flux.shape).clone())
        mask = (torch.zeros(flux.shape, dtype=torch.bool, device=device) if mask is None
                else torch.as_tensor(mask, device=device).to(torch.bool).reshape(flux.shape).clone())
        if params is not None:
            if params.broaden.shape[0] != flux.shape[0]:
                raise ValueError(f"params are for a batch of {params.broaden.shape[0]}, got {flux.shape[0]} spectra")
            mask |= ~torch.isfinite(flux) | (ivar == 0) | torch.isnan(ivar)
            const = self._on(device)
            flux, ivar, mask = self._broaden(flux, ivar, mask, params.broaden.to(device), const)
            flux, ivar, mask = self._resample(flux, ivar, mask, params.rv_kms.to(device),
                                              params.wave_shift.to(device), const)
            factor = ((1 + params.scale.to(device))[:, None] * (1 + params.tilt.to(device)[:, None] * const["x"]))
            factor = factor.to(torch.float32)
            flux = flux * factor
            ivar = ivar / factor**2
            sigma = (1.0 / params.snr.to(device)).to(torch.float32)[:, None]  # 0 where no noise
            flux = flux + sigma * params.noise.to(device)
            ivar = 1.0 / (1.0 / ivar + sigma**2)  # inf -> 1/σ²; σ = 0 leaves ivar as it is
            bad = params.bad.to(device)
            flux = torch.where(bad, 1.0, flux)
            mask |= bad
            ivar = torch.where(mask, 0.0, ivar)
        if squeeze:
            return flux[0], ivar[0], mask[0]
        return flux, ivar, mask

    def _broaden(self, flux, ivar, mask, u, const):
        rows = torch.nonzero(u > 0).flatten()
        if rows.numel() == 0:
            return flux, ivar, mask
        # the default config's kernels are 7 pixels wide for MARVELS and MILES
        h, s_table, v_table = self._kernel_table(max(self.config.resolution_jitter, float(u.max())), flux.device)
        g = torch.sqrt((1 + u[rows]) ** 2 - 1)  # (b,)
        offsets = torch.arange(-h, h + 1, device=flux.device, dtype=torch.float64)
        sub_mask = mask[rows]
        # convolve flux - 1, so that a flat continuum stays exactly 1 in float32
        sub = torch.where(sub_mask, 0.0, flux[rows] - 1.0)
        # edge padding: the continuum doesn't droop at the window's ends
        padded = torch.cat([sub[:, :1].expand(-1, h), sub, sub[:, -1:].expand(-1, h)], dim=1)
        mpad = torch.nn.functional.pad(sub_mask.to(torch.float32), (h, h))
        if self._constant_lsf:
            # one kernel per spectrum: a grouped conv1d
            target_var = (self._lsf_sigma_const * g) ** 2  # (b,), pixels²
            s = _interp(target_var, v_table, s_table)  # sampled-Gaussian width of that variance
            weights = torch.exp(-0.5 * (offsets / s[:, None]) ** 2)
            weights = (weights / weights.sum(-1, keepdim=True)).to(torch.float32)[:, None, :]  # (b, 1, 2h+1)
            nb = len(rows)
            out = 1.0 + torch.nn.functional.conv1d(padded[None], weights, groups=nb)[0]
            bad_weight = torch.nn.functional.conv1d(mpad[None], weights, groups=nb)[0]
        else:
            # a kernel per spectrum and pixel: windows of the padded spectra times per-pixel weights
            target_var = (const["lsf_sigma_pix"][None, :] * g[:, None]) ** 2  # (b, npix)
            s = _interp(target_var, v_table, s_table)
            weights = torch.exp(-0.5 * (offsets / s[..., None]) ** 2)
            weights = (weights / weights.sum(-1, keepdim=True)).to(torch.float32)  # (b, npix, 2h+1)
            out = 1.0 + (padded.unfold(1, 2 * h + 1, 1) * weights).sum(-1)
            bad_weight = (mpad.unfold(1, 2 * h + 1, 1) * weights).sum(-1)
        flux = flux.index_copy(0, rows, out)
        mask = mask.index_copy(0, rows, sub_mask | (bad_weight >= _MASK_WEIGHT))
        return flux, ivar, mask

    def _resample(self, flux, ivar, mask, rv_kms, wave_shift, const):
        rows = torch.nonzero((rv_kms != 0) | (wave_shift != 0).any(dim=1)).flatten()
        if rows.numel() == 0:
            return flux, ivar, mask
        wave = const["wave"]
        npix = self.npix
        # source wavelength of each output pixel, then its fractional pixel position, linear in λ
        # within a pixel interval (a log-linear grid's pixels are almost linear in λ: Δλ/λ = 3e-5)
        doppler = 1.0 + rv_kms[rows, None] / C_KMS  # (b, 1)
        index = torch.arange(npix, device=wave.device, dtype=torch.float64)
        if self._grid_kind == "log":  # a Doppler factor is a constant shift in ln λ
            pos = index - torch.log(doppler) / self._grid_step
        elif self._grid_kind == "linear":
            pos = index + wave * (1.0 / doppler - 1.0) / self._grid_step
        else:
            src = wave[None, :] / doppler  # (b, npix) float64
            i0 = (torch.searchsorted(wave, src.contiguous(), right=True) - 1).clamp(0, npix - 2)
            w0, w1 = wave[i0], wave[i0 + 1]
            pos = i0 + (src - w0) / (w1 - w0)
        pos = pos - wave_shift[rows]
        valid = (pos >= -1e-9) & (pos <= npix - 1 + 1e-9)
        pos = pos.clamp(0, npix - 1)
        j0 = torch.floor(pos).long().clamp(max=npix - 2)
        f = pos - j0
        j1 = j0 + 1
        sub_mask = mask[rows]
        sub = torch.where(sub_mask, 1.0, flux[rows])
        f32 = f.to(torch.float32)
        a = sub.gather(1, j0)
        out = a + f32 * (sub.gather(1, j1) - a)  # exact where both neighbours are equal
        var = torch.where(sub_mask, 0.0, 1.0 / ivar[rows])
        a = var.gather(1, j0)
        out_var = a + f32 * (var.gather(1, j1) - a)
        out_mask = (sub_mask.gather(1, j0) & (f < 1)) | (sub_mask.gather(1, j1) & (f > 0)) | ~valid
        out = torch.where(valid, out, 1.0)  # outside the grid: continuum, masked
        flux = flux.index_copy(0, rows, out)
        ivar = ivar.index_copy(0, rows, 1.0 / out_var)
        mask = mask.index_copy(0, rows, out_mask)
        return flux, ivar, mask


def _sampled_gaussian_variance_table(half: int):
    """(s, v(s)): the variance v of the normalised kernel exp(-j²/2s²), j = -half..half.

    For s ≲ 0.8 px a sampled Gaussian is narrower than s (v < s²); inverting this table gives the
    s whose kernel has exactly the wanted variance, so widths add in quadrature as they should.
    """
    s = np.concatenate([np.geomspace(0.02, 0.5, 200, endpoint=False), np.linspace(0.5, half / 2.0 + 1.0, 800)])
    j = np.arange(-half, half + 1, dtype=np.float64)
    w = np.exp(-0.5 * (j[None, :] / s[:, None]) ** 2)
    v = (w * j**2).sum(1) / w.sum(1)
    v[0] = 0.0  # s=0.02 is a delta to double precision
    v = np.maximum.accumulate(v)  # guard monotonicity for the inversion
    return torch.from_numpy(s), torch.from_numpy(v)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """np.interp for torch (``xp`` increasing; clamped at the ends)."""
    idx = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    t = ((x - x0) / (x1 - x0).clamp_min(1e-300)).clamp(0, 1)
    return y0 + t * (y1 - y0)
