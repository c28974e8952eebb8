"""plasticity.runtime: the memory check every trainer runs before allocating, and the hardware
line every benchmark prints."""

import os

import pytest

from plasticity import runtime


def test_check_fits_names_what_does_not_fit_in_one_line():
    available = runtime.available_bytes()
    assert available is not None and available > 0  # CPU: /proc/meminfo is read
    runtime.check_fits(1024, "a tiny replay")  # fits: no error
    with pytest.raises(ValueError) as error:
        runtime.check_fits(available + 2**40, "the replays of 4 seeds")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("the replays of 4 seeds do not fit in memory:")
    assert "GiB needed" in message and "GiB available" in message


def test_check_fits_skips_the_check_when_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(runtime, "available_bytes", lambda device=None: None)
    runtime.check_fits(2**60, "anything")  # unknown memory: nothing to compare against


def test_hardware_line_names_devices_cpu_cores_and_load():
    line = runtime.hardware_line()
    assert "\n" not in line
    assert "cpu:" in line  # the device platform (CPU in the test suite)
    assert runtime.cpu_model() in line
    assert f"{len(os.sched_getaffinity(0))} cores available" in line
    assert "load average" in line and "jax " in line
