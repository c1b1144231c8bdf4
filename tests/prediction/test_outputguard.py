"""remap_lib.prediction.outputguard: refused outputs name the reason; one run holds an output at a time."""

import errno
import os

import pytest

from remap_lib.prediction.outputguard import (
    OutputError,
    OutputLock,
    OutputRefused,
    check_output_path,
    describe_os_error,
    recorded_digest,
)


def test_outputs_that_would_harm_the_inputs_are_refused(tmp_path):
    spectra = tmp_path / "spectra"
    spectra.mkdir()
    star = spectra / "star.fits"
    star.write_bytes(b"")
    with pytest.raises(OutputRefused, match="is one of the inputs"):
        check_output_path(star, [spectra], [star])
    with pytest.raises(OutputRefused, match="inside the input directory"):
        check_output_path(spectra / "out.fits", [spectra], [star])
    with pytest.raises(OutputRefused, match="matches the input pattern"):
        check_output_path(spectra / "out.fits", [str(spectra / "*.fits")], [star])
    with pytest.raises(OutputRefused, match="is a directory"):
        check_output_path(spectra, [star], [star])
    check_output_path(tmp_path / "out.h5", [spectra], [star])  # beside the inputs: fine


def test_a_second_run_on_the_same_output_is_told_who_holds_it(tmp_path):
    output = tmp_path / "out.h5"
    with OutputLock(output) as lock:
        assert lock.path.read_text().strip() == str(os.getpid())
        with pytest.raises(OutputError, match=f"another remap predict \\(PID {os.getpid()}\\)"):
            OutputLock(output).__enter__()
    assert not lock.path.exists()
    with OutputLock(output):  # released: the next run takes it
        pass


def test_os_errors_are_named_for_a_search_engine():
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device (ENOSPC)"


def test_a_file_that_is_not_an_output_of_ours_has_no_digest(tmp_path):
    junk = tmp_path / "out.h5"
    junk.write_bytes(b"not hdf5")
    assert recorded_digest(junk, "hdf5") is None
    text = tmp_path / "out.ecsv"
    text.write_text("# %ECSV 1.0\n# meta: {run_fingerprint: '" + "a" * 64 + "'}\nx\n1\n")
    assert recorded_digest(text, "ascii.ecsv") == "a" * 64
