"""Miniature MILES files: the two label files' real layout and spectra laid out like the DAP's."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from remap_lib.data.sources import miles, miles_labels

# The real header of paramsMILES_v9.1.txt and three real rows (a G dwarf, an M dwarf with
# [Fe/H] '--', a globular-cluster giant whose name holds spaces and the 'Cl' flag).
TXT_HEADER = (
    "Name                  MILES   CaT   SpT            Teff   log g   [Fe/H]  Refs   Libraries\n"
    "                      s????   \n"
    " - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - --\n"
)
TXT_ROWS = (
    "HD224930               0001   673   G3 V            5305   4.49    -0.75   SKC   L     I E   \n"
    "G156-031               0838   705   M7e             2748   5.09      --    33    L            \n"
    "M71 X             Cl   0970   105    HB             5170   2.41    -0.84   2     L           \n"
)
DB_TEXT = (
    "#MILES  Teff  log g   [Fe/H]\n#s????   \n# - - - - - - - - - - - - --\n"
    "  0001  5305   4.49    -0.75\n"
    "  0838  2748   5.09     9999\n"
    "  0970  5170   2.41    -0.84\n"
)
IDS = (1, 838, 970)


def write_spectrum(path, flux=None, npix=miles.MILES_NPIX, crval=3540.5, cdelt=0.9, crpix=1, fwhm=2.5):
    """A FITS file laid out like the DAP's MILES spectra (1-D primary HDU, linear WCS)."""
    if flux is None:
        flux = 1.0 + 0.01 * np.sin(np.arange(npix) / 50.0)
    hdu = fits.PrimaryHDU(np.asarray(flux, dtype=np.float64))
    hdu.header["TPLLIB"] = "MILES"
    hdu.header["FWHM"] = fwhm
    hdu.header["CRPIX1"] = crpix
    hdu.header["CRVAL1"] = crval
    hdu.header["CDELT1"] = cdelt
    hdu.writeto(path, overwrite=True)
    return path


def write_folder(path):
    """A miniature MILES folder at ``path``: both label files and one spectrum per row."""
    (path / miles_labels.PARAMS_TXT).write_text(TXT_HEADER + TXT_ROWS)
    (path / miles_labels.PARAMS_DB).write_text(DB_TEXT)
    for k, i in enumerate(IDS):
        write_spectrum(miles.spectrum_path(path, i), flux=np.full(miles.MILES_NPIX, 1.0 + k))
    return path
