"""Scenario and policy files: the built-ins load, mistakes are named field by field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from meltguard.api.validation import PolicyInvalid, parse_policy
from meltguard.sim import cli as simulate_cli
from meltguard.sim.errors import SimulationInputInvalid
from meltguard.sim.scenario import (
    DEFAULT_SCENARIO,
    built_in_names,
    load_policy,
    load_scenario,
    merge_patch,
    parse_scenario,
)
from tests.sim.conftest import POLICY, small_document


def paths_of(error: SimulationInputInvalid) -> list[str]:
    return [field.path for field in error.errors]


def test_the_built_in_scenario_loads_with_its_policy() -> None:
    assert "ghibli-surge" in built_in_names()
    scenario, policy = load_scenario("ghibli-surge")
    assert scenario.name == "ghibli-surge"
    assert scenario.duration_seconds == 24 * 3600
    assert scenario.demand.surge is not None and scenario.demand.surge.new_users == 1_000_000
    assert [tier.name for tier in policy.spec.quotas.tiers] == ["free", "plus", "pro"]


def test_a_scenario_file_loads_by_path(small_file: Path) -> None:
    scenario, _ = load_scenario(str(small_file))
    assert scenario.name == "small-surge"


def test_an_unknown_scenario_name_lists_the_built_in_ones() -> None:
    with pytest.raises(SimulationInputInvalid) as caught:
        load_scenario("no-such-surge")
    assert "ghibli-surge" in str(caught.value)
    assert paths_of(caught.value) == ["--scenario"]


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"fleet": {"gpuSupply": 0}}, "fleet.gpuSupply", "greater than or equal to 1"),
        ({"fleet": {"gpuSuply": 10}}, "fleet.gpuSuply", "unknown field"),
        ({"timing": {"physicsStepSeconds": 30, "controlTickSeconds": 45}},
         "timing.controlTickSeconds", "whole multiple"),
        ({"demand": {"tiers": {"free": {"dailyUsers": -1}}}}, "demand.tiers.free.dailyUsers",
         "greater than or equal to 0"),
        ({"demand": {"tiers": {"gold": {"dailyUsers": 5}}}}, "demand.tiers.gold",
         "has no tier 'gold'"),
        ({"demand": {"tiers": {"free": {"dailyUsers": 5}},
                     "surge": {"tierShares": {"free": 0.5}}}},
         "demand.surge.tierShares", "add up to 1"),
        ({"staticCaps": {"gold": 3}}, "staticCaps.gold", "has no tier"),
        ({"durationHours": 0.01}, "durationHours", "at least one control tick"),
    ],
)
def test_scenario_mistakes_name_the_field(change: dict[str, object], path: str,
                                          words: str) -> None:
    document = small_document(**change)
    with pytest.raises(SimulationInputInvalid) as caught:
        parse_scenario(document, "broken.yaml")
    assert path in paths_of(caught.value)
    assert words in str(caught.value)
    assert "broken.yaml" in str(caught.value)


def test_policy_mistakes_inside_a_scenario_are_named_like_meltguard_validate() -> None:
    policy = copy.deepcopy(POLICY)
    policy["spec"]["quotas"]["tiers"][1]["floor"] = 500
    with pytest.raises(PolicyInvalid) as expected:
        parse_policy(policy)
    with pytest.raises(SimulationInputInvalid) as caught:
        parse_scenario(small_document(policy=policy), "broken.yaml")
    assert [str(e) for e in caught.value.errors] == [f"policy.{e}" for e in expected.value.errors]
    assert "policy.spec.quotas.tiers[1].floor" in paths_of(caught.value)


def test_every_mistake_is_reported_at_once() -> None:
    policy = copy.deepcopy(POLICY)
    policy["spec"]["maxReplicas"] = 0
    document = small_document(policy=policy, fleet={"gpuSupply": -5})
    with pytest.raises(SimulationInputInvalid) as caught:
        parse_scenario(document, "broken.yaml")
    assert {"fleet.gpuSupply", "policy.spec.maxReplicas"} <= set(paths_of(caught.value))


def test_a_policy_file_gets_the_same_messages_as_meltguard_validate(tmp_path: Path) -> None:
    scenario, _ = parse_scenario(small_document(), "small")
    policy = copy.deepcopy(POLICY)
    policy["spec"]["minReplicas"] = 100
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    with pytest.raises(PolicyInvalid) as expected:
        parse_policy(policy)
    with pytest.raises(SimulationInputInvalid) as caught:
        load_policy(path, scenario)
    assert caught.value.errors == expected.value.errors
    assert str(path) in str(caught.value)


def test_a_policy_without_the_scenarios_tiers_is_refused(tmp_path: Path) -> None:
    scenario, _ = parse_scenario(small_document(), "small")
    policy = copy.deepcopy(POLICY)
    policy["spec"]["quotas"]["tiers"] = [{"name": "basic", "limit": 5}]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    with pytest.raises(SimulationInputInvalid) as caught:
        load_policy(path, scenario)
    assert "demand.tiers.free" in paths_of(caught.value)


@pytest.mark.parametrize("text", ["{unclosed: [", "- just\n- a list\n", ""])
def test_unreadable_files_are_named_not_tracebacks(tmp_path: Path, text: str) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    with pytest.raises(SimulationInputInvalid) as caught:
        load_scenario(str(path))
    assert str(path) in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SimulationInputInvalid) as caught:
        load_scenario(str(tmp_path / "missing.yaml"))
    assert "missing.yaml" in str(caught.value)


def test_the_suite_is_six_scenarios_the_default_first() -> None:
    names = built_in_names()
    assert names[0] == DEFAULT_SCENARIO == simulate_cli.DEFAULT_SCENARIO == "ghibli-surge"
    assert sorted(names) == ["cooling-failure", "flash-crowd", "ghibli-surge", "normal-day",
                             "slow-ramp", "supply-shortage"]
    for name in names:
        scenario, _ = load_scenario(name)
        assert scenario.name == name
        assert scenario.description


def test_the_other_built_ins_are_ghibli_surge_with_changes() -> None:
    ghibli, ghibli_policy = load_scenario("ghibli-surge")
    shortage, shortage_policy = load_scenario("supply-shortage")
    assert shortage.fleet.gpu_supply == 300
    assert shortage.fleet.model_copy(update={"gpu_supply": 1000}) == ghibli.fleet
    assert shortage_policy == ghibli_policy
    assert shortage.gpu_profiles == ghibli.gpu_profiles
    normal, _ = load_scenario("normal-day")
    assert normal.demand.surge is None  # null deletes
    assert normal.demand.tiers == ghibli.demand.tiers
    cooling, _ = load_scenario("cooling-failure")
    assert [(f.profile, f.node_share) for f in cooling.cooling_failures] == \
        [("degraded-cooling", 0.25)]
    flash, _ = load_scenario("flash-crowd")
    assert flash.demand.surge is not None and flash.demand.surge.new_users == 300_000
    assert flash.demand.surge.tier_shares == {"free": 0.99, "plus": 0.01, "pro": 0}


def test_merge_patch_follows_rfc_7386() -> None:
    # examples of RFC 7386, section 3
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": "b", "b": "c"}, {"a": None}) == {"b": "c"}
    assert merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch([1, 2], {"a": "b", "c": None}) == {"a": "b"}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


def test_a_file_extends_a_built_in(tmp_path: Path) -> None:
    path = tmp_path / "hot-rack.yaml"
    path.write_text(yaml.safe_dump({
        "extends": "normal-day", "name": "hot-rack",
        "coolingFailures": [{"profile": "degraded-cooling", "nodeShare": 0.5, "startHour": 3}],
    }))
    scenario, policy = load_scenario(str(path))
    assert scenario.name == "hot-rack"
    assert scenario.demand.surge is None  # normal-day's own change, inherited
    assert scenario.cooling_failures[0].end_hour is None
    assert policy == load_scenario("ghibli-surge")[1]


@pytest.mark.parametrize(
    ("document", "path", "words"),
    [
        ({"extends": "no-such-day", "name": "x"}, "extends", "no built-in scenario"),
        ({"extends": "normal-day"}, "name", "must name itself"),
    ],
)
def test_extends_mistakes_name_the_field(document: dict[str, object], path: str,
                                         words: str) -> None:
    with pytest.raises(SimulationInputInvalid) as caught:
        parse_scenario(document, "mine.yaml")
    assert paths_of(caught.value) == [path]
    assert words in str(caught.value)


def broken_profile(**change: object) -> dict[str, object]:
    document = small_document()
    document["gpuProfiles"]["h200"].update(change)
    return document


@pytest.mark.parametrize(
    ("document", "path", "words"),
    [
        (broken_profile(fullLoadWatts=750), "gpuProfiles.h200.fullLoadWatts",
         "must not exceed powerLimitWatts (700)"),
        (broken_profile(fullLoadCelsius=30), "gpuProfiles.h200.fullLoadCelsius",
         "must be above idleCelsius"),
        (broken_profile(slowdownCelsius=30), "gpuProfiles.h200.slowdownCelsius",
         "an idle GPU would slow"),
        (broken_profile(source=""), "gpuProfiles.h200.source", "at least 1 character"),
        (small_document(fleet={"gpuProfile": "b200"}), "fleet.gpuProfile",
         "no profile 'b200' in gpuProfiles (it has: degraded-cooling, h200)"),
        (small_document(coolingFailures=[{"profile": "wet", "nodeShare": 0.5, "startHour": 1}]),
         "coolingFailures[0].profile", "no profile 'wet'"),
        (small_document(coolingFailures=[{"profile": "h200", "nodeShare": 0.5, "startHour": 2,
                                          "endHour": 1}]),
         "coolingFailures[0].endHour", "must be after startHour (2)"),
        (small_document(coolingFailures=[{"profile": "h200", "nodeShare": 0, "startHour": 2}]),
         "coolingFailures[0].nodeShare", "greater than 0"),
        (small_document(latencySloSeconds=0), "latencySloSeconds", "greater than 0"),
    ],
)
def test_profile_and_failure_mistakes_name_the_field(document: dict[str, object], path: str,
                                                     words: str) -> None:
    with pytest.raises(SimulationInputInvalid) as caught:
        parse_scenario(document, "broken.yaml")
    assert path in paths_of(caught.value)
    assert words in str(caught.value)
