from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from gridshift.scheduler.errors import InvalidTransition
from gridshift.scheduler.models import (
    TRANSITIONS,
    JobSpec,
    JobState,
    check_transition,
    parse_duration_s,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("45m", 2700), ("8h", 28800), ("1.5d", 129600), ("1h30m", 5400)],
)
def test_parse_duration(text, seconds):
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "8 hours", "-1h", "h8"])
def test_parse_duration_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_duration_s(text)


def test_terminal_states_have_no_way_out():
    for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        assert state.terminal
        for target in JobState:
            with pytest.raises(InvalidTransition, match="terminal"):
                check_transition("j", state, target)


def test_every_transition_is_listed_and_checked():
    for source, targets in TRANSITIONS.items():
        for target in JobState:
            if target in targets:
                check_transition("j", source, target)
            else:
                with pytest.raises(InvalidTransition):
                    check_transition("j", source, target)
    # a held job cannot jump to succeeded; a suspended one cannot go back to held
    assert JobState.SUCCEEDED not in TRANSITIONS[JobState.HELD]
    assert JobState.HELD not in TRANSITIONS[JobState.SUSPENDED]


def test_spec_rejects_unknown_fields_and_bad_values():
    with pytest.raises(ValidationError, match="extra"):
        JobSpec(command=["x"], expected_duration_s=1, gpu=2)  # typo of gpus
    with pytest.raises(ValidationError):
        JobSpec(command=["x"], expected_duration_s=1, gpus=-1)
    with pytest.raises(ValidationError):
        JobSpec(command=[], expected_duration_s=1)
    with pytest.raises(ValidationError):
        JobSpec(command=["x"], expected_duration_s=0)
    with pytest.raises(ValidationError, match="timezone"):
        JobSpec(command=["x"], expected_duration_s=1, deadline=datetime(2030, 1, 1))
    with pytest.raises(ValidationError, match="not both"):
        JobSpec(
            command=["x"],
            expected_duration_s=1,
            deadline=datetime(2030, 1, 1, tzinfo=UTC),
            max_delay_s=5,
        )


def test_deadline_resolution():
    now = datetime(2024, 1, 1, tzinfo=UTC)
    spec = JobSpec(command=["x"], expected_duration_s=3600, max_delay_s=7200)
    assert spec.resolve_deadline(now, 99) == now + timedelta(hours=3)
    spec = JobSpec(command=["x"], expected_duration_s=3600)
    assert spec.resolve_deadline(now, 1800) == now + timedelta(seconds=5400)
    when = datetime(2024, 1, 2, tzinfo=UTC)
    assert (
        JobSpec(command=["x"], expected_duration_s=1, deadline=when).resolve_deadline(now, 0)
        == when
    )
