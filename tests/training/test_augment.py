"""Tests of remap_lib.training.augment: determinism, identity, and each effect against its physics."""

import math

import numpy as np
import pytest
import torch

from remap_lib.constants import C_KMS, FWHM_TO_SIGMA
from remap_lib.spectra.instruments import MARVELS, MILES, Instrument
from remap_lib.training.augment import EFFECTS, AugmentConfig, Augmenter, AugmentParams

torch.set_num_threads(2)


# constant R on linear pixels: the LSF width in pixels varies across the window (per-pixel kernels)
VARYING = Instrument("varying", 5000.0, 5700.0, resolution=8000.0, pixel=0.2)


def gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def line_spectra(wave, centre, sigma_aa, depth=0.5, batch=1):
    profile = 1.0 - depth * np.exp(-0.5 * ((wave - centre) / sigma_aa) ** 2)
    return torch.tensor(np.tile(profile, (batch, 1)), dtype=torch.float32)


def moments(wave, flux, centre=5350.0, half_width=15.0):
    """Equivalent width (Å), centroid and σ (Å) of the absorption within ±half_width of centre."""
    wave = torch.as_tensor(wave, dtype=torch.float64)
    d = (1.0 - flux.to(torch.float64)) * ((wave - centre).abs() < half_width)
    dl = torch.as_tensor(np.gradient(wave.numpy()))
    ew = (d * dl).sum(1)
    centre = (d * dl * wave).sum(1) / ew
    var = (d * dl * (wave - centre[:, None]) ** 2).sum(1) / ew
    return ew, centre, var.sqrt()


