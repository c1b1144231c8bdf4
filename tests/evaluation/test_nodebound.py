import dataclasses

import numpy as np
import pytest
from toydata import toy_set

from remap_lib.evaluation.nodebound import label_jacobian, node_bounds

# flux = 1 + slope · (label - centre) on three disjoint pixels per label: J is known exactly
SLOPES = np.array([-1e-4, 0.02, 0.05])  # per K, per dex, per dex
CENTRE = np.array([5000.0, 4.0, 0.0])


def _linear_grid(missing=()):
    base = toy_set(n=8)
    teff, logg, feh = np.meshgrid([4750.0, 5000.0, 5250.0], [3.5, 4.0, 4.5], [-0.25, 0.0, 0.25], indexing="ij")
    labels = np.column_stack([teff.ravel(), logg.ravel(), feh.ravel()])
    keep = [i for i, v in enumerate(labels) if tuple(v) not in missing]
    labels = labels[keep]
    npix = 30  # pixels 0-8 respond to the labels, 3 per label; the rest is continuum and one fixed line
    flux = np.ones((len(labels), npix))
    for j in range(3):
        flux[:, 3 * j:3 * j + 3] += (SLOPES[j] * (labels[:, j] - CENTRE[j]))[:, None]
    flux[:, 15:25] -= 0.5 * np.exp(-0.5 * ((np.arange(15, 25) - 20) / 1.5) ** 2)
    wave = 5000.0 + 0.9 * np.arange(npix)
    return dataclasses.replace(base, wave=wave, flux=flux.astype(np.float32), ivar=np.full(flux.shape, np.inf),
                               mask=np.zeros(flux.shape, bool), labels=labels, ids=np.arange(len(labels)).astype(str),
                               meta={"split": np.array(["train"] * len(labels))})


def _row(grid, label):
    return int(np.flatnonzero((grid.labels == label).all(axis=1))[0])


def test_jacobian_of_a_linear_grid_is_its_slopes_centred_or_one_sided():
    grid = _linear_grid()
    for node in ([5000.0, 4.0, 0.0], [5250.0, 4.5, -0.25]):  # inside, and at a corner (one-sided)
        jac = label_jacobian(grid, _row(grid, node))
        expected = np.zeros((3, 30))
        for j in range(3):
            expected[j, 3 * j:3 * j + 3] = SLOPES[j]
        assert jac == pytest.approx(expected, rel=1e-3, abs=1e-7)


def test_bound_is_one_over_snr_times_the_jacobian_norm_when_labels_use_separate_pixels():
    grid = _linear_grid()
    bound = node_bounds(grid, [_row(grid, [5000.0, 4.0, 0.0])], snr=50.0, nuisances=False)[0]
    # F is diagonal: F_jj = snr² · 3 · slope_j², so the bound is 1 / (snr · √3 · |slope_j|)
    assert bound == pytest.approx(1.0 / (50.0 * np.sqrt(3) * np.abs(SLOPES)), rel=1e-3)
    assert node_bounds(grid, [_row(grid, [5000.0, 4.0, 0.0])], snr=100.0, nuisances=False)[0] == \
        pytest.approx(bound / 2, rel=1e-6)  # the bound scales as 1/(S/N)


def test_nuisances_never_lower_the_bound_and_masked_pixels_carry_nothing():
    grid = _linear_grid()
    row = _row(grid, [5000.0, 4.0, 0.0])
    plain = node_bounds(grid, [row], 50.0, nuisances=False)[0]
    assert (node_bounds(grid, [row], 50.0)[0] >= plain * (1 - 1e-9)).all()
    masked = dataclasses.replace(grid, mask=grid.mask.copy())
    masked.mask[row, 0] = True  # one of the three Teff pixels
    assert node_bounds(masked, [row], 50.0, nuisances=False)[0][0] == pytest.approx(plain[0] * np.sqrt(3 / 2), rel=1e-3)


def test_a_node_with_no_neighbour_along_a_label_gets_no_bound():
    lonely = [5000.0, 4.0, 0.25]
    grid = _linear_grid(missing={(5000.0, 4.0, 0.0)})  # its only [Fe/H] neighbour is gone
    assert np.isnan(node_bounds(grid, [_row(grid, lonely)], 50.0)).all()


