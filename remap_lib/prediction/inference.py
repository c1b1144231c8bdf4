"""Predict Teff, log g and [Fe/H] with a trained model for any spectra: :func:`predict` and :class:`Predictor`.

    >>> from remap_lib import predict
    >>> table = predict((wave, flux, ivar))            # the shipped model, arrays in Å
    >>> table["teff_median", "teff_p16", "teff_p84", "flags", "error"]

Each input spectrum becomes one row of an astropy ``Table``: per label the median, the 16/84 and
2.5/97.5 percentiles, the mean and standard deviation of the (temperature-scaled, ensemble-averaged)
probability mass function, optionally the PMF itself, and

* the intervals' half-widths about the median scaled by the model file's conformal factors where they
  were fitted (:mod:`remap_lib.prediction.widening`, ``intervals``), so that the 68 % and 95 %
  intervals of stars called dwarfs cover as stated; the mean, standard deviation and PMF stay the
  network's, and so do the intervals of stars called giants;

* ``ood_distance``: the distance in the embedding space from the spectrum to the nearest training
  spectrum;
* ``ood_score`` / ``out_of_domain``: whether the spectrum is unlike the stars the network learnt
  from (spectra unlike anything it was trained on get confident-looking nonsense). With the
  detector saved next to the model (:mod:`remap_lib.prediction.ood`, shipped for the default model) the score
  combines the χ² of the spectrum against what a fine-tuning star with the predicted labels looks
  like and ``ood_distance``; the flag fires above its threshold, chosen on fine-tuning and validation
  stars, or at S/N below 3. Without one (a model of your own), ``out_of_domain`` is ``ood_distance``
  above the threshold fitted at export and ``ood_score`` is NaN;
* ``snr``: S/N per pixel of the normalized flux, the lower of what ivar claims and what the pixel-to-
  pixel scatter says (:func:`row_snr`); below the S/N the model was calibrated at the PMFs are widened
  by the noise widening fitted for the model file (:mod:`remap_lib.prediction.widening`; none for a
  model without one, as the table's ``widening`` meta says). Widening spreads the intervals about the
  unwidened median (:func:`~remap_lib.prediction.widening.recentre`): median and mean are the
  unwidened PMF's, the intervals, ``std`` and the ``pmf`` column the widened one's. Where the model's
  interval factors were fitted at several S/N (``by_snr``), they stand in for the noise widening on the
  intervals: those are read from the PMF widened for missing data only and scaled by the factors at
  the row's S/N;
* ``rv``: the radial velocity (km/s) given, or estimated by cross-correlation (applied beyond
  :data:`RV_TOLERANCE`), NaN when neither;
* ``masked_fraction``: the share of the instrument window without usable pixels, whether the data
  stop short of the window's ends or the pixels are NaN, masked or have ivar 0;
* ``flags``: ``;``-separated warnings: ``out_of_domain``; ``teff_outside_range`` (the Teff PMF
  mostly outside the range the model was fine-tuned on, :data:`remap_lib.prediction.ood.OUTSIDE_MASS`);
  ``low_snr`` (S/N below :data:`LOW_SNR`,
  where medians drift, not only scatter); ``partial_coverage``; ``resolution_assumed`` (sampled with
  more than :data:`FINE_SAMPLING` pixels per instrument FWHM but no resolution given: taken to have
  an LSF :data:`ASSUMED_PIXELS_PER_FWHM` pixels wide); ``rv_unknown`` (no RV given and none could be
  estimated: taken at rest); ``at_range_edge:<label>``;
* ``notes``: what was assumed or converted (medium, units, resolution, padded edges, widened PMFs);
* ``error``: why a row failed (its numbers are then NaN); empty for rows that worked.

A bad spectrum never stops the others. Inputs are put on the model's instrument with the same
:func:`remap_lib.spectra.preprocess.to_instrument` used for training data.

Missing pixels, one rule: the part of the window the data do not reach is padded and masked, as
NaN, masked and ivar-0 pixels are, and the network ignores masked pixels (they are set to the
continuum). A row whose ``masked_fraction`` is at most :data:`MAX_MISSING` (10 %) is predicted,
flagged ``partial_coverage``, and its PMFs are widened by the model file's missing-data widening (a
temperature growing with the missing share, fitted on MILES validation stars by
:mod:`remap_lib.evaluation.coverage`; :mod:`remap_lib.prediction.widening`);
beyond it the row fails and its error says what would fix it.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from remap_lib.constants import LABEL_NAMES
from remap_lib.data.dataset import SpectraSet
from remap_lib.evaluation.forward import ensemble_mean, forward
from remap_lib.evaluation.retrieval import nearest_reference_distance
from remap_lib.fileio import RemapDataError, sha256_file
from remap_lib.nn.model import InferenceNet, fuse_for_inference
from remap_lib.nn.modelfile import load_members
from remap_lib.prediction.widening import load_widening, recentre, widening_path
from remap_lib.spectra.inputs import FailedInput, as_inputs
from remap_lib.spectra.instruments import C_KMS, MAX_RV_KMS
from remap_lib.spectra.preprocess import convert_medium, pixel_edges, to_instrument, uncovered
from remap_lib.spectra.readers import RawSpectrum, StoreSpectra

#: The model shipped with the package: the ``default`` profile's fine-tuned, calibrated ensemble (MILES).
DEFAULT_MODEL_NAME = "deep_remap_miles_default.pt"
ESTIMATES = ("median", "p16", "p84", "p2_5", "p97_5", "mean", "std")
#: The largest share of the window that may lack usable pixels (beyond the data's ends, NaN, masked,
#: ivar 0) for a row to be predicted: the range over which the missing-data widening is measured
#: (:mod:`remap_lib.prediction.widening`).
MAX_MISSING = 0.10
#: An input sampled with more pixels than this per instrument FWHM, with no resolution given, is
#: flagged ``resolution_assumed`` and taken to have an LSF :data:`ASSUMED_PIXELS_PER_FWHM` pixels wide:
#: it is most likely sharper than the instrument (MILES itself has 2.8 pixels per FWHM), and a sharper
#: spectrum read as the instrument's is not smoothed (results/robustness.json says what either costs).
FINE_SAMPLING = 5.0
#: The LSF FWHM, in pixels, assumed for such an input: spectrographs sample their LSF with 2–3 pixels.
ASSUMED_PIXELS_PER_FWHM = 2.5
RESOLUTION_NOTE = "resolution not given but finely sampled"
#: Radial velocities (km/s) within which an estimated RV is reported but not applied: uncorrected
#: shifts of ±20 km/s move the calibration stars' median labels by at most 27 K, 0.02 and 0.02 dex
#: (``python -m remap_lib.evaluation.robustness curves``, results/robustness.json).
RV_TOLERANCE = 20.0
#: Smallest cross-correlation peak an RV estimate is believed at: the MILES validation and calibration
#: dwarfs reach 0.75–0.97 (about 0.5–0.8 at S/N 20), noise-only spectra below 0.1.
RV_MIN_PEAK = 0.5
RV_NOTE = "radial velocity could not be estimated"
#: Rows with S/N per pixel below this are flagged ``low_snr``: from S/N 20 down the medians of MILES
#: stars drift, not only scatter (results/robustness.json: −53 K, −0.04 and −0.07 dex at S/N 20, −256 K,
#: −0.37 and −0.27 dex at S/N 10 for the shipped model).
LOW_SNR = 20.0

def default_model_path() -> Path:
    """Path of the model file shipped inside the package."""
    return Path(str(resources.files("remap_lib") / "models" / DEFAULT_MODEL_NAME))


@dataclass
class Prepared:
    """Spectra on the model's grid, ready for the network, and what happened to each on the way."""

    flux: np.ndarray  # (n, npix) float32, 1.0 where masked or failed
    mask: np.ndarray  # (n, npix) bool
    source: list[str]
    name: list[str]
    errors: list[str]
    notes: list[list[str]] = field(default_factory=list)
    ivar: np.ndarray | None = None  # (n, npix) of the normalized flux; NaN rows where the input gave none
    rv: np.ndarray | None = None  # (n,) km/s: given or estimated (and applied when beyond RV_TOLERANCE); NaN if neither


