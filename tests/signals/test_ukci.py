"""UK Carbon Intensity client against its replica, and the documented/captured examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gridshift.scheduler.config import UkCarbonIntensityConfig
from gridshift.scheduler.errors import ProviderDataError, ProviderUnavailable
from gridshift.scheduler.models import EmissionBasis, SignalKind
from gridshift.scheduler.signals.ukci import UkCarbonIntensityProvider

from .conftest import SleepRecorder

HALF = timedelta(minutes=30)
NOON = datetime(2024, 5, 1, 12, tzinfo=UTC)


def make(replica, clock, **cfg):
    settings = {"base_url": replica.base_url, "ttl_s": 0.0, "retries": 1, "timeout_s": 2.0}
    settings.update(cfg)
    provider = UkCarbonIntensityProvider("ukci", UkCarbonIntensityConfig(**settings), clock)
    provider.http.sleep = SleepRecorder()
    return provider


def test_national_current_uses_the_forecast_until_the_actual_is_published(uk_replica, clock):
    provider = make(uk_replica, clock)
    sample = provider.current("national")
    assert (sample.start, sample.end) == (NOON, NOON + HALF)
    assert sample.intensity_g_per_kwh == round(uk_replica.value_at(NOON))
    assert sample.estimated is True
    assert sample.kind is SignalKind.AVERAGE and sample.basis is EmissionBasis.DIRECT
    assert uk_replica.requests[0].path == "/intensity"
    assert uk_replica.requests[0].headers["accept"] == "application/json"


def test_history_uses_actuals(uk_replica, clock):
    provider = make(uk_replica, clock)
    history = provider.history("national", NOON - timedelta(hours=2), NOON)
    assert [s.start for s in history] == [NOON - timedelta(hours=2) + i * HALF for i in range(4)]
    assert all(not s.estimated for s in history)
    assert history[0].intensity_g_per_kwh == round(uk_replica.value_at(history[0].start)) - 3
    assert uk_replica.requests[-1].path == "/intensity/2024-05-01T10:00Z/2024-05-01T12:00Z"


def test_region_id_and_postcode(uk_replica, clock):
    provider = make(uk_replica, clock)
    london = provider.current("13")
    assert london.intensity_g_per_kwh == round(uk_replica.value_at(NOON) + 13)
    assert uk_replica.requests[-1].path == "/regional/regionid/13"
    assert provider.current("region:13") == london.model_copy(update={"region": "region:13"})
    south = provider.current("RG41 5RD")  # a full postcode is cut to its outward part
    assert south.intensity_g_per_kwh == round(uk_replica.value_at(NOON) + 12)
    assert uk_replica.requests[-1].path == "/regional/postcode/RG41"


def test_forecast_48h_half_hours_regional(uk_replica, clock):
    provider = make(uk_replica, clock)
    now = clock.now()
    forecast = provider.forecast("11", now, now + timedelta(hours=48))
    assert uk_replica.requests[-1].path == "/regional/intensity/2024-05-01T12:10Z/fw48h/regionid/11"
    assert forecast.points[0].start == NOON
    assert len(forecast.points) == 97
    assert all(p.end - p.start == HALF for p in forecast.points)
    assert forecast.points[5].intensity_g_per_kwh == round(
        uk_replica.value_at(forecast.points[5].start) + 11
    )
    window = provider.forecast("11", now + timedelta(hours=1), now + timedelta(hours=2))
    assert [p.start for p in window.points] == [NOON + i * HALF for i in (2, 3, 4)]


def test_forecast_asked_on_a_half_hour_drops_the_period_that_just_ended(uk_replica, clock):
    # `from` on the boundary: the API's first period is the half hour ending there
    clock.set(NOON + HALF + timedelta(seconds=30))
    provider = make(uk_replica, clock)
    now = clock.now()
    forecast = provider.forecast("11", now, now + timedelta(hours=48))
    assert uk_replica.requests[-1].path == "/regional/intensity/2024-05-01T12:30Z/fw48h/regionid/11"
    assert forecast.points[0].start == NOON + HALF
    assert len(forecast.points) == 96


def test_national_forecast_path_and_values(uk_replica, clock):
    provider = make(uk_replica, clock)
    now = clock.now()
    forecast = provider.forecast("", now, now + timedelta(hours=24))
    assert uk_replica.requests[-1].path == "/intensity/2024-05-01T12:10Z/fw48h"
    assert forecast.points[-1].end <= now + timedelta(hours=24, minutes=30)
    assert forecast.provider == "ukci" and forecast.issued_at == now


def test_bad_and_unknown_locations(uk_replica, clock):
    provider = make(uk_replica, clock)
    for bad in ("R", "99", "not a postcode"):
        with pytest.raises(ProviderDataError) as err:
            provider.current(bad)
        assert err.value.reason == "not_found"
    assert uk_replica.requests == []  # rejected before any call
    with pytest.raises(ProviderDataError) as err:
        provider.current("ZZ9")  # well-formed, unknown: the API answers an empty 200
    assert err.value.reason == "empty"


def test_errors_empty_partial(uk_replica, clock):
    provider = make(uk_replica, clock, retries=0)
    now = clock.now()
    uk_replica.fail("500")
    with pytest.raises(ProviderUnavailable) as err:
        provider.current("national")
    assert "500 Internal Server Error" in str(err.value) or "Something went wrong" in str(err.value)
    uk_replica.fail("empty")
    with pytest.raises(ProviderDataError) as derr:
        provider.forecast("13", now, now + timedelta(hours=4))
    assert derr.value.reason == "empty"
    uk_replica.fail("partial")
    with pytest.raises(ProviderDataError) as derr:
        provider.forecast("13", now, now + timedelta(hours=4))
    assert derr.value.reason == "bad_payload"


# -- documented and captured examples (carbon-apis.md B.1), served verbatim -------------------

INTENSITY = """{
  "data":[
    {
    "from": "2018-01-20T12:00Z",
    "to": "2018-01-20T12:30Z",
    "intensity": {
      "forecast": 266,
      "actual": 263,
      "index": "moderate"
    }
  }]
}"""

FW24H_HEAD = """{
    "data":
    [
        {"from":"2020-05-21T20:30Z","to":"2020-05-21T21:00Z","intensity":{"forecast":190,"actual":null,"index":"moderate"}},
        {"from":"2020-05-21T21:00Z","to":"2020-05-21T21:30Z","intensity":{"forecast":177,"actual":null,"index":"moderate"}},
        {"from":"2020-05-21T21:30Z","to":"2020-05-21T22:00Z","intensity":{"forecast":161,"actual":null,"index":"moderate"}},
        {"from":"2020-05-22T20:30Z","to":"2020-05-22T21:00Z","intensity":{"forecast":68,"actual":null,"index":"low"}}
    ]
}"""

POSTCODE_FW48H = (
    '{"data":{"regionid":11,"dnoregion":"WPD South West","shortname":"South West England",'
    '"postcode":"BS16","data":[{"from":"2025-10-22T23:30Z","to":"2025-10-23T00:00Z",'
    '"intensity":{"forecast":162,"index":"moderate"},"generationmix":[{"fuel":"biomass",'
    '"perc":0.4},{"fuel":"coal","perc":0},{"fuel":"imports","perc":44.2},{"fuel":"gas",'
    '"perc":32.9},{"fuel":"nuclear","perc":1},{"fuel":"other","perc":0},{"fuel":"hydro",'
    '"perc":0.1},{"fuel":"solar","perc":0},{"fuel":"wind","perc":21.3}]},'
    '{"from":"2025-10-23T00:00Z","to":"2025-10-23T00:30Z","intensity":{"forecast":164,'
    '"index":"moderate"},"generationmix":[{"fuel":"biomass","perc":0.2},{"fuel":"coal",'
    '"perc":0},{"fuel":"imports","perc":44.1},{"fuel":"gas","perc":33.5},{"fuel":"nuclear",'
    '"perc":0.9},{"fuel":"other","perc":0},{"fuel":"hydro","perc":0.1},{"fuel":"solar",'
    '"perc":0},{"fuel":"wind","perc":21.2}]}]}}'
)

REGIONAL_LIST = """{
    "data": [
        {
            "from": "2023-03-10T11:30Z",
            "to": "2023-03-10T12:00Z",
            "regions": [
                {
                    "regionid": 1,
                    "dnoregion": "Scottish Hydro Electric Power Distribution",
                    "shortname": "North Scotland",
                    "intensity": {"forecast": 22, "index": "very low"},
                    "generationmix": [
                        {"fuel": "biomass", "perc": 1.6}, {"fuel": "coal", "perc": 0},
                        {"fuel": "imports", "perc": 4}, {"fuel": "gas", "perc": 5.1},
                        {"fuel": "nuclear", "perc": 20.5}, {"fuel": "other", "perc": 0},
                        {"fuel": "hydro", "perc": 9.2}, {"fuel": "solar", "perc": 3.2},
                        {"fuel": "wind", "perc": 56.4}
                    ]
                }
            ]
        }
    ]
}"""

# The official /regional example is not valid JSON (a comma is missing); real answers are.
REGIONAL_DOC_INVALID = """{
  "data":[
  {
    "from": "2018-01-20T12:00Z",
    "to": "2018-01-20T12:30Z",
    "regions":[
    {
      "regionid": 3,
      "dnoregion": "Electricity North West",
      "shortname": "North West England",
      "intensity": {
        "forecast": 266,
        "index": "moderate"
      }
      "generationmix": [{"fuel": "gas", "perc": 43.6}]
    }]
  }]
}"""


def test_documented_national_example(uk_replica, clock):
    provider = make(uk_replica, clock)
    clock.set(datetime(2018, 1, 20, 12, 10, tzinfo=UTC))
    uk_replica.override("/intensity", INTENSITY)
    sample = provider.current("national")
    assert sample.intensity_g_per_kwh == 263  # the actual, once published
    assert sample.estimated is False
    assert sample.start == datetime(2018, 1, 20, 12, tzinfo=UTC)
    assert sample.end == datetime(2018, 1, 20, 12, 30, tzinfo=UTC)


def test_captured_forward_example(uk_replica, clock):
    provider = make(uk_replica, clock)
    t0 = datetime(2020, 5, 21, 21, tzinfo=UTC)
    clock.set(t0)
    uk_replica.override("/intensity/2020-05-21T21:00Z/fw48h", FW24H_HEAD)
    forecast = provider.forecast("national", t0 - HALF, t0 + timedelta(hours=24))
    assert [p.intensity_g_per_kwh for p in forecast.points] == [190, 177, 161, 68]
    assert forecast.points[0].start == t0 - HALF  # the half hour ending at `from`
    assert forecast.points[-1].end == datetime(2020, 5, 22, 21, tzinfo=UTC)


def test_captured_postcode_example_wraps_data_in_an_object(uk_replica, clock):
    provider = make(uk_replica, clock)
    t0 = datetime(2025, 10, 22, 23, 40, tzinfo=UTC)
    clock.set(t0)
    uk_replica.override("/regional/intensity/2025-10-22T23:40Z/fw48h/postcode/BS16", POSTCODE_FW48H)
    forecast = provider.forecast("BS16", t0, t0 + timedelta(hours=2))
    assert [p.intensity_g_per_kwh for p in forecast.points] == [162, 164]
    assert forecast.points[0].start == datetime(2025, 10, 22, 23, 30, tzinfo=UTC)


def test_captured_all_regions_list_and_the_invalid_doc_example(uk_replica, clock):
    provider = make(uk_replica, clock)
    clock.set(datetime(2023, 3, 10, 11, 40, tzinfo=UTC))
    uk_replica.override("/regional/regionid/1", REGIONAL_LIST)
    sample = provider.current("1")
    assert sample.intensity_g_per_kwh == 22
    assert sample.start == datetime(2023, 3, 10, 11, 30, tzinfo=UTC)
    uk_replica.override("/regional/regionid/3", REGIONAL_DOC_INVALID)
    with pytest.raises(ProviderDataError) as err:
        provider.current("3")
    assert err.value.reason == "bad_payload"
