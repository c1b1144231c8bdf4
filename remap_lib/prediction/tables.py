"""The files :func:`remap_lib.prediction.streaming.predict_files` writes: formats, writing, reading back.

One table of predictions per run, in ``.ecsv``, ``.fits``, ``.csv`` or ``.h5`` (:data:`OUTPUT_FORMATS`),
with the estimate columns' units and the run's metadata. Text columns are UTF-8 in every format (FITS:
byte columns holding UTF-8, decoded by :func:`read_predictions`); every file is written to a temporary
name and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from remap_lib.fileio import atomic_path

OUTPUT_FORMATS = {".ecsv": "ascii.ecsv", ".fits": "fits", ".csv": "ascii.csv", ".h5": "hdf5", ".hdf5": "hdf5"}
H5_TABLE_PATH = "predictions"
#: Failed rows a run's summary lists by name.
MAX_LISTED = 10
TEXT_COLUMNS = ("source", "name", "flags", "notes", "error")


def output_format(path) -> str:
    """The astropy (or ``hdf5``) format an output path's suffix asks for; a clear error for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"{path}: output must end in {', '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]


def write_predictions(output: Path, fmt: str, parts, meta: dict) -> tuple[int, int, list[tuple[str, str]]]:
    """Write the column tables ``parts`` (an iterable of name -> array dicts, in row order) as one ``output``
    file of format ``fmt`` (:func:`output_format`), atomically; .h5 is appended part by part, so memory
    holds one part. Returns the rows written, the failed rows, and (source, reason) of up to
    :data:`MAX_LISTED` failed ones, in order."""
    n_rows = n_failed = 0
    first: list[tuple[str, str]] = []
    if fmt == "hdf5":
        import h5py

        with atomic_path(output) as tmp, h5py.File(tmp, "w") as h5:
            dset = None
            for cols in parts:
                rec = _records(cols)
                if dset is None:
                    dset = h5.create_dataset(H5_TABLE_PATH, shape=(0,), maxshape=(None,), dtype=rec.dtype,
                                             chunks=True, compression="gzip", compression_opts=1)
                elif rec.dtype != dset.dtype:  # strings may be longer in a later chunk
                    rec = rec.astype(_widen(dset.dtype, rec.dtype))
                    if rec.dtype != dset.dtype:
                        dset = _regrow(h5, dset, rec.dtype)
                dset.resize((dset.shape[0] + len(rec),))
                dset[-len(rec):] = rec
                n_rows += len(rec)
                failed = cols["error"] != ""
                n_failed += int(failed.sum())
                first += list(zip(cols["source"][failed], cols["error"][failed], strict=True))[:MAX_LISTED - len(first)]
            if dset is not None:
                dset.attrs["meta"] = json.dumps(meta, default=str)
                dset.attrs["units"] = json.dumps(_units())
    else:
        from astropy.table import Table, vstack

        tables = [Table(cols) for cols in parts]
        table = vstack(tables) if tables else Table()
        for name, unit in _units().items():
            if name in table.colnames:
                table[name].unit = None if fmt == "fits" and unit == "dex" else unit
        table.meta.update({k: v for k, v in meta.items() if fmt != "ascii.csv"})
        n_rows = len(table)
        failed = np.asarray(table["error"]) != "" if n_rows else np.zeros(0, bool)
        n_failed = int(failed.sum())
        first = list(zip(np.asarray(table["source"])[failed], np.asarray(table["error"])[failed], strict=True))
        first = first[:MAX_LISTED]
        with atomic_path(output) as tmp:
            if fmt == "fits":
                table.meta = {"REMAPMET": json.dumps(meta, default=str)}  # FITS keywords are 8 characters
                for name in table.colnames:  # FITS text is ASCII: keep UTF-8 bytes, read_predictions decodes
                    if table[name].dtype.kind == "U":
                        table[name] = np.char.encode(np.asarray(table[name]), "utf-8")
                table.write(tmp, format=fmt, overwrite=True)
            else:
                with open(tmp, "w", encoding="utf-8", newline="") as fh:  # whatever the locale's codec
                    table.write(fh, format=fmt)
    return n_rows, n_failed, [(str(a), str(b)) for a, b in first]