def synthetic_batch(wave, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    flux = np.ones((batch, len(wave)))
    for _ in range(40):
        c = rng.uniform(wave[0], wave[-1])
        flux *= 1 - rng.uniform(0.1, 0.6) * np.exp(-0.5 * ((wave - c) / 0.6) ** 2)
    return torch.tensor(flux, dtype=torch.float32)


@pytest.fixture(scope="module")
def miles():
    wave = MILES.wavelength_grid()
    return wave, synthetic_batch(wave)


def test_determinism_and_per_sample_draws(miles):
    wave, flux = miles
    aug = Augmenter(wave, MILES, AugmentConfig())
    a = aug(flux, generator=gen(1))
    b = aug(flux, generator=gen(1))
    c = aug(flux, generator=gen(2))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    # identical inputs in a batch get different draws
    same = flux[:1].expand(6, -1)
    out, ivar, _ = aug(same, generator=gen(3))
    assert len({tuple(row[:50].tolist()) for row in out}) == 6
    assert len(set(ivar[:, 400].tolist())) == 6  # a different S/N per spectrum


def test_none_is_identity_and_inputs_untouched(miles):
    wave, flux = miles
    ivar = torch.full_like(flux, 400.0)
    mask = torch.zeros_like(flux, dtype=torch.bool)
    mask[:, 10:13] = True
    copies = (flux.clone(), ivar.clone(), mask.clone())
    out = Augmenter(wave, MILES, AugmentConfig.none())(flux, ivar, mask, generator=gen(0))
    for got, want in zip(out, copies, strict=True):
        assert torch.equal(got, want)
        assert got.data_ptr() != want.data_ptr()
    cfg = AugmentConfig(p_resolution=1, p_rv=1, p_wave_jitter=1, p_tilt=1, p_scale=1, p_bad_pixels=1)
    Augmenter(wave, MILES, cfg)(flux, ivar, mask, generator=gen(0))
    for got, want in zip((flux, ivar, mask), copies, strict=True):
        assert torch.equal(got, want)


def test_config_switches():
    cfg = AugmentConfig()
    assert cfg.without("rv", "noise").enabled == ("resolution", "wave_jitter", "scale", "tilt", "bad_pixels")
    assert cfg.only("noise").enabled == ("noise",)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert "off" in AugmentConfig.none().describe() and "p=1" in cfg.describe()
    assert "MILES" in repr(Augmenter(MILES.wavelength_grid(), MILES, cfg))
    with pytest.raises(ValueError):
        AugmentConfig(enabled=("rvv",))
    with pytest.raises(ValueError):
        AugmentConfig(p_rv=1.5)
    assert set(EFFECTS) == set(cfg.enabled)


def test_noise_level_and_ivar():
    wave = MARVELS.wavelength_grid()
    flux = torch.ones(16, len(wave))
    aug = Augmenter(wave, MARVELS, AugmentConfig(snr_range=(50.0, 50.0)).only("noise"))
    out, ivar, mask = aug(flux, generator=gen(0))
    assert abs(float(out.std()) * 50 - 1) < 0.1
    assert torch.allclose(ivar, torch.full_like(ivar, 2500.0), rtol=1e-4)
    assert not mask.any()
    # an already noisy input: variances add; masked pixels keep ivar 0
    ivar_in = torch.full_like(flux, 10000.0)
    ivar_in[:, 5] = 0
    _, ivar2, mask2 = aug(flux, ivar_in, generator=gen(0))
    assert torch.allclose(ivar2[:, 6], torch.full((16,), 1 / (1 / 10000 + 1 / 2500)), rtol=1e-4)
    assert (ivar2[:, 5] == 0).all() and mask2[:, 5].all()
    # S/N drawn log-uniformly within the range
    aug = Augmenter(MILES.wavelength_grid(), MILES, AugmentConfig().only("noise"))
    snr = aug.sample(2000, gen(1)).snr
    assert snr.min() >= 20 and snr.max() <= 200
    assert abs(float(torch.log(snr).mean()) - 0.5 * (math.log(20) + math.log(200))) < 0.05


@pytest.mark.parametrize("instrument", [MARVELS, MILES])
def test_rv_shift_moves_centroid(instrument):
    wave = instrument.wavelength_grid()
    centre = 5350.0
    flux = line_spectra(wave, centre, sigma_aa=0.5, batch=3)
    aug = Augmenter(wave, instrument, AugmentConfig().only("rv"))
    params = AugmentParams.identity(3, len(wave))
    params.rv_kms = torch.tensor([30.0, -30.0, 0.0], dtype=torch.float64)
    out, ivar, mask = aug.apply(flux, params=params)
    _, c0, _ = moments(wave, flux)
    _, c1, _ = moments(wave, out)
    expected = centre * 30.0 / C_KMS
    assert abs(float(c1[0] - c0[0]) / expected - 1) < 0.05
    assert abs(float(c0[1] - c1[1]) / expected - 1) < 0.05
    assert torch.equal(out[2], flux[2])
    # the analytic inversion of the linear / log grid agrees with the general binary search
    assert aug._grid_kind == ("log" if instrument is MARVELS else "linear")
    params.wave_shift[:] = torch.linspace(-0.3, 0.3, len(wave), dtype=torch.float64)
    fast = aug.apply(flux, params=params)
    aug._grid_kind = "general"
    slow = aug.apply(flux, params=params)
    assert torch.allclose(fast[0], slow[0], atol=1e-4) and torch.equal(fast[2], slow[2])
    # pixels shifted in from outside the grid: continuum, masked, ivar 0
    assert mask[0, 0] and not mask[0, -1] and mask[1, -1] and not mask[1, 0]
    assert out[0, 0] == 1.0 and ivar[0, 0] == 0
    assert not mask[2].any()
    # random draws stay within ±rv_max
    cfg = AugmentConfig(p_rv=1.0).only("rv")
    v = Augmenter(wave, instrument, cfg).sample(500, gen(0)).rv_kms
    assert v.abs().max() <= 30.0 and v.min() < -20 and v.max() > 20


@pytest.mark.parametrize("instrument", [MARVELS, MILES, VARYING])
@pytest.mark.parametrize("u", [0.1, 0.5])
def test_broadening_width_and_equivalent_width(instrument, u):
    wave = instrument.wavelength_grid()
    centre = 5350.0
    sigma_lsf = float(instrument.lsf_fwhm(centre)) * FWHM_TO_SIGMA  # an unresolved line at this LSF
    flux = line_spectra(wave, centre, sigma_lsf, depth=0.6)
    aug = Augmenter(wave, instrument, AugmentConfig(resolution_jitter=0.5).only("resolution"))
    params = AugmentParams.identity(1, len(wave))
    params.broaden = torch.tensor([u], dtype=torch.float64)
    out, _, mask = aug.apply(flux, params=params)
    ew0, c0, s0 = moments(wave, flux)
    ew1, c1, s1 = moments(wave, out)
    assert abs(float(s1 / s0) / (1 + u) - 1) < 0.02  # width x (1+u): growth within ±10 % and better
    assert abs(float((s1 / s0 - 1) / u) - 1) < 0.1
    assert abs(float(ew1 / ew0) - 1) < 0.02
    assert abs(float(c1 - c0)) < 1e-3
    if aug._constant_lsf:  # the per-pixel-kernel path agrees with the convolution
        aug._constant_lsf = False
        assert torch.allclose(aug.apply(flux, params=params)[0], out, atol=1e-5)
    else:
        assert instrument is VARYING
    # the edges don't droop (continuum stays 1 there) and nothing gets masked
    assert abs(float(out[0, 0]) - 1) < 1e-6 and abs(float(out[0, -1]) - 1) < 1e-6
    assert not mask.any()


def test_wave_jitter_bounded(miles):
    wave, _ = miles
    cfg = AugmentConfig(p_wave_jitter=1.0).only("wave_jitter")
    params = Augmenter(wave, MILES, cfg).sample(200, gen(0))
    peak = params.wave_shift.abs().amax(1)
    assert peak.max() <= 0.3 + 1e-9 and peak.max() > 0.25
    # smooth: a low-order polynomial, so neighbouring pixels differ very little
    assert params.wave_shift.diff(dim=1).abs().max() < 0.01
    # a constant shift of +0.5 px moves a line by half a pixel
    flux = line_spectra(wave, 5350.0, 1.2, batch=1)
    p = AugmentParams.identity(1, len(wave))
    p.wave_shift[:] = 0.5
    out, _, _ = Augmenter(wave, MILES, cfg).apply(flux, params=p)
    _, c0, _ = moments(wave, flux)
    _, c1, _ = moments(wave, out)
    assert abs(abs(float(c1 - c0)) - 0.45) < 0.02


def test_tilt_and_scale_bounded(miles):
    wave, _ = miles
    flat = torch.ones(300, len(wave))
    cfg = AugmentConfig(p_tilt=1.0, p_scale=1.0).only("tilt", "scale")
    out, ivar, _ = Augmenter(wave, MILES, cfg)(flat, generator=gen(0))
    lo, hi = (1 - 0.02) * (1 - 0.03), (1 + 0.02) * (1 + 0.03)
    assert out.min() >= lo - 1e-6 and out.max() <= hi + 1e-6
    # each row is (1+s)(1+t x): linear in x, mean (1+s) in [0.98, 1.02], slope t·(1+s) within ±tilt
    x = torch.linspace(-1, 1, len(wave), dtype=torch.float64)
    A = torch.stack([torch.ones_like(x), x], 1)
    coef = torch.linalg.lstsq(A, out.T.to(torch.float64)).solution
    assert coef[0].min() >= 0.98 - 1e-6 and coef[0].max() <= 1.02 + 1e-6
    assert (coef[1] / coef[0]).abs().max() <= 0.03 + 1e-6 and coef[1].std() > 0.005
    assert torch.isinf(ivar).all()  # noise-free stays noise-free


def test_bad_pixels_fraction_and_masks_combine(miles):
    wave, flux = miles
    flux = flux.repeat(50, 1)
    mask = torch.zeros_like(flux, dtype=torch.bool)
    mask[:, 100:105] = True
    cfg = AugmentConfig(p_bad_pixels=1.0, bad_pixel_frac=0.01).only("bad_pixels", "noise")
    out, ivar, mask_out = Augmenter(wave, MILES, cfg)(flux, mask=mask, generator=gen(0))
    new = mask_out & ~mask
    assert abs(float(new.float().mean()) / 0.01 - 1) < 0.15
    assert mask_out[mask].all()  # input mask kept
    assert (ivar[mask_out] == 0).all() and (ivar[~mask_out] > 0).all()
    assert (out[new] == 1.0).all()
    # runs of more than one pixel occur too
    starts = new[:, 1:] & new[:, :-1]
    assert starts.any()
    # with the default p = 0.5 about half the spectra get any
    cfg = AugmentConfig().only("bad_pixels")
    _, _, m = Augmenter(wave, MILES, cfg)(flux, generator=gen(1))
    assert 0.3 < float(m.any(1).float().mean()) < 0.7


def test_masked_and_nan_inputs_stay_masked(miles):
    wave, flux = miles
    flux = flux.clone()
    mask = torch.zeros_like(flux, dtype=torch.bool)
    flux[:, 300] = float("nan")
    mask[:, 300] = True
    cfg = AugmentConfig(p_resolution=1, p_rv=1, p_wave_jitter=1, p_tilt=1, p_scale=1)
    out, ivar, m = Augmenter(wave, MILES, cfg)(flux, mask=mask, generator=gen(0))
    assert torch.isfinite(out[~m]).all()
    assert (ivar[m] == 0).all()
    assert m[:, 295:306].any(1).all()  # the masked pixel stays masked (possibly moved by the shift)


def test_one_dimensional_input_and_ablation_keeps_other_draws(miles):
    wave, flux = miles
    aug = Augmenter(torch.as_tensor(wave), MILES, AugmentConfig())
    out, ivar, mask = aug(flux[0], generator=gen(0))
    assert out.shape == (len(wave),) and ivar.shape == out.shape and mask.dtype == torch.bool
    full = aug.sample(8, gen(5))
    ablated = Augmenter(wave, MILES, AugmentConfig().without("rv")).sample(8, gen(5))
    assert torch.equal(full.snr, ablated.snr) and torch.equal(full.bad, ablated.bad)
    assert (ablated.rv_kms == 0).all() and (full.rv_kms != 0).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(miles):
    wave, flux = miles
    aug = Augmenter(wave, MILES, AugmentConfig())
    cpu = aug(flux, generator=gen(0))
    cuda = aug(flux.cuda(), generator=gen(0))
    assert cuda[0].device.type == "cuda"
    assert torch.allclose(cpu[0], cuda[0].cpu(), atol=1e-5)
    assert torch.equal(cpu[2], cuda[2].cpu())
