"""SafeTracker: a store that fails mid-run never stops training, and one that is back at the end
gets exactly the calls it missed (no step twice, none from another run's rows in the local file)."""

import json

from grpo.tracking.safe import SafeTracker


class FlakyStore:
    """A store that is down while `down` is set; holds what it took."""

    run_id = "run-1"

    def __init__(self):
        self.down = False
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.finished = None
        self.tables: list[str] = []

    def _up(self):
        if self.down:
            raise ConnectionError("store unreachable\nsecond line")

    def log_metrics(self, metrics, step):
        self._up()
        for k, v in metrics.items():
            self.metrics.setdefault(k, []).append((step, v))

    def logged_until(self):
        self._up()
        return {k: max(s for s, _ in points) for k, points in self.metrics.items()}

    def log_table(self, rows, path):
        self._up()
        self.tables.append(path)

    def finish(self, status="FINISHED"):
        self._up()
        self.finished = status


def test_a_store_back_at_the_end_gets_exactly_the_calls_it_missed(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 9, "loss": 9.0}) + "\n")  # an earlier run's row
    store = FlakyStore()
    tracker = SafeTracker(store, str(tmp_path))
    tracker.log_metrics({"loss": 1.0}, 1)
    store.down = True
    tracker.log_metrics({"loss": 2.0}, 2)  # fails: training goes on
    tracker.log_metrics({"loss": 3.0, "reward": 0.5}, 3)
    tracker.log_metrics({"val": 0.7}, 3)  # the same step, logged in two calls
    tracker.log_table([{"completion": "7"}], "completions/step_3.json")
    assert tracker.failed == "ConnectionError: store unreachable"
    tracker.catch_up()  # still down: nothing changes
    assert tracker.failed and tracker.recovered is None
    store.down = False
    tracker.catch_up()
    tracker.finish()
    assert tracker.failed is None and tracker.recovered == "ConnectionError: store unreachable"
    assert store.metrics == {"loss": [(1, 1.0), (2, 2.0), (3, 3.0)], "reward": [(3, 0.5)], "val": [(3, 0.7)]}
    assert store.tables == ["completions/step_3.json"] and store.finished == "FINISHED"
    tracker.log_metrics({"loss": 4.0}, 4)  # logging goes on into the store
    assert store.metrics["loss"][-1] == (4, 4.0)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 5  # the local copy has every metrics call


def test_without_a_failure_catch_up_does_nothing(tmp_path):
    store = FlakyStore()
    tracker = SafeTracker(store, str(tmp_path))
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.catch_up()
    assert store.metrics == {"loss": [(1, 1.0)]} and tracker.recovered is None


def test_a_long_outage_is_left_to_the_local_file(tmp_path, monkeypatch):
    from grpo.tracking import safe

    monkeypatch.setattr(safe, "MAX_MISSED_CALLS", 3)
    store = FlakyStore()
    store.down = True
    tracker = SafeTracker(store, str(tmp_path))
    for step in range(1, 6):
        tracker.log_metrics({"loss": float(step)}, step)
    store.down = False
    tracker.catch_up()  # too much was missed to keep: nothing is replayed, the run says FAILED
    assert tracker.failed and tracker.recovered is None and store.metrics == {}
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 5
