"""Spectra: instruments, preprocessing (LSF, resampling, continuum), readers and input checks."""
