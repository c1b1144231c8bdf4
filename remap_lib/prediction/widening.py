"""How much a model's intervals widen for missing pixels and for noise, fitted for that model file.

The calibrated temperatures hold for complete spectra at the S/N of the stars they were fitted on.
Two measurements extend them, each for one model file:

* ``missing``: a slope s per label, T → T·(1 + s·f) for a missing share f of the window
  (``python -m remap_lib.evaluation.coverage``, fitted on the MILES validation stars);
* ``noise``: [S/N, factor] nodes per label, interpolated in log S/N
  (``python -m remap_lib.evaluation.robustness noise``, the same stars degraded in S/N).

A third part does not widen the PMFs but the intervals read from them:

* ``intervals``: per level ("68", "95") and label a factor on the interval's two half-widths about
  the median, for the stars called dwarfs (log g ≥ 3.5: the stars it is fitted on), fitted to
  coverage by cross-fold conformal scaling on the cross-validated predictions of this model's
  recipe (``python -m remap_lib.evaluation.conformal``; :mod:`remap_lib.evaluation.conformal`); with
  ``by_snr``, also at S/N nodes fitted on the study's noisier copies of those stars. Such factors were
  fitted on intervals no noise widening touched, so they stand in for it: ``predict`` then reads the
  intervals from the PMF widened for missing data only.

The two temperature parts widen a PMF's intervals, not its point estimates: the quantiles of the
widened PMF are moved back onto the unwidened median (:func:`recentre`), and the fits measure the
coverage of intervals made that way.

They live in ``<model>.widening.json`` beside the model, with the model's sha256, like its
out-of-domain detector: a model fine-tuned by a user gets no widening fitted for another network
(its table says so) until those commands are run for it. The file is written by the commands,
never by hand.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from remap_lib.constants import LABEL_NAMES
from remap_lib.fileio import locked, write_json
from remap_lib.nn.binning import QUANTILES

PARTS = ("missing", "noise", "intervals")


def widening_path(model_path) -> Path:
    """``model.pt`` -> ``model.widening.json``."""
    path = Path(model_path)
    return path.with_name(path.stem + ".widening.json")


def noise_inflation(snr, table: dict) -> dict[str, np.ndarray]:
    """Per-label factors on the calibrated temperatures for rows of S/N ``snr`` (per pixel).

    Linear in log S/N between the [S/N, factor] nodes of ``table`` ``{label: [[snr, factor], ...]}``,
    1 above the highest S/N node and the last factor below the lowest (S/N under
    :data:`remap_lib.prediction.ood.SNR_FLOOR` is flagged out of domain anyway); 1 for a label
    without nodes.
    """
    snr = np.asarray(snr, dtype=np.float64)
    out = {}
    for name in LABEL_NAMES:
        nodes = np.asarray(table.get(name) or [], dtype=np.float64).reshape(-1, 2)
        out[name] = interp_log_snr(snr, nodes[:, 0], nodes[:, 1], 1.0) if len(nodes) else np.ones_like(snr)
    return out


def interp_log_snr(snr, nodes, values, above: float) -> np.ndarray:
    """``values`` at S/N ``nodes``, linear in log S/N between them, the lowest node's value below them
    and ``above`` above the highest (the nodes in any order)."""
    nodes, values = np.asarray(nodes, dtype=np.float64), np.asarray(values, dtype=np.float64)
    order = np.argsort(nodes)
    x = np.log(np.clip(np.asarray(snr, dtype=np.float64), 1e-6, 1e12))
    return np.interp(x, np.log(nodes[order]), values[order], left=values[order][0], right=above)


def recentre(widened: dict, raw: dict) -> dict:
    """Decoded estimates of a widened PMF moved back onto the unwidened PMF's median.

    Raising the temperature of a PMF on a bounded grid also moves its median towards the grid's
    middle (a dwarf's log g at S/N 10 would drop by 0.3 dex from the widening alone), so the widening
    is kept for the spread and not for the point estimates: ``median``, ``mean`` and ``mode`` are
    ``raw``'s, and every other quantile is ``widened``'s shifted by (raw median − widened median);
    ``std`` is the widened PMF's. Both are ``{estimate: (n,)}``, as
    :meth:`~remap_lib.nn.binning.LabelBins.decode` gives them.
    """
    shift = np.asarray(raw["median"]) - np.asarray(widened["median"])
    out = {k: np.asarray(v) + shift for k, v in widened.items() if k in QUANTILES}
    out.update({k: np.asarray(raw[k]) for k in ("median", "mean", "mode") if k in raw})
    return {**widened, **out}


def missing_inflation(fraction, slopes: dict) -> dict[str, np.ndarray]:
    """Per-label factors 1 + s·f on the calibrated temperatures for rows missing ``fraction`` f of the window."""
    f = np.clip(np.asarray(fraction, dtype=np.float64), 0.0, None)
    return {name: 1.0 + float(slopes.get(name, 0.0)) * f for name in LABEL_NAMES}


@dataclass
class Widening:
    """The widenings of one model file (empty parts widen nothing)."""

    missing: dict = field(default_factory=dict)  # {label: slope s}
    noise: dict = field(default_factory=dict)  # {label: [[snr, factor], ...]}
    #: {"68" | "95": {label: factor on the half-widths}}, and optionally "by_snr": {"snr": [S/N nodes,
    #: clean first], "68" | "95": {label: [factor per node]}}: factors fitted on noisy copies, which
    #: then stand in for the noise widening on the intervals (:meth:`interval_factors`)
    intervals: dict = field(default_factory=dict)
    model_sha256: str | None = None
    fitted_by: dict = field(default_factory=dict)  # part -> the command and report that fitted it

    def missing_factors(self, fraction) -> dict[str, np.ndarray]:
        return missing_inflation(fraction, self.missing)

    def noise_factors(self, snr) -> dict[str, np.ndarray]:
        return noise_inflation(snr, self.noise)

    @property
    def intervals_by_snr(self) -> bool:
        """Whether the interval factors depend on S/N; if so, they replace the noise widening on the
        intervals, which ``predict`` then reads from a PMF widened for missing data only."""
        return bool(self.intervals.get("by_snr"))

    def interval_factors(self, snr) -> dict[str, np.ndarray]:
        """Per level, the factors (n, 3) on the half-widths of rows of S/N ``snr``: the clean factors, or
        with ``by_snr`` linear in log S/N between its nodes (the clean factors at and above the
        highest node, the lowest node's below it); 1 where nothing was fitted."""
        from remap_lib.evaluation.conformal import LEVELS

        snr = np.atleast_1d(np.asarray(snr, dtype=np.float64))
        by_snr = self.intervals.get("by_snr") or {}
        out = {}
        for level in LEVELS:
            cols = []
            for name in LABEL_NAMES:
                clean = float(self.intervals.get(level, {}).get(name, 1.0))
                values = (by_snr.get(level) or {}).get(name)
                if not values:
                    cols.append(np.full(snr.shape, clean))
                    continue
                cols.append(interp_log_snr(snr, by_snr["snr"], values, clean))
            out[level] = np.column_stack(cols)
        return out

    def scale_intervals(self, decoded: dict, snr=None) -> dict:
        """``decoded`` estimates ``{label: {estimate: (n,)}}`` with each interval scaled about the median by
        its factor (at each row's ``snr`` where the factors depend on it), for the rows called dwarfs
        (:func:`remap_lib.evaluation.conformal.scale_intervals`)."""
        from remap_lib.evaluation.conformal import scale_intervals

        quantiles = tuple(QUANTILES)
        pred = np.stack([np.column_stack([np.asarray(decoded[n][q], dtype=np.float64) for q in quantiles])
                         for n in LABEL_NAMES], axis=1).reshape(-1, len(LABEL_NAMES), len(quantiles))
        snr = np.full(len(pred), np.inf) if snr is None else np.asarray(snr, dtype=np.float64)
        scaled = scale_intervals(pred, self.interval_factors(snr))
        out = {name: dict(d) for name, d in decoded.items()}
        for j, name in enumerate(LABEL_NAMES):
            for k, q in enumerate(quantiles):
                if q != "median":
                    out[name][q] = scaled[:, j, k].astype(np.float32)
        return out

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts this file holds."""
        return tuple(p for p in PARTS if getattr(self, p))

    def describe(self) -> str:
        if not self.parts:
            return "none: no widening was fitted for this model file (intervals hold for complete spectra at S/N ≳ 50)"
        return "fitted for this model file: " + "; ".join(f"{p} ({self.fitted_by.get(p, '?')})" for p in self.parts)

    def save(self, path) -> Path:
        path = Path(path)
        write_json(path, asdict(self))
        return path

    @classmethod
    def load(cls, path) -> Widening:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            unknown = set(data) - {*PARTS, "model_sha256", "fitted_by"}
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}")
            return cls(**data)
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: not a widening file ({err})") from err


def load_widening(model_path, model_sha256: str) -> Widening:
    """The widening fitted for ``model_path``; an empty one when there is none, or it was fitted for other weights."""
    path = widening_path(model_path)
    if not path.is_file():
        return Widening(model_sha256=model_sha256)
    found = Widening.load(path)
    return found if found.model_sha256 == model_sha256 else Widening(model_sha256=model_sha256)


def update_widening(model_path, model_sha256: str, part: str, values: dict, fitted_by: str) -> Path:
    """Set one part of the model's widening file (the other part is kept if it was fitted for the same weights).

    ``model_path`` None: the shipped model (the fitting commands' default).

    Read, change, write under a lock on the file, so fitting commands run at once keep each other's parts.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if model_path is None:
        from remap_lib.prediction.inference import default_model_path  # inference imports this module

        model_path = default_model_path()
    with locked(widening_path(model_path)):  # the fitting commands may run at once
        current = load_widening(model_path, model_sha256)
        setattr(current, part, values)
        current.fitted_by = {**current.fitted_by, part: fitted_by}
        return current.save(widening_path(model_path))
