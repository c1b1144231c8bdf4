"""remap_lib.data.dataset: the one HDF5 layout for training sets, and the lazy torch Dataset."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from remap_lib.data import dataset as ds
from remap_lib.data.dataset import SpectraSet, read_dataset, write_dataset
from remap_lib.fileio import RemapDataError
from remap_lib.spectra.instruments import MILES

NPIX = 7


def _set(n=5):
    rng = np.random.default_rng(1)
    flux = rng.uniform(0.5, 1.0, (n, NPIX)).astype(np.float32)
    ivar = np.full((n, NPIX), 100.0, np.float32)
    ivar[0] = np.inf  # noise-free synthetic row
    ivar[1, 3] = 0.0
    mask = np.zeros((n, NPIX), bool)
    mask[1, 3] = True
    labels = np.array([[5750.0, 4.5, 0.0], [4500.0, 1.5, -1.0], [6000.0, np.nan, -0.5],
                       [np.nan, np.nan, np.nan], [3900.0, 5.0, 0.25]])[:n]
    return SpectraSet(
        wave=np.linspace(5000.0, 5005.4, NPIX), flux=flux, ivar=ivar, mask=mask, labels=labels,
        ids=np.array(["s0001", "HD 224930", "ünïcode", "m0004", "x"])[:n], instrument=MILES, kind="observed",
        provenance={"source": "test", "n": n, "nested": {"a": [1, 2]}},
        meta={"split": np.array(["train", "val", "train", "cal", "test"])[:n],
              "snr": np.array([10.0, 20.5, np.nan, 40.0, 50.0])[:n]},
    )


def test_round_trip(tmp_path):
    data = _set()
    path = write_dataset(tmp_path / "set.h5", data)
    back = read_dataset(path)
    np.testing.assert_array_equal(back.wave, data.wave)
    assert back.wave.dtype == np.float64 and back.flux.dtype == np.float32 and back.mask.dtype == bool
    np.testing.assert_array_equal(back.flux, data.flux)
    np.testing.assert_array_equal(back.ivar, data.ivar)
    assert np.isinf(back.ivar[0]).all() and back.ivar[1, 3] == 0.0
    np.testing.assert_array_equal(back.mask, data.mask)
    np.testing.assert_array_equal(back.labels, data.labels)  # NaN compare equal here
    assert np.isnan(back.labels[3]).all()
    assert list(back.ids) == ["s0001", "HD 224930", "ünïcode", "m0004", "x"]
    assert list(back.meta["split"]) == ["train", "val", "train", "cal", "test"]
    np.testing.assert_array_equal(back.meta["snr"], data.meta["snr"])
    assert back.meta["snr"].dtype == np.float64
    assert back.instrument == MILES
    assert back.kind == "observed"
    assert back.provenance == {"source": "test", "n": 5, "nested": {"a": [1, 2]}}
    with h5py.File(path) as h5:
        assert h5.attrs["format_version"] == ds.FORMAT_VERSION
        assert list(h5["labels"].attrs["names"]) == ["teff", "logg", "feh"]


def test_read_rows_and_select(tmp_path):
    data = _set()
    path = write_dataset(tmp_path / "set.h5", data)
    part = read_dataset(path, rows=[1, 3])
    assert len(part) == 2 and list(part.ids) == ["HD 224930", "m0004"]
    np.testing.assert_array_equal(part.flux, data.flux[[1, 3]])
    assert list(part.meta["split"]) == ["val", "cal"]
    sel = data.select(np.array([True, False, False, False, True]))
    assert list(sel.ids) == ["s0001", "x"] and sel.meta["snr"].tolist() == [10.0, 50.0]


def test_empty_set_round_trip(tmp_path):
    data = _set().select(np.zeros(5, bool))
    back = read_dataset(write_dataset(tmp_path / "none.h5", data))
    assert len(back) == 0 and back.flux.shape == (0, NPIX)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "set.h5"

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ds.json, "dumps", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_dataset(path, _set())
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_dataset(path, _set(3))
    monkeypatch.setattr(ds.json, "dumps", broken)
    with pytest.raises(RuntimeError):
        write_dataset(path, _set(5))
    assert len(read_dataset(path)) == 3  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["set.h5"]


def test_bad_files_name_the_file(tmp_path):
    good = write_dataset(tmp_path / "good.h5", _set())
    cut = tmp_path / "cut.h5"
    payload = good.read_bytes()
    cut.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(RemapDataError, match="cut.h5"):
        read_dataset(cut)
    empty = tmp_path / "empty.h5"
    empty.touch()
    with pytest.raises(RemapDataError, match="empty.h5: file is empty"):
        read_dataset(empty)
    with pytest.raises(RemapDataError, match="missing.h5: file does not exist"):
        read_dataset(tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["flux"] = np.zeros((2, 3))
    with pytest.raises(RemapDataError, match=r"other.h5: not a remap dataset: missing \['wave', 'ivar'"):
        read_dataset(other)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(RemapDataError, match="text.h5: not a readable HDF5"):
        read_dataset(text)


def test_newer_format_names_the_file(tmp_path):
    newer = tmp_path / "newer.h5"
    write_dataset(newer, _set())
    with h5py.File(newer, "a") as h5:
        h5.attrs["format_version"] = ds.FORMAT_VERSION + 1
    with pytest.raises(RemapDataError, match="newer.h5: written by a newer remap"):
        read_dataset(newer)


def test_shape_mismatch_raises():
    data = _set()
    kw = dict(wave=data.wave, flux=data.flux, ivar=data.ivar, mask=data.mask, labels=data.labels,
              ids=data.ids, instrument=MILES)
    SpectraSet(**kw)
    for name, bad, expected in (("wave", data.wave[:-1], r"wave has shape \(6,\), expected \(7,\)"),
                                ("ivar", data.ivar[:, :-1], r"ivar has shape \(5, 6\)"),
                                ("mask", data.mask[:4], "mask has shape"),
                                ("labels", data.labels[:, :2], r"labels has shape \(5, 2\), expected \(5, 3\)"),
                                ("ids", data.ids[:3], "ids has shape")):
        with pytest.raises(ValueError, match=expected):
            SpectraSet(**{**kw, name: bad})
    with pytest.raises(ValueError, match="meta/split has shape"):
        SpectraSet(**kw, meta={"split": np.array(["a", "b"])})
