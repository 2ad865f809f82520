import io

from onnxprune.converter.progress import Progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_lines_are_periodic_with_eta_and_restart_per_epoch(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("onnxprune.converter.progress.time.monotonic", clock)
    out = io.StringIO()
    p = Progress(stream=out, every=10.0)
    for epoch in range(2):
        for done in range(1, 11):
            clock.t += 2.0
            p("retrain", done, 10, f"epoch {epoch + 1}")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("onnxprune: retrain: 1/10 (10%")
    assert all("onnxprune: retrain:" in line for line in lines)
    assert len(lines) <= 8  # periodic, not one line per batch
    eta = [line for line in lines if "eta" in line]
    assert eta and all(float(line.split("eta ")[1].split("s")[0]) <= 20 for line in eta)  # never the whole run
    assert sum("10/10 (100%)" in line for line in lines) == 2  # each epoch's end is said


def test_quiet_prints_nothing():
    out = io.StringIO()
    p = Progress(quiet=True, stream=out)
    p("scan", 1, 2)
    assert out.getvalue() == ""


def test_short_epochs_do_not_print_a_line_each(monkeypatch):
    """Newcomer audit: a labelled 3-minute run printed 750 progress lines in a CI log, one for every epoch's end of
    every retraining round (epochs of about a second). An epoch's end is said when the task's last line is older
    than half the period."""
    clock = Clock()
    monkeypatch.setattr("onnxprune.converter.progress.time.monotonic", clock)
    out = io.StringIO()
    p = Progress(stream=out, every=10.0)
    for epoch in range(20):  # 20 epochs of 1 s, 4 updates each
        for done in range(1, 5):
            clock.t += 0.25
            p("auto: polish", done, 4, f"epoch {epoch + 1}")
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 6 and lines[0].startswith("onnxprune: auto: polish: 1/4")