def _units() -> dict[str, str]:
    """Units of the estimate columns, from their names (text and FITS outputs may not keep them)."""
    from remap_lib.constants import LABEL_NAMES, LABEL_UNITS
    from remap_lib.prediction.inference import ESTIMATES

    return {f"{n}_{k}": u for n, u in zip(LABEL_NAMES, LABEL_UNITS, strict=True) for k in ESTIMATES}


def _records(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Columns as one structured array (strings as UTF-8 bytes, as HDF5 and astropy expect)."""
    fields, arrays = [], []
    for name, values in cols.items():
        if values.dtype.kind == "U":
            values = np.char.encode(values, "utf-8")
            width = max(int(values.dtype.itemsize), 1)
            values = values.astype(f"S{width}")
        fields.append((name, values.dtype, values.shape[1:]) if values.ndim > 1 else (name, values.dtype))
        arrays.append(values)
    rec = np.empty(len(arrays[0]) if arrays else 0, dtype=fields)
    for (name, *_), values in zip(fields, arrays, strict=True):
        rec[name] = values
    return rec


def _widen(a: np.dtype, b: np.dtype) -> np.dtype:
    """A record dtype whose string fields are wide enough for both ``a`` and ``b``."""
    fields = []
    for name in a.names:
        fa, fb = a.fields[name][0], b.fields[name][0]
        if fa.kind == "S":
            fields.append((name, f"S{max(fa.itemsize, fb.itemsize)}"))
        else:
            fields.append((name, fa.base, fa.shape) if fa.shape else (name, fa))
    return np.dtype(fields)


def _regrow(h5, dset, dtype):
    """Copy ``dset`` into a new dataset with wider string fields (rare: only when names get longer)."""
    old = dset[...].astype(dtype)
    attrs = dict(dset.attrs)
    del h5[H5_TABLE_PATH]
    new = h5.create_dataset(H5_TABLE_PATH, data=old, maxshape=(None,), chunks=True, compression="gzip",
                            compression_opts=1)
    for k, v in attrs.items():
        new.attrs[k] = v
    return new


def read_predictions(path):
    """Read an output of :func:`predict_files` (any format) back as an astropy Table with units."""
    from astropy.table import Table

    path = Path(path)
    fmt = output_format(path)
    if fmt != "hdf5":
        if fmt == "fits":
            table = Table.read(path, format=fmt, character_as_bytes=True)
            for name in table.colnames:
                if table[name].dtype.kind == "S":
                    table[name] = np.char.decode(np.asarray(table[name]), "utf-8")
        else:
            with open(path, encoding="utf-8") as fh:  # written as UTF-8, whatever the locale's codec
                table = Table.read(fh.read().splitlines(), format=fmt)
        for name in TEXT_COLUMNS:  # text formats read empty strings back as masked (or typeless) entries
            if name in table.colnames and (hasattr(table[name], "mask") or table[name].dtype.kind != "U"):
                col = table[name]
                values = np.asarray(col.filled("") if hasattr(col, "filled") and col.dtype.kind == "U" else col)
                masked = np.asarray(getattr(col, "mask", np.zeros(len(col), bool)), bool)
                table[name] = np.where(masked, "", values.astype(str))
        for name, unit in _units().items():
            if name in table.colnames:
                table[name].unit = unit
        if fmt == "fits" and "REMAPMET" in table.meta:
            table.meta = json.loads(table.meta["REMAPMET"])
        return table
    import h5py

    with h5py.File(path, "r") as h5:
        data = h5[H5_TABLE_PATH][...]
        meta = json.loads(h5[H5_TABLE_PATH].attrs.get("meta", "{}"))
        units = json.loads(h5[H5_TABLE_PATH].attrs.get("units", "{}"))
    table = Table(data)
    for name in table.colnames:
        if table[name].dtype.kind == "S":
            table[name] = np.char.decode(np.asarray(table[name]), "utf-8")
        if name in units:
            table[name].unit = units[name]
    table.meta.update(meta)
    return table
