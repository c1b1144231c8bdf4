"""Facts the whole package shares, each stated once: labels, their units and scales, the dwarf/giant
boundary, the FGK selections, the MILES library's native grid and physical constants.

Kept free of imports beyond ``math`` so that any module (and the CLI at start-up) can use it.
"""

from __future__ import annotations

import math

#: The three labels, in the column order of every label array, PMF dict and output table.
LABEL_NAMES = ("teff", "logg", "feh")
LABEL_UNITS = ("K", "dex", "dex")
#: How each label is written in the book's pages (HTML inside Markdown) and on matplotlib axes (mathtext),
#: and the decimals a value of it is shown with (a tenth of a label scale, below).
LABEL_HTML = {"teff": "T<sub>eff</sub>", "logg": "log g", "feh": "[Fe/H]"}
LABEL_PLOT = {"teff": r"$T_\mathrm{eff}$", "logg": "log g", "feh": "[Fe/H]"}
LABEL_DIGITS = {"teff": 0, "logg": 2, "feh": 2}

#: Label scales, one unit ≈ 100 K ≈ 0.2 dex ≈ 0.1 dex (~ the accuracy one can hope for at R ≈ 2000–11000).
#: They set the triplet loss's label distances and the cost matrices' widths the shipped networks were
#: trained with, and which star is "nearest" in label space (:func:`remap_lib.training.trainsets.nearest_by_labels`).
LABEL_SCALES = (100.0, 0.2, 0.1)

#: log g (dex) below which a star counts as giant or subgiant, at or above as dwarf.
GIANT_LOGG = 3.5

#: Teff range (K) of the MILES FGK stars that fine-tuning, validation and the giants test use.
FGK_TEFF = (4000.0, 7000.0)

#: The box of MARCS atmosphere nodes the synthetic libraries span (Teff K, log g dex, [M/H] dex).
FGK_BOX = {"teff": (3800.0, 7000.0), "logg": (0.5, 5.0), "monh": (-2.5, 0.5)}

#: MILES (Sánchez-Blázquez et al. 2006; Falcón-Barroso et al. 2011): Gaussian LSF of 2.5 Å FWHM on the
#: linear air-wavelength grid λ = 3540.5 + 0.9·i Å, 4300 pixels.
MILES_FWHM = 2.5
MILES_WAVE_START = 3540.5
MILES_WAVE_STEP = 0.9
MILES_NPIX = 4300

C_KMS = 299792.458  # speed of light, km/s
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))  # Gaussian σ = FWHM / 2.3548
