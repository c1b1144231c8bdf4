"""Putting users' spectra on a model's pixel grid: what :class:`~remap_lib.prediction.inference.Predictor`
does before the network.

Each input (anything :func:`remap_lib.spectra.inputs.as_inputs` takes) gets its medium, LSF and radial
velocity settled (declared, assumed with a note, or estimated), is resampled and smoothed to the instrument
by :func:`remap_lib.spectra.preprocess.to_instrument` (spectra sharing one wavelength array together), and
has the part of the window its data do not reach padded and masked. What happened to each is kept in
:class:`Prepared`; a bad spectrum gets its reason and never stops the others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from remap_lib.data.dataset import SpectraSet
from remap_lib.fileio import RemapDataError
from remap_lib.spectra.inputs import FailedInput, as_inputs
from remap_lib.spectra.instruments import C_KMS, MAX_RV_KMS
from remap_lib.spectra.preprocess import convert_medium, pixel_edges, to_instrument, uncovered
from remap_lib.spectra.readers import RawSpectrum, StoreSpectra

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


class InputPreparation:
    """The input side of :class:`~remap_lib.prediction.inference.Predictor`: checks, assumptions and resampling.

    Uses the predictor's ``instrument``, ``wave`` (its pixel grid), ``continuum`` (the continuum fit's
    settings) and ``detector`` (whose flux model gives the RV templates; None: no RV estimate).
    """

    _templates = None  # RV templates, made from the detector when first needed

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