def test_measure_scores_a_network_on_the_held_out_nodes_against_their_bounds(tmp_path):
    import torch
    from toydata import TINY_ARCH

    from remap_lib.evaluation.nodebound import measure
    from remap_lib.nn.binning import DEFAULT_BINS
    from remap_lib.nn.modelfile import save_model
    from remap_lib.training.train import build_model

    grid = _linear_grid()
    split = np.where(np.arange(len(grid)) % 3 == 1, "test", "train")
    grid = dataclasses.replace(grid, meta={"split": split})
    torch.manual_seed(0)
    path = save_model(tmp_path / "net.pt", build_model(grid.flux.shape[1], DEFAULT_BINS, **TINY_ARCH),
                      DEFAULT_BINS, grid.instrument)
    result = measure(path, grid)
    assert result["nodes"] == result["nodes_with_bound"] == int((split == "test").sum())
    error = np.array(result["per_node"]["error"])
    assert error.shape == (result["nodes"], 3)
    assert result["network"]["teff"]["sigma"] == pytest.approx(np.std(error[:, 0]))
    # with these slopes every node's Teff bound is 115 K or more: all of them are in the bound's tail
    assert result["bound_tail"]["nodes"] == result["nodes"]
    assert result["bound_tail"]["network_sigma_outside"]["teff"] is None
    assert result["snr"] == 50.0  # the study's S/N, with the study's noise


def test_stars_take_their_nearest_nodes_bound_and_the_snr_that_meets_a_goal():
    from remap_lib.evaluation.nodebound import miles_summary, star_bounds

    grid = _linear_grid()
    node = [5000.0, 4.0, 0.0]
    stars = np.array([node, [5040.0, 4.1, 0.02]])  # a node, and a star nearest to it
    at_node = node_bounds(grid, [_row(grid, node)], 50.0)[0]
    np.testing.assert_allclose(star_bounds(grid, stars, 50.0), [at_node, at_node])
    goals = {"dwarfs": {"teff": at_node[0] / 2, "logg": at_node[1], "feh": at_node[2] * 2}}
    summary = miles_summary(grid, {"dwarfs": stars}, goals, snr=50.0)["dwarfs"]
    assert summary["stars"] == summary["with_bound"] == 2
    # the bound halves when S/N doubles: a goal half the bound needs S/N 100, twice the bound S/N 25
    assert [summary[n]["snr_for_rms_at_goal"] for n in ("teff", "logg", "feh")] == pytest.approx([100.0, 50.0, 25.0])


def test_hot_edge_takes_the_hottest_dwarfs_near_solar_metallicity():
    from remap_lib.evaluation.nodebound import hot_edge

    grid = _linear_grid()
    edge = hot_edge(grid, 50.0)
    rows = [_row(grid, [5250.0, g, m]) for g in (3.5, 4.0, 4.5) for m in (-0.25, 0.0, 0.25)]
    assert edge["teff"] == 5250.0 and edge["nodes"] == len(rows)
    assert edge["median"] == pytest.approx(np.median(node_bounds(grid, rows, 50.0)[:, 0]))
    assert edge["separation_for_95_and_5_percent"] == pytest.approx(2 * 1.6449 * edge["median"], rel=1e-4)


def test_node_intervals_bracket_sigma_and_mad_and_the_report_reads_back(tmp_path):
    import json

    from remap_lib.evaluation.nodebound import _node_intervals, read_report

    error = np.random.default_rng(1).normal(0.0, 50.0, 400)
    got = _node_intervals(error)
    assert got["sigma_ci95"][0] < np.std(error) < got["sigma_ci95"][1]
    mad = np.median(np.abs(error - np.median(error)))
    assert got["mad_ci95"][0] < mad < got["mad_ci95"][1]
    assert read_report(tmp_path / "absent.json") is None
    (tmp_path / "r.json").write_text(json.dumps({"snr": 50.0}))
    assert read_report(tmp_path / "r.json") == {"snr": 50.0}


def test_the_rv_column_is_the_derivative_of_a_doppler_shifted_spectrum():
    from remap_lib.constants import C_KMS
    from remap_lib.evaluation.nodebound import _nuisance_jacobian

    def line(w):
        return 1 - 0.6 * np.exp(-0.5 * ((w - 5050.0) / 1.2) ** 2)

    wave = np.linspace(5000.0, 5100.0, 2001)
    flux = line(wave)
    jac = _nuisance_jacobian(wave, flux)
    dv = 0.01  # km/s: the same line from a source receding at dv, on the same pixels
    shifted = line(wave / (1 + dv / C_KMS))
    np.testing.assert_allclose(jac[2], (shifted - flux) / dv, rtol=5e-3, atol=1e-6)  # a sign or unit is far off
    x = (wave - wave.mean()) / 50.0
    np.testing.assert_allclose(jac[0], flux)
    np.testing.assert_allclose(jac[1], flux * x)
