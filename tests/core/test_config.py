import pytest

from gridshift.scheduler.config import load_settings, unknown_variables
from gridshift.scheduler.errors import ConfigError


def test_defaults_need_no_file_and_no_network():
    s = load_settings(None)
    assert s.db_url.endswith("gridshift.db")
    assert s.regions["local"].sources[0].provider == "replay"


def test_yaml_and_environment(tmp_path, monkeypatch):
    path = tmp_path / "g.yaml"
    path.write_text("tick_s: 5\napi:\n  port: 9001\n")
    monkeypatch.setenv("GRIDSHIFT_API__PORT", "9002")
    s = load_settings(path)
    assert s.tick_s == 5
    assert s.api.port == 9002  # the environment wins


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tick_s: -1\n", "tick_s: Input should be greater than 0"),
        ("tickk_s: 1\n", "tickk_s: unknown field"),
        ("providers:\n  x:\n    type: bogus\n", "providers.x"),
        ("default_region: mars\n", "default_region 'mars' is not one of the regions"),
        (
            "regions:\n  local:\n    sources:\n      - provider: nope\n",
            "names provider 'nope'",
        ),
        (
            "ray:\n  regions:\n    local: {address: 'head:8265'}\n",
            "ray.regions.local.address: Value error, 'head:8265' is not the address of a Ray "
            "dashboard",
        ),
        (
            "ray:\n  regions:\n    gb: {address: 'http://head:8265'}\n",
            "ray.regions names region 'gb', which is not under regions (local)",
        ),
        (
            "ray:\n  default_region: gb\n  regions:\n    local: {address: 'http://h:8265'}\n",
            "default_region 'gb' is not one of ray.regions (local)",
        ),
        ("- a list\n", "mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "none.yaml")


def test_secrets_are_not_printed():
    s = load_settings(
        None,
        providers={"em": {"type": "electricitymaps", "api_key": "s3cret"}},
        regions={"local": {"sources": [{"provider": "em", "location": "DE"}]}},
    )
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.model_dump())


def test_a_scaled_clock_can_start_at_a_chosen_time():
    from datetime import UTC, datetime, timedelta

    from gridshift.scheduler.agent import make_clock

    origin = datetime.now(UTC) - timedelta(seconds=10)
    start = datetime(2026, 1, 13, 4, tzinfo=UTC)
    before = datetime.now(UTC)
    now = make_clock(load_settings(None, clock_speed=60, clock_origin=origin, clock_start=start))
    shown = now.now()
    after = datetime.now(UTC)
    # the clock shows `start` at the origin and runs 60 times faster from there
    assert start + (before - origin) * 60 <= shown <= start + (after - origin) * 60
    same = make_clock(load_settings(None, clock_speed=60, clock_origin=origin)).now()
    assert abs((same - origin).total_seconds() - 600) < 60  # no start: the origin itself
    with pytest.raises(ConfigError, match="clock_origin"):
        make_clock(load_settings(None, clock_start=start))


def test_a_mistyped_variable_is_named_with_the_setting_it_resembles():
    env = {
        "GRIDSHIFT_TICKS": "3",
        "GRIDSHIFT_TICK_S": "3",
        "GRIDSHIFT_API__PORT": "9000",
        "GRIDSHIFT_API_URL": "http://x:1",
        "GRIDSHIFT_NONSENSE_AT_ALL": "1",
        "PATH": "/bin",
    }
    assert unknown_variables(env) == [
        "GRIDSHIFT_NONSENSE_AT_ALL names no setting and is ignored",
        "GRIDSHIFT_TICKS names no setting and is ignored; did you mean GRIDSHIFT_TICK_S?",
    ]
