"""Predict Teff, log g and [Fe/H] with a trained model for any spectra: :func:`predict` and :class:`Predictor`.

    >>> from remap_lib import predict
    >>> table = predict((wave, flux, ivar))            # the shipped model, arrays in Å
    >>> table["teff_median", "teff_p16", "teff_p84", "flags", "error"]

Each input spectrum becomes one row of an astropy ``Table``: per label the median, the 16/84 and
2.5/97.5 percentiles, the mean and standard deviation of the (temperature-scaled, ensemble-averaged)
probability mass function, optionally the PMF itself, and

* ``ood_distance`` / ``out_of_domain``: the distance in the embedding space from the spectrum to the
  nearest training spectrum, and whether it exceeds the threshold fitted when the model was
  exported (spectra unlike anything the network was trained on get confident-looking nonsense);
* ``masked_fraction``: the share of the instrument window without usable pixels, whether the data
  stop short of the window's ends or the pixels are NaN, masked or have ivar 0;
* ``flags``: ``;``-separated warnings (``out_of_domain``, ``partial_coverage``, ``at_range_edge:<label>``);
* ``notes``: what was assumed or converted (medium, units, resolution, padded edges, widened PMFs);
* ``error``: why a row failed (its numbers are then NaN); empty for rows that worked.

A bad spectrum never stops the others. Inputs are put on the model's instrument with the same
:func:`remap_lib.spectra.preprocess.to_instrument` used for training data.

Missing pixels, one rule: the part of the window the data do not reach is padded and masked, as
NaN, masked and ivar-0 pixels are, and the network ignores masked pixels (they are set to the
continuum). A row whose ``masked_fraction`` is at most :data:`MAX_MISSING` (10 %) is predicted,
flagged ``partial_coverage``, and its PMFs are widened by :func:`missing_inflation` (a temperature
growing with the missing share, fitted on MILES validation stars by :mod:`remap_lib.evaluation.coverage`);
beyond it the row fails and its error says what would fix it.
"""

from __future__ import annotations

import hashlib
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
from remap_lib.spectra.inputs import FailedInput, as_inputs
from remap_lib.spectra.instruments import C_KMS, MAX_RV_KMS
from remap_lib.spectra.preprocess import convert_medium, pixel_edges, to_instrument, uncovered
from remap_lib.spectra.readers import RawSpectrum, StoreSpectra

