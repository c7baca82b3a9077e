"""Scenario and policy files: the built-ins load, mistakes are named field by field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from meltguard.api.validation import PolicyInvalid, parse_policy
from meltguard.sim.errors import SimulationInputInvalid
from meltguard.sim.scenario import (
    built_in_names,
    load_policy,
    load_scenario,
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
