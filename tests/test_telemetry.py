"""The daemon's live metrics: what each record gives, what retain drops, scrubbing, threads, promtool, and
the registry's families (what generate_latest gives) against render()'s text."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ce_agent import __version__
from ce_agent.contracts import Metric, Result, Status
from ce_agent.metrics import RESERVED, build_registry, families, render_text
from ce_agent.telemetry import DURATION_BUCKETS, LATENESS_BUCKETS, Telemetry
from tests.outcomes import Job, Outcome

NOW = 1_700_000_000.0
Labels = tuple[tuple[str, str], ...]


def check(name: str, status: Status = Status.OK, metrics: list[Metric] | None = None, duration: float = 0.25,
          timed_out: bool = False, **job: Any) -> Outcome:
    return Outcome(Job(name, **job), Result(status, "summary", metrics or []), duration, timed_out=timed_out)


def collector(name: str, samples: list[Metric], status: Status = Status.OK, **job: Any) -> Outcome:
    return Outcome(Job(name, kind="collector", plugin_name="system", **job), Result(status, "n samples"), 0.1,
                   samples)


def samples(text: str) -> dict[str, dict[Labels, float]]:
    """The text parsed back by prometheus_client: sample name -> {sorted label pairs: value}."""
    parsed: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            parsed.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return parsed


def types(text: str) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def series(**labels: str) -> Labels:
    return tuple(sorted(labels.items()))


CHECK = {"check": "Disk", "host": "web1", "play": "Site"}


def recorded(*outcomes: Outcome, scrub: Any = lambda s: s) -> Telemetry:
    telemetry = Telemetry(scrub, start_time=NOW - 60)
    for i, outcome in enumerate(outcomes):
        telemetry.record_outcome(outcome, NOW + i)
    return telemetry


def test_a_checks_runs_add_up_and_its_latest_values_win() -> None:
    got = samples(recorded(check("Disk", Status.OK, duration=0.2), check("Disk", Status.OK, duration=0.3),
                           check("Disk", Status.CRITICAL, duration=1.5)).render())
    ids = series(**CHECK, plugin="fixed")
    assert got["ce_check_status"] == {ids: 2}
    assert got["ce_check_last_duration_seconds"] == {ids: 1.5}
    assert got["ce_check_last_run_timestamp_seconds"] == {ids: NOW + 2}
    assert got["ce_check_runs_total"] == {
        series(**CHECK, status="ok"): 2, series(**CHECK, status="warning"): 0,
        series(**CHECK, status="critical"): 1, series(**CHECK, status="unknown"): 0,
    }
    assert got["ce_check_duration_seconds_count"] == {series(**CHECK): 3}
    assert got["ce_check_duration_seconds_sum"] == {series(**CHECK): pytest.approx(2.0)}
    assert got["ce_check_timeouts_total"] == {series(**CHECK): 0}


def test_a_timeout_is_counted_as_a_timeout_and_an_unknown_run() -> None:
    got = samples(recorded(check("Disk", Status.UNKNOWN, duration=10.0, timed_out=True)).render())
    assert got["ce_check_timeouts_total"] == {series(**CHECK): 1}
    assert got["ce_check_runs_total"][series(**CHECK, status="unknown")] == 1


def _buckets(got: dict[str, dict[Labels, float]], name: str, **labels: str) -> dict[str, float]:
    return {dict(k)["le"]: v for k, v in got[name + "_bucket"].items() if dict(k).items() > labels.items()}


@pytest.mark.parametrize(
    "duration, first",
    [
        pytest.param(0.0, "0.005", id="zero"),
        pytest.param(0.005, "0.005", id="on a bound: le is inclusive"),
        pytest.param(0.0051, "0.01", id="just above a bound"),
        pytest.param(2.0, "2.5", id="seconds"),
        pytest.param(60.0, "60.0", id="the last bound"),
        pytest.param(61.0, "+Inf", id="beyond the last bound"),
    ],
)
def test_check_durations_fall_in_their_bucket(duration: float, first: str) -> None:
    got = samples(recorded(check("Disk", duration=duration)).render())
    buckets = _buckets(got, "ce_check_duration_seconds", **CHECK)
    bounds = [str(float(b)) if b >= 1 else str(b) for b in DURATION_BUCKETS] + ["+Inf"]
    assert list(buckets) == bounds
    assert buckets == {le: float(i >= bounds.index(first)) for i, le in enumerate(bounds)}


@pytest.mark.parametrize(
    "lateness, first, total",
    [
        pytest.param(0.0005, "0.001", 0.0005, id="on time"),
        pytest.param(0.05, "0.05", 0.05, id="on a bound"),
        pytest.param(3.0, "5.0", 3.0, id="seconds late"),
        pytest.param(11.0, "+Inf", 11.0, id="beyond the last bound"),
        pytest.param(-2.0, "0.001", 0.0, id="early (the clock stepped back) counts as on time"),
    ],
)
def test_scheduler_lateness_falls_in_its_bucket(lateness: float, first: str, total: float) -> None:
    telemetry = Telemetry()
    telemetry.record_start(lateness)
    got = samples(telemetry.render())
    buckets = _buckets(got, "ce_scheduler_lateness_seconds")
    bounds = [str(float(b)) if b >= 1 else str(b) for b in LATENESS_BUCKETS] + ["+Inf"]
    assert buckets == {le: float(i >= bounds.index(first)) for i, le in enumerate(bounds)}
    assert got["ce_scheduler_lateness_seconds_count"] == {(): 1}
    assert got["ce_scheduler_lateness_seconds_sum"] == {(): total}


def test_perfdata_carries_the_plugins_labels_and_only_the_latest_run() -> None:
    first = check("Disk", metrics=[Metric("used", 93.5, "%", {"mount": "/", "host": "db1"}),
                                   Metric("inodes", 12, "%", {"mount": "/"})], plugin_name="disk")
    later = check("Disk", metrics=[Metric("used", 94.0, "%", {"mount": "/", "host": "db1"})], plugin_name="disk")
    got = samples(recorded(first, later).render())
    # ours wins the name, theirs is kept aside; a metric the last run did not give is gone
    assert got["ce_check_metric"] == {
        series(**CHECK, metric="used", unit="%", mount="/", exported_host="db1"): 94.0,
    }


@pytest.mark.parametrize(
    "name, family, kind",
    [
        pytest.param("load1", "ce_load1", "gauge", id="a gauge of its own name"),
        pytest.param("sent_bytes_total", "ce_sent_bytes", "counter", id="NAME_total is a counter"),
        pytest.param("check_runs_total", "ce_check_runs_sample", "counter", id="clashes with our counter"),
        pytest.param("scheduler_tasks", "ce_scheduler_tasks_sample", "gauge", id="clashes with our gauge"),
        pytest.param("check_duration_seconds_bucket", "ce_check_duration_seconds_bucket_sample", "gauge",
                     id="clashes with a sample of our histogram"),
        pytest.param("build_info", "ce_build_info_sample", "gauge", id="clashes with a one-shot family"),
    ],
)
def test_collector_samples_are_named_as_in_the_textfile(name: str, family: str, kind: str) -> None:
    text = recorded(collector("Numbers", [Metric(name, 7)])).render()
    assert types(text)[family] == kind
    sample = family + "_total" if kind == "counter" else family
    assert samples(text)[sample] == {series(collector="Numbers", host="web1", play="Site"): 7}


def test_a_collectors_latest_samples_replace_its_previous_ones() -> None:
    got = samples(recorded(
        collector("Numbers", [Metric("disk_used", 40, labels={"mount": "/"}), Metric("disk_used", 70,
                                                                                    labels={"mount": "/home"})]),
        collector("Numbers", [Metric("disk_used", 45, labels={"mount": "/"})]),
        collector("Numbers", [], Status.UNKNOWN),
        collector("Numbers", [Metric("disk_used", 50, labels={"mount": "/"})]),
    ).render())
    where = {"collector": "Numbers", "host": "web1", "play": "Site"}
    assert got["ce_disk_used"] == {series(**where, mount="/"): 50}  # /home went with the second run
    assert got["ce_collector_runs_total"] == {series(**where, result="success"): 3,
                                              series(**where, result="failure"): 1}
    assert got["ce_collector_duration_seconds_count"] == {series(**where): 4}
    assert got["ce_collector_last_run_timestamp_seconds"] == {series(**where): NOW + 3}
    assert "ce_check_status" not in got


ONE_SHOT_CASES = [
    pytest.param([check("A", metrics=[Metric("m", 1, "s", {"x": "1"})]), check("B", metrics=[Metric("m", 2)])],
                 id="perfdata label names are the union over checks"),
    pytest.param([collector("A", [Metric("thing", 1, labels={"x": "1"})]),
                  collector("B", [Metric("thing", 2, labels={"y": "2"})])],
                 id="sample label names are the union over collectors"),
    pytest.param([collector("A", [Metric("x_total", 1)]), collector("B", [Metric("x", 2)])],
                 id="a name one collector took as a counter is renamed for another's gauge"),
    pytest.param([collector("A", [Metric("x", 1), Metric("x_total", 2)])],
                 id="the same within one collector"),
    pytest.param([check("Twice", metrics=[Metric("m", 1, labels={"a.b": "x"}), Metric("m", 2, labels={"a-b": "x"}),
                                          Metric("u", None), Metric("n", math.nan)]),
                  collector("C", [Metric("s", 1), Metric("s", 5)])],
                 id="duplicates and missing values are left out and counted"),
    pytest.param([check("Ünïcode", metrics=[Metric("weird.name-1", 1, "s", {"__x": "r", "p": 'C:\\d "q"\nnext'})]),
                  collector("Weird", [Metric("my.sample-x", 3, "", {"région": "Zürich"})])],
                 id="awkward names and values"),
    pytest.param([check("A"), collector("C", [Metric("check_status", 7)])], id="a sample named like our family"),
]


@pytest.mark.parametrize("outcomes", ONE_SHOT_CASES)
def test_latest_values_and_samples_are_what_the_textfile_holds(outcomes: list[Outcome]) -> None:
    """The families `run --textfile-dir` writes have the same series and values here, one task each."""
    telemetry = Telemetry()
    for outcome in outcomes:
        telemetry.record_outcome(outcome, NOW)
    ours = samples(telemetry.render())
    textfile = samples(render_text(build_registry(outcomes, NOW)))
    names = {f.sample_name for f in families(outcomes, NOW)}
    assert {name: ours.get(name) for name in names} == {name: textfile[name] for name in names}


def test_a_label_name_a_later_task_brings_is_added_to_the_lines_already_rendered() -> None:
    telemetry = recorded(check("A", metrics=[Metric("m", 1, labels={"x": "1"})]))
    telemetry.render()
    telemetry.record_outcome(check("B", metrics=[Metric("m", 2, labels={"y": "2"})]), NOW)
    lines = sorted(line for line in telemetry.render().splitlines() if line.startswith("ce_check_metric{"))
    assert lines == [
        'ce_check_metric{check="A",host="web1",metric="m",play="Site",unit="",x="1",y=""} 1.0',
        'ce_check_metric{check="B",host="web1",metric="m",play="Site",unit="",x="",y="2"} 2.0',
    ]


def test_the_same_series_from_two_tasks_is_given_once_and_counted() -> None:
    """Two checks whose names differ only by a secret are alike once scrubbed: one perfdata series."""
    telemetry = recorded(check("db secret1", metrics=[Metric("m", 1)]), check("db secret2", metrics=[Metric("m", 2)]),
                         scrub=lambda s: s.replace("secret1", "****").replace("secret2", "****"))
    got = samples(telemetry.render())
    assert list(got["ce_check_metric"].values()) == [2]
    assert got["ce_export_skipped_samples"][series(reason="duplicate")] == 1


def test_skipped_runs_deliveries_outbox_and_the_agents_own_gauges() -> None:
    telemetry = Telemetry(start_time=NOW - 60)
    telemetry.record_skipped("Disk", "web1", "Site")
    telemetry.record_skipped("Disk", "web1", "Site")
    for channel, sent in (("mail", True), ("mail", True), ("hook", False), ("mail", False)):
        telemetry.record_delivery(channel, sent)
    telemetry.set_outbox(3, 7)
    telemetry.set_plugin_load_errors(1)
    telemetry.set_tasks(12)
    telemetry.tick(NOW + 5)
    got = samples(telemetry.render())
    assert got["ce_scheduler_skipped_runs_total"] == {series(**CHECK): 2}
    assert got["ce_notifications_sent_total"] == {series(channel="mail"): 2, series(channel="hook"): 0}
    assert got["ce_notification_delivery_failures_total"] == {series(channel="mail"): 1, series(channel="hook"): 1}
    assert got["ce_outbox_depth"] == {(): 3}
    assert got["ce_outbox_dropped_total"] == {(): 7}
    assert types(telemetry.render())["ce_outbox_dropped"] == "counter"
    assert got["ce_plugin_load_errors"] == {(): 1}
    assert got["ce_scheduler_tasks"] == {(): 12}
    assert got["ce_scheduler_last_tick_timestamp_seconds"] == {(): NOW + 5}
    assert got["ce_agent_start_time_seconds"] == {(): NOW - 60}
    assert got["ce_build_info"] == {series(version=__version__): 1}


@pytest.mark.parametrize(
    "loads, successful, last_success, counts",
    [
        pytest.param([], None, None, (0, 0), id="none yet"),
        pytest.param([True], 1, NOW, (1, 0), id="the first load"),
        pytest.param([True, False], 0, NOW, (1, 1), id="a failed reload keeps the last success's time"),
        pytest.param([True, False, True], 1, NOW + 2, (2, 1), id="a good reload after a bad one"),
    ],
)
def test_reloads(loads: list[bool], successful: int | None, last_success: float | None,
                 counts: tuple[int, int]) -> None:
    telemetry = Telemetry()
    for i, ok in enumerate(loads):
        telemetry.record_reload(ok, NOW + i)
    got = samples(telemetry.render())
    assert got.get("ce_config_last_reload_successful") == (None if successful is None else {(): successful})
    assert got.get("ce_config_last_reload_success_timestamp_seconds") == (
        None if last_success is None else {(): last_success})
    assert got["ce_config_reloads_total"] == {series(result="success"): counts[0], series(result="failure"): counts[1]}


def test_retain_drops_every_series_of_the_tasks_gone() -> None:
    telemetry = recorded(
        check("Kept", metrics=[Metric("m", 1)]),
        check("Gone", Status.UNKNOWN, metrics=[Metric("m", 2)], timed_out=True),
        collector("Kept", [Metric("s", 1)]),
        collector("Gone", [Metric("s", 2), Metric("only_gone_total", 3)]),
    )
    telemetry.record_skipped("Gone", "web1", "Site")
    telemetry.record_skipped("Kept", "web1", "Site")
    assert "Gone" in telemetry.render()
    telemetry.retain({("check", "Site", "web1", "Kept"), ("collector", "Site", "web1", "Kept")})
    text = telemetry.render()
    assert "Gone" not in text
    got = samples(text)
    assert "ce_only_gone_total" not in got  # its family went with its last series
    for name in ("ce_check_status", "ce_check_duration_seconds_count", "ce_check_timeouts_total", "ce_check_metric",
                 "ce_s", "ce_collector_duration_seconds_count", "ce_scheduler_skipped_runs_total"):
        assert [dict(k).get("check", dict(k).get("collector")) for k in got[name]] == ["Kept"], name
    assert len(got["ce_check_runs_total"]) == 4


def test_a_task_recorded_again_after_retain_starts_afresh() -> None:
    telemetry = recorded(check("Disk"), check("Disk"))
    telemetry.retain(set())
    assert "ce_check_runs_total" not in samples(telemetry.render())
    telemetry.record_outcome(check("Disk"), NOW)
    assert samples(telemetry.render())["ce_check_duration_seconds_count"] == {series(**CHECK): 1}


SECRET = "hunter2"


def test_a_scrubbed_secret_never_appears() -> None:
    telemetry = recorded(
        check(f"Login {SECRET}", metrics=[Metric("m", 1, labels={"url": f"https://u:{SECRET}@x"})], host=SECRET),
        collector("C", [Metric("s", 1, labels={"token": SECRET})], play=f"play {SECRET}"),
        scrub=lambda s: s.replace(SECRET, "****"),
    )
    telemetry.record_skipped(f"Login {SECRET}", SECRET, "Site")
    telemetry.record_delivery(f"https://{SECRET}@hook", False)
    text = telemetry.render()
    assert SECRET not in text
    assert 'check="Login ****"' in text and 'url="https://u:****@x"' in text and 'channel="https://****@hook"' in text


def test_a_new_scrub_masks_the_labels_already_held() -> None:
    """After a reload brought a new secret, a value recorded before it is masked as well."""
    telemetry = recorded(check("Check s3cret", metrics=[Metric("m", 1, labels={"key": "s3cret"})]),
                         collector("C", [Metric("s", 1, labels={"key": "s3cret"})]))
    telemetry.record_skipped("Check s3cret", "web1", "Site")
    telemetry.record_delivery("s3cret", True)
    assert "s3cret" in telemetry.render()
    telemetry.set_scrub(lambda s: s.replace("s3cret", "****"))
    assert "s3cret" not in telemetry.render()


def test_every_family_has_help_a_type_and_a_reserved_name() -> None:
    """Every family of ours is in metrics.RESERVED, so no collector sample can take its name."""
    text = _realistic().render()
    for family in text_string_to_metric_families(text):
        shown = family.name + "_total" if family.type == "counter" else family.name
        assert f"# HELP {shown} " in text and f"# TYPE {shown} {family.type}" in text
        if not family.documentation.startswith("Collector sample") and family.name.startswith("ce_"):
            assert family.name in RESERVED, family.name
    lines = [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert [line for line, n in Counter(lines).items() if n > 1] == []  # no series twice


# every family of ours, by type (counters without _total, as the parser names them)
OURS = {
    **dict.fromkeys(["ce_check_status", "ce_check_last_duration_seconds", "ce_check_last_run_timestamp_seconds",
                     "ce_collector_last_run_timestamp_seconds", "ce_scheduler_tasks",
                     "ce_scheduler_last_tick_timestamp_seconds", "ce_outbox_depth", "ce_plugin_load_errors",
                     "ce_config_last_reload_successful", "ce_config_last_reload_success_timestamp_seconds",
                     "ce_build_info", "ce_agent_start_time_seconds", "ce_export_skipped_samples",
                     "ce_check_plugin_errors", "ce_check_disabled"], "gauge"),
    **dict.fromkeys(["ce_check_runs", "ce_check_timeouts", "ce_collector_runs", "ce_scheduler_skipped_runs",
                     "ce_notifications_sent", "ce_notification_delivery_failures", "ce_outbox_dropped",
                     "ce_config_reloads"], "counter"),
    **dict.fromkeys(["ce_check_duration_seconds", "ce_collector_duration_seconds", "ce_scheduler_lateness_seconds"],
                    "histogram"),
}


def test_every_family_is_declared_from_the_start_without_made_up_values() -> None:
    text = Telemetry(start_time=NOW).render()
    assert {name: kind for name, kind in types(text).items() if name.startswith("ce_")} == OURS
    assert {name for name in samples(text) if name.startswith("ce_")} == {
        "ce_agent_start_time_seconds", "ce_build_info", "ce_config_reloads_total", "ce_export_skipped_samples",
        "ce_scheduler_lateness_seconds_bucket", "ce_scheduler_lateness_seconds_count",
        "ce_scheduler_lateness_seconds_sum",
    }


def test_the_process_metrics_are_the_telemetrys_own() -> None:
    first, second = Telemetry(), Telemetry()  # two in one process: no clash in a shared registry
    got = types(first.render())
    assert got["python_info"] == "gauge"
    if os.path.exists("/proc/self/stat"):
        assert got["process_cpu_seconds"] == "counter"
    assert second.registry is not first.registry


def test_the_text_is_rendered_again_only_after_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry = recorded(check("Disk"))
    calls = []
    render_tasks = telemetry._render_tasks
    monkeypatch.setattr(telemetry, "_render_tasks", lambda: calls.append(1) or render_tasks())
    telemetry.render()
    telemetry.tick(NOW + 1)  # the agent's own gauges are rendered on every call, cheaply
    telemetry.record_delivery("mail", True)
    assert samples(telemetry.render())["ce_scheduler_last_tick_timestamp_seconds"] == {(): NOW + 1}
    assert len(calls) == 1
    telemetry.record_outcome(check("Disk", Status.WARNING), NOW + 2)
    assert samples(telemetry.render())["ce_check_status"] == {series(**CHECK, plugin="fixed"): 1}
    assert len(calls) == 2


def test_threads_recording_while_others_render_lose_nothing() -> None:
    telemetry = Telemetry()
    rounds, workers = 200, 6
    stop = threading.Event()
    rendered: list[str] = []
    errors: list[BaseException] = []

    def record(worker: int) -> None:
        try:
            for i in range(rounds):
                metrics = [Metric("m", i, labels={"w": str(worker)})]
                telemetry.record_outcome(check(f"c{i % 10}", Status(i % 4), metrics), NOW + i)
                telemetry.record_outcome(collector(f"k{worker}", [Metric("s", i)]), NOW + i)
                telemetry.record_delivery("mail", i % 2 == 0)
                telemetry.record_start(0.01)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def render() -> None:
        while not stop.is_set():
            rendered.append(telemetry.render())

    reader = threading.Thread(target=render)
    reader.start()
    threads = [threading.Thread(target=record, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reader.join()
    assert errors == []
    for text in rendered[:: max(1, len(rendered) // 5)]:
        samples(text)  # every render is whole, valid text
    got = samples(telemetry.render())
    assert sum(got["ce_check_runs_total"].values()) == rounds * workers
    assert sum(got["ce_check_duration_seconds_count"].values()) == rounds * workers
    assert sum(got["ce_collector_runs_total"].values()) == rounds * workers
    assert got["ce_notifications_sent_total"][series(channel="mail")] == rounds * workers / 2
    assert got["ce_scheduler_lateness_seconds_count"] == {(): rounds * workers}


def _realistic() -> Telemetry:
    telemetry = recorded(
        check("Disk /", Status.OK, [Metric("disk_used_percent", 40.5, "%", {"mount": "/", "host": "db1"})],
              plugin_name="disk"),
        check("Disk /", Status.CRITICAL, [Metric("disk_used_percent", 93.5, "%", {"mount": "/", "host": "db1"}),
                                          Metric("free", 1e9, "B", {"__x": 'a "quoted"\nvalue'})], plugin_name="disk"),
        check("Slow", Status.UNKNOWN, duration=30.0, timed_out=True, plugin_name="http"),
        check("Ünïcode check", Status.WARNING, [Metric("weird.name-1", math.inf, "s"), Metric("u", None)],
              host="db1"),
        collector("System", [Metric("system_load1", 0.5), Metric("system_network_sent_bytes_total", 1234,
                                                                 "B", {"nic": "eth0"}),
                             Metric("check_status", 7), Metric("check_runs_total", 3),
                             Metric("scheduler_lateness_seconds_count", 1)]),
        collector("Other", [Metric("system_load1", 0.7, labels={"cpu": "0"})], host="db1"),
        collector("Broken", [], Status.UNKNOWN),
        scrub=lambda s: s.replace(SECRET, "****"),
    )
    telemetry.record_skipped("Slow", "web1", "Site")
    for channel, sent in (("mail", True), ("hook", False)):
        telemetry.record_delivery(channel, sent)
    telemetry.record_reload(True, NOW)
    telemetry.record_reload(False, NOW + 10)
    telemetry.record_start(0.02)
    telemetry.set_outbox(2, 5)
    telemetry.set_plugin_load_errors(0)
    telemetry.set_tasks(7)
    telemetry.tick(NOW + 11)
    return telemetry


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CE_AGENT_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is missing and CE_AGENT_REQUIRE_PROMTOOL=1")
        pytest.skip("promtool is missing (Debian package prometheus)")
    return found


@pytest.mark.parametrize("realistic", [pytest.param(True, id="realistic"), pytest.param(False, id="empty")])
def test_prometheus_accepts_the_text(realistic: bool) -> None:
    text = (_realistic() if realistic else Telemetry()).render()
    checked = subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # not even a lint warning


# ---- the registry: the model render() serializes -------------------------------------------------------


def _checks() -> Telemetry:
    return recorded(
        check("Disk", Status.OK, [Metric("used", 40.5, "%", {"mount": "/", "host": "db1"})], plugin_name="disk"),
        check("Disk", Status.CRITICAL, [Metric("used", 93.5, "%", {"mount": "/", "host": "db1"}),
                                        Metric("free", 1e9, "B", {"__x": 'a "quoted"\nvalue', "p": "C:\\d"})],
              duration=1.5, plugin_name="disk"),
        check("Slow", Status.UNKNOWN, duration=30.0, timed_out=True, plugin_name="http"),
        check("Slow", Status.UNKNOWN, duration=61.0, timed_out=True, plugin_name="http"),
        check("Ünïcode", Status.WARNING, [Metric("weird.name-1", math.inf, "s"), Metric("u", None),
                                          Metric("n", math.nan)], host="db1"),
        check("Other", metrics=[Metric("used", 1, "%", {"device": "sda"})], duration=math.nan),
    )


def _collectors() -> Telemetry:
    return recorded(
        collector("System", [Metric("load1", 0.5), Metric("net_sent_bytes_total", 1234, "B", {"nic": "eth0"}),
                             Metric("check_status", 7), Metric("check_runs_total", 3),
                             Metric("scheduler_lateness_seconds_count", 1), Metric("x_total_total", 2)]),
        # a gauge of the name System took as a counter, and label names the union over collectors
        collector("Other", [Metric("load1", 0.7, labels={"cpu": "0"}), Metric("net_sent_bytes", 5)], host="db1"),
        collector("Broken", [], Status.UNKNOWN),
    )


def _skipped() -> Telemetry:
    telemetry = recorded(check(f"Slow {SECRET}", Status.UNKNOWN, timed_out=True, host=SECRET),
                         scrub=lambda s: s.replace(SECRET, "****"))
    for name in (f"Slow {SECRET}", f"Slow {SECRET}", "Never ran"):
        telemetry.record_skipped(name, SECRET, "Site")
    return telemetry


def _agent() -> Telemetry:
    telemetry = Telemetry(lambda s: s.replace(SECRET, "****"), start_time=NOW - 60)
    for channel, sent in (("mail", True), ("mail", False), (f"https://{SECRET}@hook", False), ('odd "x"', True)):
        telemetry.record_delivery(channel, sent)
    for lateness in (0.0005, 0.05, 3.0, -2.0, math.nan, 11.0):
        telemetry.record_start(lateness)
    telemetry.set_outbox(3, 7)
    telemetry.set_plugin_load_errors(1)
    telemetry.set_tasks(12)
    telemetry.tick(NOW + 5)
    return telemetry


def _reloads() -> Telemetry:
    telemetry = Telemetry(start_time=NOW)
    for i, ok in enumerate((True, False, True, False)):
        telemetry.record_reload(ok, NOW + i)
    return telemetry


def _retained() -> Telemetry:
    telemetry = recorded(check("Kept", metrics=[Metric("m", 1)]), check("Gone", metrics=[Metric("m", 2)]),
                         collector("Kept", [Metric("queue", 1)]), collector("Gone", [Metric("only_gone_total", 3)]))
    telemetry.record_skipped("Gone", "web1", "Site")
    telemetry.render()
    telemetry.retain({("check", "Site", "web1", "Kept"), ("collector", "Site", "web1", "Kept")})
    return telemetry


def _duplicates_and_a_new_scrub() -> Telemetry:
    """Two checks alike once scrubbed (their perfdata is rendered whole, not from the cached lines), and
    labels scrubbed again after a reload."""
    telemetry = recorded(check("db secret1", metrics=[Metric("m", 1)]), check("db secret2", metrics=[Metric("m", 2)]),
                         scrub=lambda s: s.replace("secret1", "****").replace("secret2", "****"))
    telemetry.record_outcome(check("Check s3cret", metrics=[Metric("m", 1, labels={"key": "s3cret"})]), NOW)
    telemetry.render()
    telemetry.set_scrub(lambda s: s.replace("s3cret", "****"))
    return telemetry


def _a_label_name_after_a_render() -> Telemetry:
    """The cached lines of a task get the label name a later task brings (render()'s cache, not a fresh text)."""
    telemetry = recorded(check("A", metrics=[Metric("m", 1, labels={"x": "1"})]))
    telemetry.render()
    telemetry.record_outcome(check("B", metrics=[Metric("m", 2, labels={"y": "2"})]), NOW)
    telemetry.render()
    telemetry.tick(NOW + 1)
    return telemetry


STATES = [
    pytest.param(lambda: Telemetry(start_time=NOW), id="empty"),
    pytest.param(_checks, id="checks: OK, CRITICAL, timeouts, perfdata with plugin labels"),
    pytest.param(_collectors, id="collectors: _total samples, names clashing with ours"),
    pytest.param(_skipped, id="skipped runs"),
    pytest.param(_agent, id="deliveries, lateness, outbox, the agent's gauges"),
    pytest.param(_reloads, id="reloads"),
    pytest.param(_retained, id="after retain"),
    pytest.param(_duplicates_and_a_new_scrub, id="duplicates and a new scrub"),
    pytest.param(_a_label_name_after_a_render, id="a label name after a render"),
    pytest.param(_realistic, id="realistic"),
]
Exposition = tuple[set[tuple[str, str, str]], Counter[tuple[Any, ...]]]


def _exposition(text: str) -> Exposition:
    """The text's families as (name, type, help), and its samples as (family, type, sample, labels,
    value), counted (a series given twice shows); the values of process_* and python_info are left
    out, not the samples: they change between two reads."""
    declared, given = set(), Counter()
    for family in text_string_to_metric_families(text):
        declared.add((family.name, family.type, family.documentation))
        changing = family.name.startswith("process_") or family.name == "python_info"
        for s in family.samples:
            given[family.name, family.type, s.name, tuple(sorted(s.labels.items())),
                  None if changing else s.value] += 1
    return declared, given


@pytest.mark.parametrize("registry_first", [pytest.param(False, id="render first"),
                                            pytest.param(True, id="registry first")])
@pytest.mark.parametrize("state", STATES)
def test_the_registry_gives_what_render_writes(state: Callable[[], Telemetry], registry_first: bool) -> None:
    """/metrics (render(), cached) is the registry's families: generate_latest gives the same samples."""
    telemetry = state()
    if registry_first:
        exported = generate_latest(telemetry.registry).decode()
        text = telemetry.render()
    else:
        text = telemetry.render()
        exported = generate_latest(telemetry.registry).decode()
    (ours_declared, ours), (theirs_declared, theirs) = _exposition(text), _exposition(exported)
    assert ours_declared == theirs_declared
    assert (ours - theirs, theirs - ours) == (Counter(), Counter())
    assert {name for name, _, _ in ours_declared} >= {*OURS, "python_info"}  # not two empty texts


@pytest.mark.parametrize("state", STATES)
def test_prometheus_accepts_the_registrys_text(state: Callable[[], Telemetry]) -> None:
    text = generate_latest(state().registry).decode()
    checked = subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # not even a lint warning
