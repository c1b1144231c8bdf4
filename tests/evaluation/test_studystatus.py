"""The study's progress report: runs done, running and left, and the compute time still needed."""

import pytest

from remap_lib.evaluation import runqueue, study, studystatus


def test_status_estimates_from_the_cpu_time_of_complete_runs(tmp_path):
    for fold, cpu, resumed in ((0, 10.0, False), (1, 30.0, False), (2, 20.0, False), (3, 1000.0, True)):
        key = f"runs/the_cannon/seed0_fold{fold}"
        runqueue.write_record(tmp_path, key, {"key": key, "kind": "cannon", "budget": "none", "wall_s": 5 * cpu,
                                              "cpu_s": cpu, "resumed": resumed})
    report = studystatus.status(tmp_path, tmp_path / "claims", study.plan(["The Cannon"], [0], k=5))
    assert report["measured"]["cannon"] == {"runs": 3, "cpu_s": 20.0, "wall_s": 100.0}  # medians; resumed run left out
    assert report["rows"]["The Cannon"] == {"done": 4, "running": 0, "left": 1}
    assert report["hours"]["total"] == pytest.approx(5 * 20.0 / 3600)
    assert report["hours"]["left"] == pytest.approx(20.0 / 3600)


def test_a_row_with_a_larger_network_is_timed_apart_from_its_kind(tmp_path):
    from remap_lib.evaluation import studyrows as sr

    for row, cpu in ((sr.REDUCED, 20.0), (sr.PAPER_SIZED, 300.0)):
        slug = sr.ROW_BY_NAME[row].slug
        for fold in range(2):
            key = f"runs/{slug}/seed0_fold{fold}"
            runqueue.write_record(tmp_path, key, {"key": key, "row": row, "kind": "reduced", "budget": "reduced",
                                                  "wall_s": cpu, "cpu_s": cpu, "resumed": False})
    report = studystatus.status(tmp_path, tmp_path / "claims", study.plan([sr.PAPER_SIZED], [0], k=3))
    assert report["measured"]["reduced (reduced budget)"]["cpu_s"] == 20.0
    assert report["measured"]["reduced (reduced budget), paper network"]["cpu_s"] == 300.0
    assert report["rows"][sr.PAPER_SIZED] == {"done": 2, "running": 0, "left": 2}  # its pretraining and fold 2
    assert report["hours"]["left"] == pytest.approx(300.0 / 3600)  # fold 2; its pretraining is not measured
    assert report["unmeasured"] == ["pretrain (reduced budget), paper network"]
