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
  stars, or at S/N below 3. Where the detector holds the outside-the-box classifier
  (:mod:`remap_lib.prediction.outsidebox`, taught by MILES stars hotter than 7000 K or cooler than
  4000 K), the flag also fires when the classifier puts the spectrum outside the FGK box, and the row
  gets the flag ``outside_fgk_box``. Without a detector (a model of your own), ``out_of_domain`` is
  ``ood_distance`` above the threshold fitted at export and ``ood_score`` is NaN;
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
  :data:`~remap_lib.prediction.preparation.RV_TOLERANCE`), NaN when neither;
* ``masked_fraction``: the share of the instrument window without usable pixels, whether the data
  stop short of the window's ends or the pixels are NaN, masked or have ivar 0;
* ``flags``: ``;``-separated warnings: ``out_of_domain``; ``outside_fgk_box`` (above);
  ``teff_outside_range`` (the Teff PMF mostly outside the range the model was fine-tuned on,
  :data:`remap_lib.prediction.ood.OUTSIDE_MASS`);
  ``low_snr`` (S/N below :data:`LOW_SNR`, where medians drift, not only scatter); ``partial_coverage``;
  ``resolution_assumed`` (sampled with more than
  :data:`~remap_lib.prediction.preparation.FINE_SAMPLING` pixels per instrument FWHM but no resolution
  given: taken to have an LSF :data:`~remap_lib.prediction.preparation.ASSUMED_PIXELS_PER_FWHM` pixels
  wide); ``rv_unknown`` (no RV given and none could be estimated: taken at rest);
  ``at_range_edge:<label>``;
* ``notes``: what was assumed or converted (medium, units, resolution, padded edges, widened PMFs);
* ``error``: why a row failed (its numbers are then NaN); empty for rows that worked.

A bad spectrum never stops the others. Inputs are put on the model's instrument with the same
:func:`remap_lib.spectra.preprocess.to_instrument` used for training data
(:mod:`remap_lib.prediction.preparation`).

Missing pixels, one rule: the part of the window the data do not reach is padded and masked, as
NaN, masked and ivar-0 pixels are, and the network ignores masked pixels (they are set to the
continuum). A row whose ``masked_fraction`` is at most
:data:`~remap_lib.prediction.preparation.MAX_MISSING` (10 %) is predicted, flagged ``partial_coverage``,
and its PMFs are widened by the model file's missing-data widening (a temperature growing with the
missing share, fitted on MILES validation stars by :mod:`remap_lib.evaluation.coverage`;
:mod:`remap_lib.prediction.widening`);
beyond it the row fails and its error says what would fix it.
"""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from remap_lib.constants import FGK_TEFF, LABEL_NAMES
from remap_lib.evaluation.forward import ensemble_mean, forward
from remap_lib.evaluation.retrieval import nearest_reference_distance
from remap_lib.fileio import RemapDataError, sha256_file
from remap_lib.nn.model import InferenceNet, fuse_for_inference
from remap_lib.nn.modelfile import load_members
from remap_lib.prediction.outsidebox import box_features
from remap_lib.prediction.preparation import RESOLUTION_NOTE, RV_NOTE, InputPreparation, Prepared
from remap_lib.prediction.widening import load_widening, recentre, widening_path

#: The model shipped with the package: the ``default`` profile's fine-tuned, calibrated ensemble (MILES).
DEFAULT_MODEL_NAME = "deep_remap_miles_default.pt"
ESTIMATES = ("median", "p16", "p84", "p2_5", "p97_5", "mean", "std")
#: Rows with S/N per pixel below this are flagged ``low_snr``: from S/N 20 down the medians of MILES
#: stars drift, not only scatter (results/robustness.json: −53 K, −0.04 and −0.07 dex at S/N 20, −256 K,
#: −0.37 and −0.27 dex at S/N 10 for the shipped model).
LOW_SNR = 20.0


def default_model_path() -> Path:
    """Path of the model file shipped inside the package."""
    return Path(str(resources.files("remap_lib") / "models" / DEFAULT_MODEL_NAME))



class Predictor(InputPreparation):
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

    # -- predictions --------------------------------------------------------------------------------
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
            features = self.detector.features(prep.flux[ok], prep.mask[ok], snr, medians, dist[rows])
            score[rows] = self.detector.score(features)
            ood = np.zeros(n, dtype=bool)
            ood[rows] = self.detector.flag(score[rows], snr)
            if self.detector.box is not None:
                self._flag_outside_box(raw, features[:, 0], emb, rows, ood, flags, notes)
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

    def _flag_outside_box(self, raw, log_chi2, emb, rows, ood, flags, notes) -> None:
        """``out_of_domain`` and ``outside_fgk_box`` where the outside-the-box classifier fires, with a note."""
        box = self.detector.box
        features = box_features(raw, log_chi2, emb)
        lo, hi = self.detector.teff_range or FGK_TEFF
        probability = box.probability(features)
        for k in np.flatnonzero(box.flag(features)):
            ood[rows[k]] = True
            flags[rows[k]].append("outside_fgk_box")
            notes[rows[k]].append(f"a classifier of MILES stars in and outside the FGK box ({lo:g}-{hi:g} K) puts "
                                  f"it outside (probability {probability[k]:.2f}): likely a hotter (A, early F) or "
                                  "cooler (late K, M) star, whose labels are an extrapolation")

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