#: The model shipped with the package: the ``default`` profile's fine-tuned, calibrated ensemble (MILES).
DEFAULT_MODEL_NAME = "deep_remap_miles_default.pt"
ESTIMATES = ("median", "p16", "p84", "p2_5", "p97_5", "mean", "std")
#: The largest share of the window that may lack usable pixels (beyond the data's ends, NaN, masked,
#: ivar 0) for a row to be predicted: the range over which :data:`MISSING_INFLATION` was measured.
MAX_MISSING = 0.10
#: Growth of each head's temperature with the missing share f of the window, T → T·(1 + s·f)
#: (:func:`missing_inflation`), fitted for the shipped model on the MILES validation stars by
#: ``python -m remap_lib.evaluation.coverage`` (report: results/partial_coverage.json).
MISSING_INFLATION = {"teff": 2.71, "logg": 1.98, "feh": 3.48}


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
        """Cheap per-spectrum checks and assumptions: ``(wave, medium, lsf keywords, notes)``."""
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
        if rv:
            wave = wave / (1.0 + float(rv) / C_KMS)
            notes.append(f"shifted to rest frame (rv = {float(rv):g} km/s)")
        return wave, src_medium, lsf, notes

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
        return np.atleast_2d(out.flux.astype(np.float32)), np.atleast_2d(out.mask), notes

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
        flux, mask, source, name, errors, notes = [], [], [], [], [], []

        def fail(src, nm, reason, note=()):
            flux.append(np.ones((1, npix), np.float32))
            mask.append(np.ones((1, npix), bool))
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
                    wave, src_medium, lsf, nt = self._check_raw(spec, medium, resolution, fwhm, this_rv)
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
                source.append(spec.source)
                name.append(spec.name)
                errors.append("")
                notes.append(nt)
        for (_, _, src_medium, lsf, *_), (wave, members) in groups.items():
            specs = [spec for _, spec in members]
            try:
                f, m, nt = self._to_grid(wave, specs, src_medium, dict(lsf), specs[0].source)
                done = [(slot, f[k], m[k], "", nt) for k, (slot, _) in enumerate(members)]
            except RemapDataError:
                # one bad spectrum spoils a batch: redo them one by one so each row gets its own reason
                done = []
                for slot, spec in members:
                    try:
                        f, m, nt = self._to_grid(wave, [spec], src_medium, dict(lsf), spec.source)
                        done.append((slot, f[0], m[0], "", nt))
                    except RemapDataError as err:
                        done.append((slot, np.ones(npix, np.float32), np.ones(npix, bool), err.problem, []))
            for slot, f, m, err, nt in done:
                flux[slot], mask[slot], errors[slot] = f[None], m[None], err
                notes[slot] = notes[slot] + nt
        if rvs is not None and raw_index != len(rvs):
            raise ValueError(f"rv has {len(rvs)} values but {raw_index} spectra were given")
        if not flux:
            return Prepared(np.ones((0, npix), np.float32), np.ones((0, npix), bool), [], [], [], [])
        return Prepared(np.concatenate(flux), np.concatenate(mask), source, name, errors, notes)

    # -- predictions --------------------------------------------------------------------------------
    def predict_prepared(self, prep: Prepared, pmf: bool = False):
        """The output table (see the module docstring) for spectra already on the model's grid."""
        from astropy.table import Table

        n = len(prep.flux)
        ok = np.array([not e for e in prep.errors], dtype=bool)
        masked_fraction = prep.mask.mean(axis=1) if n else np.zeros(0)
        nothing = ok & (masked_fraction >= 1.0)
        errors = list(prep.errors)
        for i in np.flatnonzero(nothing):
            errors[i] = "no usable pixel in the instrument window after preprocessing"
        ok &= ~nothing
        window = "{:.2f}–{:.2f} Å".format(*pixel_edges(self.wave)[[0, -1]])
        for i in np.flatnonzero(ok & (masked_fraction > MAX_MISSING)):
            errors[i] = (f"{100 * masked_fraction[i]:.1f} % of the window {window} has no usable data (beyond the "
                         f"data's ends, NaN, masked or ivar 0); remap predicts with at most {100 * MAX_MISSING:g} % "
                         "missing. To fix: supply the missing part of the window, unmask pixels that are usable, or "
                         "use a model trained for the range your data cover")
            ok[i] = False
        widen = missing_inflation(masked_fraction[ok])
        pmfs, emb = self.network(prep.flux[ok], prep.mask[ok], widen)
        table = Table()
        table["source"] = np.asarray(prep.source, dtype=str) if n else np.zeros(0, dtype="U1")
        table["name"] = np.asarray(prep.name, dtype=str) if n else np.zeros(0, dtype="U1")
        flags = [[] for _ in range(n)]
        notes = [list(x) for x in prep.notes]
        rows = np.flatnonzero(ok)
        for k, r in enumerate(rows):
            if masked_fraction[r] > 0:
                flags[r].append("partial_coverage")
                factors = ", ".join(f"×{widen[name][k]:.3f} ({name})" for name in LABEL_NAMES)
                notes[r].append(f"{100 * masked_fraction[r]:.2g} % of the window has no usable data: PMF "
                                f"temperatures {factors}")
        for name in LABEL_NAMES:
            b = self.bins[name]
            decoded = b.decode(pmfs[name]) if len(rows) else {k: np.zeros(0) for k in ESTIMATES}
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
        threshold = np.nan if self.ood_threshold is None else float(self.ood_threshold)
        table["out_of_domain"] = dist > threshold
        table["masked_fraction"] = masked_fraction.astype(np.float32)
        for r in rows:
            if dist[r] > threshold:
                flags[r].append("out_of_domain")
        table["flags"] = [";".join(f) for f in flags] if n else np.zeros(0, dtype="U1")
        table["notes"] = ["; ".join(x) for x in notes] if n else np.zeros(0, dtype="U1")
        table["error"] = errors if n else np.zeros(0, dtype="U1")
        table.meta.update(self.table_meta(pmf))
        return table

    def table_meta(self, pmf: bool = False) -> dict:
        meta = {"model": str(self.path.name), "model_sha256": self.sha256, "members": len(self.networks),
                "instrument": self.instrument.name, "ood_threshold": self.ood_threshold,
                "remap_version": _remap_version(), "model_versions": dict(self.versions)}
        if pmf:
            meta["bin_centers"] = {n: [float(c) for c in self.bins[n].centers] for n in LABEL_NAMES}
        return meta

    def predict(self, spectra, pmf: bool = False, medium: str | None = None, resolution: float | None = None,
                fwhm: float | None = None, rv=None):
        """One table row per input spectrum (see the module docstring)."""
        return self.predict_prepared(self.prepare(spectra, medium, resolution, fwhm, rv), pmf)


def missing_inflation(fraction) -> dict[str, np.ndarray]:
    """Per-label factors on the calibrated temperatures for rows missing ``fraction`` of the window.

    T → T·(1 + s·f) with s from :data:`MISSING_INFLATION`: 1 for a complete spectrum, growing
    linearly up to :data:`MAX_MISSING`, the range over which s was measured.
    """
    f = np.clip(np.asarray(fraction, dtype=np.float64), 0.0, None)
    return {name: 1.0 + MISSING_INFLATION[name] * f for name in LABEL_NAMES}


def _remap_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("remap")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


_CACHE: dict = {}


def predict(spectra, model=None, pmf: bool = False, medium: str | None = None, resolution: float | None = None,
            fwhm: float | None = None, rv=None, device="cpu", batch_size: int = 256, members: int | None = None):
    """Predict labels for ``spectra`` with ``model`` (a path; None = the shipped model) as an astropy Table.

    ``spectra``: arrays ``(wave, flux[, ivar])`` in Å or as Quantities, an astropy Table, a specutils
    spectrum, a file/directory/glob, or a list of these. See :class:`Predictor` for the options
    and the module docstring for the columns. The loaded model is cached between calls.
    """
    key = (str(model), str(device), int(batch_size), members)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = Predictor(model, device=device, batch_size=batch_size, members=members)
    return _CACHE[key].predict(spectra, pmf=pmf, medium=medium, resolution=resolution, fwhm=fwhm, rv=rv)

