"""remap_lib.book.machine: the description of a machine that run logs and benchmarks share."""

import json

from remap_lib.book.machine import machine_info


def test_machine_info_names_cpu_cores_and_load():
    info = machine_info()
    assert set(info) == {"cpu_model", "nproc", "cpu_count", "platform", "python", "load_average_start"}
    assert 1 <= info["nproc"] <= info["cpu_count"] and len(info["load_average_start"]) == 3
    json.dumps(info)  # it goes into JSON run logs as it is
