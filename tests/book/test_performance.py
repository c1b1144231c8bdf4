"""The performance page: the committed benchmark results, what is not measured, malformed results."""

import json

import pytest

from remap_lib.book import performance
from remap_lib.book.machine import describe_machine
from remap_lib.book.markdown import code_cell, table_cell


def test_table_text_cannot_break_a_row():
    assert table_cell("a | b\nc") == "a \\| b c"
    assert code_cell("x|y") == "`'x\\|y'`"


def test_describe_machine():
    assert describe_machine({"cpu_model": "Test CPU", "nproc": 2}) == "Test CPU, 2 cores"
    assert describe_machine(None) == describe_machine({}) == "machine not recorded"


INFERENCE = {"command": "bench/bench_inference.py", "created": "2026-01-02T00:00:00Z",
             "machine": {"cpu_model": "Test CPU", "nproc": 2}, "settings": {},
             "cases": [{"name": "MILES, batch 256", "npix": 780, "batch_size": 256, "threads": 2, "members": 3,
                        "spectra_per_s": 2500.0, "includes_preprocessing": True},
                       {"name": "MARVELS, batch 64", "npix": 4366, "batch_size": 64, "threads": 2, "members": 1,
                        "spectra_per_s": 900.0, "includes_preprocessing": False}],
             "baseline": {"name": "one spectrum at a time", "spectra_per_s": 120.0}, "target_spectra_per_s": 2000}
STREAMING = {"command": "bench/bench_streaming.py", "created": "2026-01-02T00:00:00Z", "machine": {},
             "runs": [{"n_spectra": 100000, "wall_s": 80.0, "spectra_per_s": 1250.0, "peak_rss_mb": 610.0},
                      {"n_spectra": 1000, "wall_s": 1.0, "spectra_per_s": 1000.0, "peak_rss_mb": 600.0}],
             "target_peak_rss_mb": 2048}


@pytest.fixture
def bench_dir(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    for name in ("synthesis", "preprocess", "training"):
        (folder / f"{name}.json").write_text((performance.BENCH_RESULTS / f"{name}.json").read_text())
    return folder


def test_performance_page_from_the_committed_results(tmp_path):
    page = performance.performance_page(tmp_path)
    assert "could not be shown" not in page
    for figure in ("perf_synthesis", "perf_preprocess", "perf_training"):
        assert f"```{{figure}} figures/{figure}.png" in page
        assert (tmp_path / "figures" / f"{figure}.png").stat().st_size > 10_000


def test_performance_page_says_what_has_not_been_measured(tmp_path, bench_dir):
    page = performance.performance_page(tmp_path / "out", bench_dir)
    assert "**has not been measured yet**" in page
    assert "python bench/bench_inference.py" in page and "python bench/bench_streaming.py" in page
    assert not (tmp_path / "out" / "figures" / "perf_inference.png").exists()
    (bench_dir / "synthesis.json").unlink()
    page = performance.performance_page(tmp_path / "out", bench_dir)
    assert "**Not measured yet.** Run `python bench/bench_synthesis.py`" in page


def test_performance_page_renders_inference_and_streaming_cases(tmp_path, bench_dir):
    (bench_dir / "inference.json").write_text(json.dumps(INFERENCE))
    (bench_dir / "streaming.json").write_text(json.dumps(STREAMING))
    page = performance.performance_page(tmp_path / "out", bench_dir)
    assert "could not be shown" not in page and "not been measured" not in page
    assert "| MILES, batch 256 | 780 | 256 | 2 | 3 | yes | 2500 |" in page
    assert "| one spectrum at a time (baseline) | | | | | | 120 |" in page
    assert "| 1,000 | 1.0 | 1000 | 600 |" in page.split("| 100,000 |")[0]  # sorted by N
    for figure in ("perf_inference", "perf_scaling"):
        assert (tmp_path / "out" / "figures" / f"{figure}.png").stat().st_size > 10_000


def test_a_malformed_result_does_not_stop_the_book(tmp_path, bench_dir, capsys):
    (bench_dir / "inference.json").write_text(json.dumps({"cases": [{"name": "no numbers"}]}))
    page = performance.performance_page(tmp_path / "out", bench_dir)
    assert f"`{bench_dir / 'inference.json'}` could not be shown" in page
    assert "could not be shown" in capsys.readouterr().err
    assert "## Training" in page  # the other sections are still there
    (bench_dir / "synthesis.json").write_text("{not json")  # a file cut short: named, not fatal
    (bench_dir / "training.json").write_text("")
    page = performance.performance_page(tmp_path / "out", bench_dir)
    assert f"`{bench_dir / 'synthesis.json'}` could not be shown (JSONDecodeError" in page
    assert f"`{bench_dir / 'training.json'}` could not be shown" in page and "## Preprocess" in page
    assert "synthesis.json could not be shown" in capsys.readouterr().err


