"""reliability/attacks.py: the in-process attacks run, and their figures pass the
expectations the battery checks."""

from __future__ import annotations

from reliability import attacks, battery


class Recorder:
    def __init__(self) -> None:
        self.figures: list[tuple[str, str, object]] = []
        self.failures: list[str] = []

    def figure(self, section: str, name: str, value: object) -> None:
        self.figures.append((section, name, value))

    def check(self, section: str, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(f"{section}: {what}")


def test_a_store_fault_and_a_record_fault_leave_the_batch_api_whole() -> None:
    battery = Recorder()
    store = attacks.record(battery, "runner_store_fault")
    line = attacks.record(battery, "line_record_fault")
    assert battery.failures == []
    assert store["GET /v1/batches"] == 200
    assert (line["total"], line["completed"], line["failed"]) == (3, 2, 1)
    assert ("line_record_fault", "failed", 1) in battery.figures


def test_the_output_cap_fails_an_amplifying_batch() -> None:
    figures = attacks.output_amplification(inputs_per_line=64, batch_max_output_bytes=2000)
    assert figures["batch status"] == "failed"
    assert figures["error code"] == "output_too_large"


def test_each_attack_is_a_battery_section() -> None:
    recorder = Recorder()
    method = attacks.battery_method("line_record_fault")
    assert set(attacks.SECTIONS) == set(attacks.ATTACKS) == set(attacks.EXPECTED)
    assert set(attacks.SECTIONS) <= set(battery.SECTIONS)
    assert all(callable(getattr(battery.Battery, name)) for name in attacks.SECTIONS)
    assert method(recorder)["failed"] == 1
    assert recorder.failures == []
