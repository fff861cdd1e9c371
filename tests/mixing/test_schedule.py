"""Mixture schedules: lookup, interpolation, validation messages, files, and export from a run dir."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataflex.mixing.export import export_schedule
from dataflex.mixing.schedule import MixtureSchedule, ScheduleError, load_schedule, save_schedule

NAMES = ["a", "b", "c"]


def test_constant_schedule_holds_each_point_until_the_next():
    s = MixtureSchedule.from_points(NAMES, [(0, [0.5, 0.25, 0.25]), (10, [0.1, 0.1, 0.8])])
    assert s.at(0).tolist() == [0.5, 0.25, 0.25]
    assert s.at(9).tolist() == [0.5, 0.25, 0.25]
    assert s.at(10).tolist() == [0.1, 0.1, 0.8]
    assert s.at(1000).tolist() == [0.1, 0.1, 0.8]


def test_linear_schedule_interpolates_then_holds():
    s = MixtureSchedule.from_points(NAMES, [(0, [1.0, 0.0, 0.0]), (4, [0.0, 0.5, 0.5])], "linear")
    # at step 1: 3/4 of the way from the second point back to the first
    np.testing.assert_allclose(s.at(1), [0.75, 0.125, 0.125])
    np.testing.assert_allclose(s.at(2), [0.5, 0.25, 0.25])
    np.testing.assert_allclose(s.at(4), [0.0, 0.5, 0.5])
    np.testing.assert_allclose(s.at(7), [0.0, 0.5, 0.5])
    assert abs(s.at(3).sum() - 1.0) < 1e-12


def test_points_by_name_are_reordered_to_the_domains():
    s = MixtureSchedule.from_points(NAMES, [(0, {"c": 0.2, "a": 0.3, "b": 0.5})])
    assert s.at(0).tolist() == [0.3, 0.5, 0.2]
    r = s.reorder(["c", "b", "a"])
    assert r.domains == ("c", "b", "a") and r.at(0).tolist() == [0.2, 0.5, 0.3]


@pytest.mark.parametrize(
    "points, message",
    [
        ([(1, [0.5, 0.25, 0.25])], "starts at step 0"),
        ([(0, [0.5, 0.25, 0.25]), (5, [0.5, 0.25, 0.25]), (5, [0.5, 0.25, 0.25])], "strictly increasing"),
        ([(0, [0.5, 0.25, 0.25]), (3, [0.5, 0.25, 0.25]), (2, [0.5, 0.25, 0.25])], "strictly increasing"),
        ([(0, [1.25, -0.25, 0.0])], r"negative for \['b'\]"),
        ([(0, [0.5, 0.5, 0.5])], "sum to 1.5"),
        ([(0, [0.5, 0.5])], "2 proportions for 3 domains"),
        ([(0, [float("nan"), 0.5, 0.5])], "finite"),
        ([(0, {"a": 0.5, "b": 0.5, "d": 0.0})], r"name \['a', 'b', 'd'\]"),
        ([], "at least one point"),
    ],
)
def test_invalid_schedules_fail_with_the_reason(points, message):
    with pytest.raises(ScheduleError, match=message):
        MixtureSchedule.from_points(NAMES, points)


def test_reorder_names_missing_and_extra_domains():
    s = MixtureSchedule.from_points(NAMES, [(0, [0.5, 0.25, 0.25])])
    with pytest.raises(ScheduleError, match=r"missing from the schedule: \['d'\].*not in the data: \['c'\]"):
        s.reorder(["a", "b", "d"])


def test_unknown_keys_and_interpolation_are_refused():
    with pytest.raises(ScheduleError, match="unknown key"):
        MixtureSchedule.from_dict({"domains": NAMES, "points": [], "interp": "linear"})
    with pytest.raises(ScheduleError, match="interpolation='cubic'"):
        MixtureSchedule.from_points(NAMES, [(0, [0.5, 0.25, 0.25])], "cubic")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_round_trip_is_bit_exact(tmp_path, suffix):
    rng = np.random.default_rng(0)
    raw = rng.random((3, 3))
    props = raw / raw.sum(1, keepdims=True)
    s = MixtureSchedule.from_points(NAMES, [(0, props[0]), (7, props[1]), (30, props[2])], "linear")
    back = load_schedule(save_schedule(s, tmp_path / f"s{suffix}"))
    assert back == s


def test_bad_file_is_named(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("domains: [a, b\npoints: [")
    with pytest.raises(ScheduleError, match="not valid YAML"):
        load_schedule(path)


def _history(tmp_path, updates):
    content = {
        "domains": ["x", "y"],
        "schedule": {"warmup_step": 0, "update_step": 2, "update_times": 2},
        "updates": [{"step": s, "proportions": p, "source": src} for s, p, src in updates],
        "trained_counts": [],
    }
    (tmp_path / "mixture_history.json").write_text(json.dumps(content))


def test_export_from_history_collapses_records_of_one_step(tmp_path):
    p1 = [0.123456789012345678, 1 - 0.123456789012345678]
    _history(tmp_path, [(0, [0.5, 0.5], "init"), (0, [0.3, 0.7], "RandomMixer"), (2, p1, "RandomMixer")])
    s = export_schedule(tmp_path)
    assert s.domains == ("x", "y") and s.change_steps() == [0, 2]
    assert s.at(0).tolist() == [0.3, 0.7] and s.at(2).tolist() == p1  # bit-exact
    assert s.source["trainer"]["update_step"] == 2


def test_export_from_metrics_ignores_achieved_token_shares(tmp_path):
    rows = [
        {"step": 0, "mixture/x": 0.5, "mixture/y": 0.5},
        {"step": 1, "train/loss/x": 2.0, "mixture/achieved_tokens/x": 0.4, "mixture/achieved_tokens/y": 0.6},
        {"step": 3, "mixture/x": 0.25, "mixture/y": 0.75, "train/loss/x": 1.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = export_schedule(tmp_path)
    assert s.domains == ("x", "y") and s.change_steps() == [0, 3]
    assert s.at(2).tolist() == [0.5, 0.5] and s.at(3).tolist() == [0.25, 0.75]


def test_export_of_a_folder_without_a_run_says_so(tmp_path):
    with pytest.raises(ScheduleError, match="neither mixture_history.json nor metrics.jsonl"):
        export_schedule(tmp_path)


def test_dataflex_export_writes_the_schedule_and_the_replay_overrides(tmp_path, capsys):
    from dataflex.mixing.export import main

    _history(tmp_path, [(0, [0.5, 0.5], "init"), (2, [0.25, 0.75], "RandomMixer")])
    assert main([str(tmp_path), "-o", str(tmp_path / "s.json")]) == 0
    assert load_schedule(tmp_path / "s.json").at(2).tolist() == [0.25, 0.75]
    out = capsys.readouterr().out
    assert "2 proportion changes" in out
    assert f"component=schedule component.path={tmp_path / 's.json'}" in out
    assert "trainer.warmup_step=0 trainer.update_step=2 trainer.update_times=2" in out
    with pytest.raises(SystemExit, match="dataflex-export: .*neither"):
        main([str(tmp_path / "empty")])
