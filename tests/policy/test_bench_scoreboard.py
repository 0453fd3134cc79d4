"""The benchmark's closing scoreboard counts runs against each baseline as documented."""

import math

from tests.bench.bench_policies import scoreboard


def _row(region, fm, gs, baselines, tie=0.05, capture=0.9, wait=(3.0, 3.0), delay=(3.0, 3.0)):
    best = max(baselines, key=baselines.get)
    return {
        "region": region,
        "forecast": fm,
        "saving_pct": gs,
        "baseline_pct": baselines,
        "tie_pct": tie,
        "capture": capture,
        "wait_h": wait[0],
        "best_wait_h": wait[1],
        "delay_h": delay[0],
        "best_delay_h": delay[1],
        "never_worse": gs >= 0,
        "beats_all": gs >= baselines[best] - tie,
    }


def test_scoreboard_counts_wins_ties_and_losses_per_baseline():
    rows = [
        _row("de", "realistic", 5.0, {"threshold": 4.0, "wait-awhile": 5.02}),
        _row(
            "gb",
            "realistic",
            1.0,
            {"threshold": 3.0, "wait-awhile": 0.5},
            wait=(4.0, 2.0),
            delay=(5.0, 9.0),
        ),
        _row("fr", "realistic", -0.5, {"threshold": 0.1}, capture=math.nan),
        _row("us-2022", "realistic", 2.0, {"threshold": 1.0}),  # a relocation group
    ]
    text = scoreboard(rows).splitlines()
    assert text[0].startswith("single region, realistic: 3 runs;")
    assert "never worse than run-now in 2; no baseline better in 1;" in text[0]
    assert (
        "wait for the first start <= the best baseline's in 2, delay of the finish in 3" in text[0]
    )
    assert "vs threshold" in text[1]
    assert "saves more in  1, ties  0, saves less in  2 of  3" in text[1]
    assert text[1].endswith("mean difference -0.53 points")  # (1.0 - 2.0 - 0.6) / 3
    # 5.0 vs 5.02 is a tie within 0.05 points; 1.0 vs 0.5 a win
    assert "vs wait-awhile" in text[2]
    assert "saves more in  1, ties  1, saves less in  0 of  2" in text[2]
    assert text[2].endswith("mean difference +0.24 points")  # (-0.02 + 0.5) / 2
    # each baseline held to the same checks against the other baselines: threshold is not
    # beaten in gb (3.0 vs 0.5) and fr (alone there), wait-awhile in de (5.02 vs 4.0)
    assert text[3].startswith("    each baseline alone:")
    assert text[4].split() == ["threshold", "2", "/", "3", "of", "3"]
    assert text[5].split() == ["wait-awhile", "1", "/", "2", "of", "2"]
    assert text[6].startswith("relocation, realistic: 1 runs;")
