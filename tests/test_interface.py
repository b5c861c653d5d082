"""The seam is plain data: every request and result field survives a JSON round trip (a remote
backend sends them over HTTP), and a malformed request is a clear ValueError."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from model.interface import (
    Hole,
    InfillRequest,
    InfillResult,
    StopRules,
    request_from_json,
    request_to_json,
    result_from_json,
    result_to_json,
)

FULL = InfillRequest(
    segments=[
        "def f(a):\n    ",
        Hole(48, 2, False, StopRules(False, 3, 4, 1, True)),
        "\n    x = ",
        Hole(24, 1, True, StopRules(single_line=True)),
        "\n",
        Hole(8),
    ],
    steps=6,
    candidates=3,
    temperature=0.6,
    language="python",
    schedule="fixed",
    threshold=0.7,
    seed=5,
    want_trajectory=True,
    end_rule="frontier",
    length_estimate=False,
    reuse_context=False,
    deadline=1_790_000_000.25,
    tokens_per_step=2,
    header_chars=4,
)


def test_every_request_field_round_trips_through_json():
    defaults = InfillRequest(segments=[])
    changed = {
        f.name for f in fields(InfillRequest) if getattr(FULL, f.name) != getattr(defaults, f.name)
    }
    assert changed == {f.name for f in fields(InfillRequest)}  # the case sets every field
    wire = json.loads(json.dumps(request_to_json(FULL)))
    assert request_from_json(wire) == FULL
    assert request_from_json(wire).holes[0].stop == StopRules(False, 3, 4, 1, True)


def test_fields_at_their_defaults_stay_off_the_wire():
    """A server that predates a field still takes the requests that leave it at its default
    (its parser refuses unknown fields)."""
    plain = InfillRequest(segments=["x = ", Hole(4), "\n"], header_chars=0)
    wire = request_to_json(plain)
    assert "header_chars" not in wire and "want_trajectory" not in wire and "seed" not in wire
    assert request_from_json(json.loads(json.dumps(wire))) == plain
    assert request_to_json(replace(plain, header_chars=12))["header_chars"] == 12


def test_results_round_trip_through_json():
    result = InfillResult(["x", "y"], -0.25, 4, [["", ""], ["x", "y"]], 2, ["pad", "scope"])
    assert result_from_json(json.loads(json.dumps(result_to_json(result)))) == result


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"segments": "x"},
        {"segments": [1]},
        {"segments": [{"hole": {"max_tokens": 4, "colour": 1}}]},
        {"segments": [{"hole": {"max_tokens": 4, "stop": {"single": 1}}}]},
        {"segments": ["x"], "temperatur": 0.5},
        {"segments": ["x"], "temperature": None},  # reached the model as a TypeError (500)
        {"segments": ["x"], "seed": [1]},
        {"segments": ["x"], "candidates": True},
        {"segments": [{"hole": {"max_tokens": "8"}}]},
        {"segments": [{"hole": {"max_tokens": 8, "stop": {"single_line": 1}}}]},
    ],
)
def test_a_malformed_request_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        request_from_json(bad)