class Predictor:
    """A loaded model (single network or calibrated ensemble) that turns spectra into label tables.

    Parameters
    ----------
    model
        Path of a model file (:func:`remap_lib.nn.modelfile.save_model` or ``save_ensemble``); None for
        the shipped model.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    batch_size
        Spectra per network call.
    members
        Use only the first ``members`` networks of an ensemble (faster, slightly less calibrated).
    """

    def __init__(self, model=None, device="cpu", batch_size: int = 256, members: int | None = None):
        self.path = Path(model) if model is not None else default_model_path()
        if model is None and not self.path.exists():
            raise FileNotFoundError(f"{self.path}: the shipped model is missing from this installation; "
                                    "reinstall remap or pass model=PATH")
        pairs, bundle = load_members(self.path, device=device)
        if members is not None:
            if not 1 <= members <= len(pairs):
                raise ValueError(f"members must be 1 to {len(pairs)} ({self.path.name} has {len(pairs)} "
                                 f"network{'s' if len(pairs) != 1 else ''}), got {members}")
            pairs = pairs[:members]
        if any(m.config.head != "classification" for m, _ in pairs):
            raise RemapDataError(self.path, "a regression-head model gives no probabilities; use a deep-REMAP "
                                 "(classification) model")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        # BatchNorm folded into the convolutions, run as channels-last 2-D convolutions: same numbers, faster
        self.networks = [InferenceNet(fuse_for_inference(m)).to(self.device) for m, _ in pairs]
        self.temperatures = [dict(info.get("extra", {}).get("temperatures", {})) for _, info in pairs]
        self.info = pairs[0][1]
        self.bins = self.info["bins"]
        self.instrument = self.info["instrument"]
        self.wave = self.instrument.wavelength_grid()
        self.continuum = dict(self.info.get("preprocessing", {}).get("continuum", {}))
        reference = bundle.get("reference") or {}
        emb = reference.get("embedding")
        self.reference = None if emb is None else torch.as_tensor(emb, dtype=torch.float32).to(self.device)
        self.ood_threshold = reference.get("threshold")
        self.versions = bundle.get("versions") or self.info.get("versions", {})
        self.sha256 = sha256_file(self.path)
        self.detector = load_detector(self.path, self.sha256)
        self.widening = load_widening(self.path, self.sha256)
        self._templates = None  # RV templates, made from the detector when first needed

    # -- the network --------------------------------------------------------------------------------
    @torch.inference_mode()
    def network(self, flux, mask, widen=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Ensemble-mean PMFs ``{label: (n, nbins)}`` and the first member's embedding (n, d).

        ``widen`` ``{label: (n,)}`` multiplies each row's calibrated temperatures (None: all 1).
        """
        outs = [forward(net, flux, mask, self.batch_size, self.device) for net in self.networks]
        pmfs = ensemble_mean([o["logits"] for o in outs], self.temperatures, widen)
        return {n: pmfs[n] for n in LABEL_NAMES}, outs[0]["embedding"].numpy()

    @torch.inference_mode()
    def network_widened(self, flux, mask, *widens) -> tuple[dict, list[dict], np.ndarray]:
        """One pass for several PMFs: ``(raw, [widened, ...], embedding)``, each widened one with each row's
        temperatures multiplied by one of ``widens`` ``{label: (n,)}`` (:meth:`network`)."""
        outs = [forward(net, flux, mask, self.batch_size, self.device) for net in self.networks]
        logits = [o["logits"] for o in outs]
        raw, *widened = (ensemble_mean(logits, self.temperatures, w) for w in (None, *widens))
        return ({n: raw[n] for n in LABEL_NAMES}, [{n: w[n] for n in LABEL_NAMES} for w in widened],
                outs[0]["embedding"].numpy())

    @torch.inference_mode()
    def member_logits(self, flux, mask) -> list[dict[str, np.ndarray]]:
        """Each member's logits divided by its calibrated temperatures: ``[{label: (n, nbins)}]``."""
        out = []
        for net, temps in zip(self.networks, self.temperatures, strict=True):
            logits = forward(net, flux, mask, self.batch_size, self.device)["logits"]
            out.append({name: (logits[name] / float(temps.get(name, 1.0))).numpy() for name in LABEL_NAMES})
        return out

    @torch.inference_mode()
    def ood_distance(self, embedding) -> np.ndarray:
        """Euclidean distance from each (unit) embedding to the nearest reference embedding; NaN without one."""
        if self.reference is None:
            return np.full(len(embedding), np.nan, dtype=np.float32)
        return nearest_reference_distance(embedding, self.reference)

    # -- preprocessing ------------------------------------------------------------------------------
    def _assumptions(self, spec: RawSpectrum, medium, resolution, fwhm):
        notes = list(spec.notes)
        if medium is not None:
            src_medium = medium
        elif spec.medium is not None:
            src_medium = spec.medium
        else:
            src_medium = self.instrument.medium
            notes.append(f"medium not declared: assumed {src_medium}")
        if src_medium != self.instrument.medium:
            notes.append(f"wavelengths converted from {src_medium} to {self.instrument.medium}")
        lsf = {}
        if resolution is not None:
            lsf = {"source_resolution": float(resolution)}
        elif fwhm is not None:
            lsf = {"source_fwhm": float(fwhm)}
        else:
            # Without a stated resolution assume the spectrum already has the instrument's LSF.
            lsf = ({"source_resolution": self.instrument.resolution} if self.instrument.resolution
                   else {"source_fwhm": self.instrument.fwhm})
            notes.append(f"resolution not given: assumed the {self.instrument.name} LSF")
            wave = np.asarray(spec.wave, dtype=np.float64)
            step = float(np.median(np.abs(np.diff(wave)))) if wave.size > 1 else np.inf
            per_fwhm = float(np.min(self.instrument.lsf_fwhm(self.wave))) / step if step > 0 else np.inf
            if per_fwhm > FINE_SAMPLING:
                # Far finer sampling than the instrument's means a sharper LSF, almost always: assume the
                # spectrograph samples its own LSF as most do, which the smoothing then takes to the model's.
                lsf = {"source_fwhm": ASSUMED_PIXELS_PER_FWHM * step}
                notes[-1] = (f"{RESOLUTION_NOTE}: {per_fwhm:.3g} pixels per {self.instrument.name} FWHM, so "
                             f"assumed an LSF {ASSUMED_PIXELS_PER_FWHM:g} pixels wide ({lsf['source_fwhm']:.3g} Å "
                             "FWHM); pass its resolution (--resolution R or --fwhm Å) to be sure")
        return src_medium, lsf, notes

    def check_lsf(self, resolution: float | None = None, fwhm: float | None = None) -> None:
        """ValueError, with the valid range, for an input LSF this model cannot use.

        Spectra can be smoothed to the instrument's LSF but not sharpened: ``resolution`` (R) must be
        at least the instrument's across its window, ``fwhm`` (Å) positive and at most its FWHM.
        """
        if resolution is not None and fwhm is not None:
            raise ValueError("give resolution or fwhm, not both")
        target = self.instrument.lsf_fwhm(self.wave)
        r_min, fwhm_max = float(np.max(self.wave / target)), float(np.min(target))
        lsf = (f"R = {self.instrument.resolution:g}" if self.instrument.resolution
               else f"FWHM {self.instrument.fwhm:g} Å")
        window = f"the {self.instrument.name} LSF, {lsf} over {self.wave[0]:.0f}-{self.wave[-1]:.0f} Å"
        slack = 1 + 1e-9  # the LSF given exactly as the instrument's is fine
        if resolution is not None and not (np.isfinite(resolution) and resolution * slack >= r_min):
            raise ValueError(f"resolution {resolution:g} is out of range: this model needs R >= {r_min:.6g} "
                             f"({window}); coarser spectra cannot be sharpened")
        if fwhm is not None and not (np.isfinite(fwhm) and 0 < fwhm <= fwhm_max * slack):
            why = "; wider LSFs cannot be sharpened" if fwhm > fwhm_max else ""
            raise ValueError(f"fwhm {fwhm:g} Å is out of range: this model needs 0 < FWHM <= {fwhm_max:.6g} Å "
                             f"({window}){why}")

    @staticmethod
    def check_rv(rv) -> None:
        """ValueError, with the valid range, for a radial velocity (km/s; scalar or one per spectrum) out of range."""
        if rv is None:
            return
        values = np.atleast_1d(np.asarray(rv, dtype=np.float64))
        bad = values[~(np.abs(values) <= MAX_RV_KMS)]
        if bad.size:
            raise ValueError(f"rv {bad[0]:g} km/s is out of range: |rv| must be at most {MAX_RV_KMS:g} km/s "
                             "(a radial velocity in km/s, not m/s, not a redshift)")

    def _check_raw(self, spec: RawSpectrum, medium, resolution, fwhm, rv):
        """Cheap per-spectrum checks and assumptions: ``(wave, medium, lsf keywords, notes, rv)``.

        ``rv`` None: estimated by cross-correlation when the model has a detector (:meth:`_estimate_rv`).
        """
        src_medium, lsf, notes = self._assumptions(spec, medium, resolution, fwhm)
        wave = np.asarray(spec.wave, dtype=np.float64)
        flux = np.asarray(spec.flux, dtype=np.float64)
        finite = flux[np.isfinite(flux)]
        if finite.size and not np.any(finite):
            raise RemapDataError(spec.source, "flux is zero everywhere: nothing to normalize")
        # the median of ~500 evenly spaced pixels says the same as all of them, at a fraction of the cost
        level = float(np.median(finite[:: max(finite.size // 512, 1)])) if finite.size else 1.0
        if level <= 0:
            raise RemapDataError(spec.source, f"median flux is {level:.3g}: remap needs positive flux, "
                                 "not magnitudes or a continuum-subtracted spectrum")
        if rv is None:
            rv = self._estimate_rv(spec, wave, src_medium, notes)
            if np.isfinite(rv) and abs(rv) > RV_TOLERANCE:
                wave = wave / (1.0 + rv / C_KMS)
                notes.append(f"radial velocity {rv:+.0f} km/s estimated by cross-correlation: shifted to rest frame")
        elif rv:
            wave = wave / (1.0 + float(rv) / C_KMS)
            notes.append(f"shifted to rest frame (rv = {float(rv):g} km/s)")
        return wave, src_medium, lsf, notes, np.nan if rv is None else float(rv)

    def _estimate_rv(self, spec: RawSpectrum, wave, src_medium, notes) -> float:
        """RV (km/s) of a raw spectrum against the detector's templates; NaN, with a note, when unsure."""
        from remap_lib.evaluation.robustness import estimate_rv, rv_templates

        if self.detector is None:
            return np.nan
        flux = np.array(spec.flux, dtype=np.float64)
        companions = [np.shape(x) for x in (spec.mask, spec.ivar) if x is not None]
        if (wave.ndim != 1 or flux.shape != wave.shape or any(c != wave.shape for c in companions)
                or not np.all(np.diff(wave) > 0)):
            return np.nan  # malformed: preprocessing rejects it with the reason, no estimate to make
        if self._templates is None:
            self._templates = rv_templates(self.detector)
        if spec.mask is not None:
            flux[np.asarray(spec.mask, dtype=bool)] = np.nan
        if spec.ivar is not None:
            flux[~(np.asarray(spec.ivar, dtype=np.float64) > 0)] = np.nan
        rv, peak = estimate_rv(convert_medium(wave, src_medium, self.instrument.medium), flux, self.wave,
                               self._templates)
        if np.isfinite(rv) and peak >= RV_MIN_PEAK:
            return rv
        notes.append(f"{RV_NOTE} (cross-correlation peak r = {peak:.2g}): assumed at rest; pass rv if it is not")
        return np.nan

    def _to_grid(self, wave, specs, src_medium, lsf, source):
        """``to_instrument`` for spectra sharing one wavelength array: one sparse operator, one fit.

        Returns ``(flux, mask, notes)``; ``notes`` says how far the data stop short of the window's
        ends, when they do (up to :data:`MAX_MISSING` of it is padded and masked).
        """
        def stack(attr):
            values = [getattr(s, attr) for s in specs]
            if values[0] is None:
                return None
            # a single spectrum goes in 1-D, so that error messages speak of its own shape
            return np.asarray(values[0]) if len(values) == 1 else np.stack([np.asarray(v) for v in values])

        out = to_instrument(wave, stack("flux"), self.instrument, stack("ivar"), stack("mask"), medium=src_medium,
                            source=source, continuum=self.continuum, max_uncovered=MAX_MISSING, **lsf)
        ends = pixel_edges(self.wave)[[0, -1]]
        window = convert_medium(ends, self.instrument.medium, src_medium)
        gaps = zip(uncovered(wave, window), ("blue", "red"), ends, strict=True)
        notes = [f"data stop {gap:.3g} Å short of the window's {side} end ({end:.2f} Å, {self.instrument.medium}): "
                 "padded and masked" for gap, side, end in gaps if gap > 0]
        ivar = (np.full(out.flux.shape, np.nan, np.float32) if out.ivar is None
                else np.where(out.mask, 0.0, out.ivar).astype(np.float32))
        return np.atleast_2d(out.flux.astype(np.float32)), np.atleast_2d(out.mask), notes, np.atleast_2d(ivar)

    def _on_grid(self, flux, mask, wave):
        """Rows already on the model's grid, ready for the network; None when ``wave`` is another grid."""
        if wave.shape != self.wave.shape or not np.allclose(wave, self.wave, rtol=0, atol=1e-6):
            return None
        flux = np.asarray(flux, dtype=np.float32)
        bad = np.asarray(mask, dtype=bool) | ~np.isfinite(flux)
        return np.where(bad, 1.0, flux).astype(np.float32), bad

    def prepare(self, spectra, medium: str | None = None, resolution: float | None = None,
                fwhm: float | None = None, rv=None) -> Prepared:
        """Put ``spectra`` (anything :func:`remap_lib.spectra.inputs.as_inputs` takes) on the model's grid.

        ``medium`` ('air'/'vacuum') overrides what files declare; ``resolution`` (R) or ``fwhm`` (Å)
        is the input's LSF (default: the instrument's own); ``rv`` (km/s, scalar or one per
        spectrum, |rv| <= :data:`~remap_lib.spectra.instruments.MAX_RV_KMS`) shifts spectra to the rest
        frame. Options out of range raise ValueError; per-spectrum failures are recorded, not raised.
        """
        if medium is not None and medium not in ("air", "vacuum"):
            raise ValueError(f"medium must be 'air' or 'vacuum', got {medium!r}")
        self.check_lsf(resolution, fwhm)
        self.check_rv(rv)
        items = as_inputs(spectra)
        npix = self.wave.size
        flux, mask, source, name, errors, notes, ivar, rv_out = [], [], [], [], [], [], [], []

        def fail(src, nm, reason, note=()):
            rv_out.append(np.nan)
            flux.append(np.ones((1, npix), np.float32))
            mask.append(np.ones((1, npix), bool))
            ivar.append(np.full((1, npix), np.nan, np.float32))
            source.append(src)
            name.append(nm)
            errors.append(reason)
            notes.append(list(note))

        raw_index = 0
        groups: dict = {}
        rvs = None if rv is None or np.ndim(rv) == 0 else np.asarray(rv, dtype=np.float64)
        for item in items:
            if isinstance(item, FailedInput):
                fail(item.source, "", item.reason)
                continue
            if isinstance(item, StoreSpectra | SpectraSet):
                is_store = isinstance(item, StoreSpectra)
                wave = np.asarray(item.wave)
                inst_medium = (item.instrument_dict["medium"] if is_store else item.instrument.medium)
                ids = [str(i) for i in item.ids]
                src = str(item.path) if is_store else "<SpectraSet>"
                start = item.start if is_store else 0
                ready = self._on_grid(item.flux, item.mask, wave)
                if ready is not None:
                    f, m = ready
                    flux.append(f)
                    mask.append(m)
                    rv_out += [np.nan] * len(f)
                    iv = getattr(item, "ivar", None)
                    ivar.append(np.full(f.shape, np.nan, np.float32) if iv is None
                                else np.where(m, 0.0, np.asarray(iv, dtype=np.float32)))
                    source += [f"{src}[{start + i}]" for i in range(len(f))]
                    name += ids
                    errors += [""] * len(f)
                    notes += [[] for _ in range(len(f))]
                    continue
                # another grid: treat rows as raw spectra in that store's medium
                item = [RawSpectrum(wave, item.flux[i], None, item.mask[i], inst_medium, f"{src}[{start + i}]",
                                    ids[i]) for i in range(len(item.flux))]
            for spec in item if isinstance(item, list) else [item]:
                this_rv = rv if rvs is None else (rvs[raw_index] if raw_index < len(rvs) else None)
                raw_index += 1
                try:
                    wave, src_medium, lsf, nt, rv_row = self._check_raw(spec, medium, resolution, fwhm, this_rv)
                except RemapDataError as err:
                    fail(spec.source, spec.name, err.problem, spec.notes)
                    continue
                # Spectra on one wavelength array (and with the same options) are resampled together.
                digest = hashlib.blake2b(wave.tobytes(), digest_size=16).digest()
                key = (digest, np.shape(spec.flux), src_medium, tuple(sorted(lsf.items())), spec.ivar is None,
                       spec.mask is None)
                groups.setdefault(key, (wave, []))[1].append((len(flux), spec))
                flux.append(None)
                mask.append(None)
                ivar.append(None)
                rv_out.append(rv_row)
                source.append(spec.source)
                name.append(spec.name)
                errors.append("")
                notes.append(nt)
        for (_, _, src_medium, lsf, *_), (wave, members) in groups.items():
            specs = [spec for _, spec in members]
            try:
                f, m, nt, iv = self._to_grid(wave, specs, src_medium, dict(lsf), specs[0].source)
                done = [(slot, f[k], m[k], "", nt, iv[k]) for k, (slot, _) in enumerate(members)]
            except RemapDataError:
                # one bad spectrum spoils a batch: redo them one by one so each row gets its own reason
                done = []
                for slot, spec in members:
                    try:
                        f, m, nt, iv = self._to_grid(wave, [spec], src_medium, dict(lsf), spec.source)
                        done.append((slot, f[0], m[0], "", nt, iv[0]))
                    except RemapDataError as err:
                        done.append((slot, np.ones(npix, np.float32), np.ones(npix, bool), err.problem, [],
                                     np.full(npix, np.nan, np.float32)))
            for slot, f, m, err, nt, iv in done:
                flux[slot], mask[slot], errors[slot], ivar[slot] = f[None], m[None], err, iv[None]
                notes[slot] = notes[slot] + nt
        if rvs is not None and raw_index != len(rvs):
            raise ValueError(f"rv has {len(rvs)} values but {raw_index} spectra were given")
        if not flux:
            return Prepared(np.ones((0, npix), np.float32), np.ones((0, npix), bool), [], [], [], [],
                            np.ones((0, npix), np.float32), np.zeros(0))
        return Prepared(np.concatenate(flux), np.concatenate(mask), source, name, errors, notes, np.concatenate(ivar),
                        np.asarray(rv_out, dtype=np.float64))

    # -- predictions --------------------------------------------------------------------------------
    def refusals(self, prep: Prepared) -> list[str]:
        """Why each prepared row is not predicted ('' where it is): its preparation's error, no usable
        pixel, or more than :data:`MAX_MISSING` of the window missing."""
        masked_fraction = prep.mask.mean(axis=1) if len(prep.flux) else np.zeros(0)
        window = "{:.2f}–{:.2f} Å".format(*pixel_edges(self.wave)[[0, -1]])
        errors = list(prep.errors)
        for i, error in enumerate(errors):
            if error:
                continue
            if masked_fraction[i] >= 1.0:
                errors[i] = "no usable pixel in the instrument window after preprocessing"
            elif masked_fraction[i] > MAX_MISSING:
                errors[i] = (f"{100 * masked_fraction[i]:.1f} % of the window {window} has no usable data (beyond "
                             f"the data's ends, NaN, masked or ivar 0); remap predicts with at most "
                             f"{100 * MAX_MISSING:g} % missing. To fix: supply the missing part of the window, "
                             "unmask pixels that are usable, or use a model trained for the range your data cover")
        return errors

    def predict_prepared(self, prep: Prepared, pmf: bool = False):
        """The output table (see the module docstring) for spectra already on the model's grid."""
        from astropy.table import Table

        n = len(prep.flux)
        masked_fraction = prep.mask.mean(axis=1) if n else np.zeros(0)
        errors = self.refusals(prep)
        ok = np.array([not e for e in errors], dtype=bool)
        snr_all, snr_claimed = row_snr(prep.flux, prep.mask, prep.ivar)
        snr = snr_all[ok]
        missing = self.widening.missing_factors(masked_fraction[ok])
        noisy = self.widening.noise_factors(snr)
        widen = {name: missing[name] * noisy[name] for name in LABEL_NAMES}
        # interval factors fitted at each S/N stand in for the noise widening on the intervals
        by_snr = self.widening.intervals_by_snr
        raw, widened, emb = self.network_widened(prep.flux[ok], prep.mask[ok], widen, *([missing] if by_snr else []))
        pmfs, for_intervals = widened[0], widened[-1]
        table = Table()
        table["source"] = np.asarray(prep.source, dtype=str) if n else np.zeros(0, dtype="U1")
        table["name"] = np.asarray(prep.name, dtype=str) if n else np.zeros(0, dtype="U1")
        flags = [[] for _ in range(n)]
        notes = [list(x) for x in prep.notes]
        rows = np.flatnonzero(ok)
        for k, r in enumerate(rows):
            if any(note.startswith(RESOLUTION_NOTE) for note in notes[r]):
                flags[r].append("resolution_assumed")
            if any(note.startswith(RV_NOTE) for note in notes[r]):
                flags[r].append("rv_unknown")
            if masked_fraction[r] > 0:
                flags[r].append("partial_coverage")
                factors = ", ".join(f"×{missing[name][k]:.3f} ({name})" for name in LABEL_NAMES)
                notes[r].append(f"{100 * masked_fraction[r]:.2g} % of the window has no usable data: PMF "
                                f"temperatures {factors}")
            claimed = snr_claimed[r]
            if np.isfinite(claimed) and claimed > 2 * snr_all[r]:
                notes[r].append(f"ivar says S/N {claimed:.3g} but the pixel-to-pixel scatter says {snr_all[r]:.3g}: "
                                "used the lower")
            if snr_all[r] < LOW_SNR:
                flags[r].append("low_snr")
            if any(noisy[name][k] > 1.0 for name in LABEL_NAMES):
                factors = ", ".join(f"×{noisy[name][k]:.3f} ({name})" for name in LABEL_NAMES)
                notes[r].append(f"S/N {snr_all[r]:.3g}, below the calibration stars' typical S/N: PMF temperatures "
                                f"{factors} for the noise")
        # the widening spreads the intervals about the unwidened median; then the conformal factors, where fitted
        decoded = {}
        for name in LABEL_NAMES:
            if not len(rows):
                decoded[name] = {k: np.zeros(0) for k in ESTIMATES}
                continue
            b = self.bins[name]
            decoded[name] = recentre(b.decode(for_intervals[name]), b.decode(raw[name]))
            if by_snr:  # std is the fully widened PMF's, as the pmf column
                decoded[name]["std"] = b.decode(pmfs[name])["std"]
        estimates = self.widening.scale_intervals(decoded, snr)
        for name in LABEL_NAMES:
            b = self.bins[name]
            decoded = estimates[name]
            for key in ESTIMATES:
                col = np.full(n, np.nan, dtype=np.float32)
                col[rows] = decoded[key]
                table[f"{name}_{key}"] = col
                table[f"{name}_{key}"].unit = b.unit or None
            # A median in the outermost bin means the truth may lie beyond what the model can say.
            edge = (decoded["median"] < b.edges_array[1]) | (decoded["median"] > b.edges_array[-2])
            for r in rows[edge]:
                flags[r].append(f"at_range_edge:{name}")
            if pmf:
                full = np.full((n, b.nbins), np.nan, dtype=np.float32)
                full[rows] = pmfs[name]
                table[f"{name}_pmf"] = full
        dist = np.full(n, np.nan, dtype=np.float32)
        dist[rows] = self.ood_distance(emb)
        table["ood_distance"] = dist
        score = np.full(n, np.nan, dtype=np.float32)
        if self.detector is not None and len(rows):
            medians = np.column_stack([np.asarray(table[f"{name}_median"])[rows] for name in LABEL_NAMES])
            score[rows] = self.detector.score(self.detector.features(prep.flux[ok], prep.mask[ok], snr, medians,
                                                                     dist[rows]))
            ood = np.zeros(n, dtype=bool)
            ood[rows] = self.detector.flag(score[rows], snr)
            for r in rows[snr < self.detector.snr_floor]:
                notes[r].append(f"S/N {snr_all[r]:.3g} is below {self.detector.snr_floor:g}: mostly noise")
            outside = self.detector.mass_outside(raw["teff"], self.bins["teff"].centers)
            for k in np.flatnonzero(self.detector.outside_range(outside)):
                lo, hi = self.detector.teff_range
                flags[rows[k]].append("teff_outside_range")
                notes[rows[k]].append(f"{outside[k]:.2f} of the Teff PMF lies outside {lo:g}-{hi:g} K, the range "
                                      "the model was fine-tuned on: the star is likely hotter or cooler than that, "
                                      "and its labels are an extrapolation")
        else:
            threshold = np.nan if self.ood_threshold is None else float(self.ood_threshold)
            ood = dist > threshold
        table["ood_score"] = score
        table["out_of_domain"] = ood
        table["snr"] = snr_all.astype(np.float32)
        table["rv"] = (np.full(n, np.nan) if prep.rv is None else prep.rv).astype(np.float32)
        table["rv"].unit = "km / s"
        table["masked_fraction"] = masked_fraction.astype(np.float32)
        for r in rows:
            if ood[r]:
                flags[r].append("out_of_domain")
        table["flags"] = [";".join(f) for f in flags] if n else np.zeros(0, dtype="U1")
        table["notes"] = ["; ".join(x) for x in notes] if n else np.zeros(0, dtype="U1")
        table["error"] = errors if n else np.zeros(0, dtype="U1")
        table.meta.update(self.table_meta(pmf))
        return table

    def table_meta(self, pmf: bool = False) -> dict:
        meta = {"model": str(self.path.name), "model_sha256": self.sha256, "members": len(self.networks),
                "instrument": self.instrument.name, "ood_threshold": self.ood_threshold,
                "ood_score_threshold": None if self.detector is None else self.detector.threshold,
                "widening": self.widening.describe(),
                "remap_version": _remap_version(), "model_versions": dict(self.versions)}
        if pmf:
            meta["bin_centers"] = {n: [float(c) for c in self.bins[n].centers] for n in LABEL_NAMES}
        return meta

    def predict(self, spectra, pmf: bool = False, medium: str | None = None, resolution: float | None = None,
                fwhm: float | None = None, rv=None):
        """One table row per input spectrum (see the module docstring)."""
        return self.predict_prepared(self.prepare(spectra, medium, resolution, fwhm, rv), pmf)


def load_detector(model_path, sha256: str):
    """The :class:`remap_lib.prediction.ood.Detector` saved next to ``model_path`` for this very model, or None."""
    from remap_lib.prediction.ood import Detector, detector_path

    path = detector_path(model_path)
    if not path.exists():
        return None
    det = Detector.load(path)
    return det if det.model_sha256 == sha256 else None


def row_snr(flux, mask, ivar=None) -> tuple[np.ndarray, np.ndarray]:
    """S/N per pixel of each row of continuum-normalized flux: ``(used, claimed by ivar)``.

    The pixel-to-pixel scatter (DER_SNR, Stoehr et al. 2008, on the usable pixels) bounds the S/N
    from above: it counts unresolved line structure as noise too, so it never overstates it. Where
    ivar was given, its median √ivar is the claim and the lower of the two is used: an ivar scaled
    by 1e6 cannot make noise vanish, one scaled by 1e-6 makes the row as noisy as it says. NaN
    claims where no ivar was given; S/N is inf for noise-free rows.
    """
    from remap_lib.training.trainsets import der_snr_noise

    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    mask = np.atleast_2d(np.asarray(mask, dtype=bool))
    if flux.shape[0] == 0:
        return np.zeros(0), np.zeros(0)
    f = np.where(mask, np.nan, flux)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-masked rows give NaN, handled below
        scatter = np.nanmedian(f, axis=1) / der_snr_noise(f)
        claimed = np.full(len(flux), np.nan)
        if ivar is not None:
            iv = np.where(mask, np.nan, np.atleast_2d(np.asarray(ivar, dtype=np.float64)))
            claimed = np.nanmedian(np.sqrt(iv), axis=1)
    scatter = np.where(np.isnan(scatter), np.inf, scatter)
    used = np.where(np.isnan(claimed), scatter, np.fmin(scatter, claimed))
    return used, claimed


def _remap_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("remap")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


_CACHE: dict = {}


def _file_stamps(model) -> tuple:
    """(size, mtime) of the model file and of the widening and detector files beside it (None: absent)."""
    from remap_lib.prediction.ood import detector_path  # ood imports this module

    path = Path(model) if model is not None else default_model_path()

    def stamp(p: Path):
        try:
            st = p.stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    return tuple(stamp(p) for p in (path, widening_path(path), detector_path(path)))


def predict(spectra, model=None, pmf: bool = False, medium: str | None = None, resolution: float | None = None,
            fwhm: float | None = None, rv=None, device="cpu", batch_size: int = 256, members: int | None = None):
    """Predict labels for ``spectra`` with ``model`` (a path; None = the shipped model) as an astropy Table.

    ``spectra``: arrays ``(wave, flux[, ivar])`` in Å or as Quantities, an astropy Table, a specutils
    spectrum, a file/directory/glob, or a list of these. See :class:`Predictor` for the options
    and the module docstring for the columns. The loaded model is cached between calls, until the model
    file or the widening or detector beside it changes (a refit in the same session is used at once).
    """
    key = (str(model), str(device), int(batch_size), members, _file_stamps(model))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = Predictor(model, device=device, batch_size=batch_size, members=members)
    return _CACHE[key].predict(spectra, pmf=pmf, medium=medium, resolution=resolution, fwhm=fwhm, rv=rv)

