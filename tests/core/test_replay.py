"""The replay provider reads every trace layout and serves it as a live signal."""

from datetime import UTC, datetime, timedelta
from statistics import mean

import pytest

from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import ReplayProviderConfig
from gridshift.scheduler.errors import ConfigError
from gridshift.scheduler.models import EmissionBasis, SignalKind
from gridshift.scheduler.signals.replay import ReplayProvider, bundled_trace_path, load_trace

# Row counts and min/mean/max from the traces' SOURCES.md (main column; direct for EM).
EXPECTED = {
    "caiso-north_2023-06_watttime-moer_5min_actual.csv": (8928, 35.38, 355.33, 462.66),
    "de_2020_entsoe-lwa_15min.csv": (37147, 100.66, 315.21, 593.31),
    "de_2022_electricitymaps_hourly.csv": (8760, 118.72, 408.45, 671.36),
    "fr_2020_entsoe-lwa_30min.csv": (18574, 19.49, 56.72, 116.39),
    "fr_2022_electricitymaps-modified_hourly.csv": (8760, 7.02, 61.26, 142.38),
    "gb_2020_entsoe-lwa_30min-15min.csv": (21980, 63.69, 217.61, 394.86),
    "gb_2023_electricitymaps_hourly.csv": (8760, 6.27, 135.63, 282.34),
    "no_2021_electricitymaps_hourly.csv": (8760, 0.91, 7.58, 76.62),
    "us-cal-ciso_2022_electricitymaps_hourly.csv": (8760, 53.11, 194.6, 342.12),
    # EIA-derived: 3 empty rows are skipped
    "us-ciso_2022_eia930-hpe_hourly.csv": (8757, 74.1, 256.19, 449.03),
    "us-miso_2022_eia930-hpe_hourly.csv": (8757, 277.44, 440.55, 555.81),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_layout_reads_to_the_published_figures(shared_carbon, name):
    rows, lo, avg, hi = EXPECTED[name]
    trace = load_trace(shared_carbon / name)
    assert len(trace) == rows
    assert min(trace.values) == pytest.approx(lo, abs=0.01)
    assert mean(trace.values) == pytest.approx(avg, abs=0.01)
    assert max(trace.values) == pytest.approx(hi, abs=0.01)
    assert trace.starts_s == sorted(trace.starts_s)
    assert all(e > s for s, e in zip(trace.starts_s, trace.ends_s, strict=True))


def test_labels_and_columns(shared_carbon):
    assert load_trace(shared_carbon / "caiso-north_2023-06_watttime-moer_5min_actual.csv").kind == (
        SignalKind.MARGINAL
    )
    gb = shared_carbon / "gb_2021_electricitymaps_hourly.csv"
    assert load_trace(gb).basis == EmissionBasis.DIRECT
    lca = load_trace(gb, column="Carbon intensity gCO₂eq/kWh (Life cycle)")
    assert lca.basis == EmissionBasis.LIFECYCLE
    assert lca.values[0] == pytest.approx(233.77)
    # the spreadsheet-resaved file has DD/MM/YYYY times
    fr = load_trace(shared_carbon / "fr_2022_electricitymaps-modified_hourly.csv")
    assert datetime.fromtimestamp(fr.starts_s[1], UTC) == datetime(2022, 1, 1, 1, tzinfo=UTC)
    with pytest.raises(ConfigError, match="forecast archive"):
        load_trace(shared_carbon / "caiso-north_2023-06_watttime-moer_5min_forecast.csv")
    with pytest.raises(ConfigError, match="no column"):
        load_trace(gb, column="nope")


def test_bundled_trace_is_the_eia_ciso_file():
    trace = load_trace(bundled_trace_path())
    assert len(trace) == 8757
    assert mean(trace.values) == pytest.approx(256.19, abs=0.01)


def test_replay_keeps_hour_of_day_and_weekday():
    clock = FakeClock(datetime(2026, 3, 4, 13, 20, tzinfo=UTC))  # a Wednesday
    provider = ReplayProvider("replay", ReplayProviderConfig(), clock)
    trace = load_trace(bundled_trace_path())
    sample = provider.current("")
    assert sample.start <= clock.now() < sample.end
    # the value is that of a Wednesday 13:00 UTC in the 2022 trace
    original = {
        datetime.fromtimestamp(s, UTC): v for s, v in zip(trace.starts_s, trace.values, strict=True)
    }
    matches = [t for t, v in original.items() if v == sample.intensity_g_per_kwh]
    assert any(t.hour == 13 and t.weekday() == 2 for t in matches)


def test_forecast_is_continuous_across_the_end_of_the_trace():
    trace = load_trace(bundled_trace_path())
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    provider = ReplayProvider("replay", ReplayProviderConfig(forecast_horizon_s=10 * 86400), clock)
    # run the clock to just before a wrap-around of the 52-week cycle
    cycle_s = 52 * 7 * 86400
    k = (clock.now().timestamp() - trace.starts_s[0]) // cycle_s
    wrap = datetime.fromtimestamp(trace.starts_s[0] + (k + 1) * cycle_s, UTC)
    clock.set(wrap - timedelta(days=2))
    fc = provider.forecast("", clock.now(), clock.now() + timedelta(days=5))
    assert fc.points[0].start <= clock.now()
    assert fc.points[-1].end >= clock.now() + timedelta(days=4, hours=23)
    for a, b in zip(fc.points, fc.points[1:], strict=False):
        assert b.start >= a.end
        assert (b.start - a.start) <= timedelta(hours=2)  # no hole at the wrap


def test_noise_changes_values_but_not_shape():
    clock = FakeClock(datetime(2026, 3, 4, tzinfo=UTC))
    perfect = ReplayProvider("r", ReplayProviderConfig(), clock)
    noisy = ReplayProvider("r", ReplayProviderConfig(noise_pct=10), clock)
    end = clock.now() + timedelta(hours=24)
    a = perfect.forecast("", clock.now(), end).points
    b = noisy.forecast("", clock.now(), end).points
    assert [p.start for p in a] == [p.start for p in b]
    assert [p.intensity_g_per_kwh for p in a] != [p.intensity_g_per_kwh for p in b]
