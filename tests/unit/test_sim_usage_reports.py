"""When a simulated node reports its usage: at once on a change, rarely when idle, never letting it expire."""

from __future__ import annotations

from skiff.node.metrics import PodUsage, _Reported, _steady_window

EXPIRY_WINDOWS = 3  # skiff.apiserver.metrics_store: a report is served for 3 windows after receipt


def _run(usage_at: list[list[PodUsage]], interval: float = 10.0, drift: float = 0.7) -> list[tuple[float, float]]:
    """Check once per round (rounds a little longer than the interval, as on a loaded box): (time, window) sent."""
    sent: list[tuple[float, float]] = []
    last: _Reported | None = None
    now = 0.0
    for usages in usage_at:
        window = _steady_window(last, usages, now, interval)
        if window is not None:
            since = last.since if last is not None and last.usage == usages else now
            last = _Reported(usages, since, now, window)
            sent.append((now, window))
        now += interval + drift
    return sent


def test_an_idle_node_reports_rarely_and_its_metrics_never_expire() -> None:
    rounds = 90  # ~16 minutes
    sent = _run([[]] * rounds)
    assert sent[0] == (0.0, 10.0)
    assert len(sent) <= rounds / 7  # was one per round
    assert max(w for _, w in sent) == 60.0
    end = rounds * 10.7
    for (at, window), nxt in zip(sent, [*(t for t, _ in sent[1:]), end], strict=True):
        assert nxt < at + EXPIRY_WINDOWS * window  # the next report arrives while this one is still served


def test_a_change_is_reported_at_once_over_one_interval() -> None:
    busy = [PodUsage("ns", "p", {"app": {"cpu": "400m", "memory": "20Mi"}})]
    busier = [PodUsage("ns", "p", {"app": {"cpu": "900m", "memory": "20Mi"}})]
    sent = _run([[]] * 30 + [busy] + [busy] * 3 + [busier] + [[]])
    windows = {round(t / 10.7): w for t, w in sent}  # round -> window sent
    assert windows[30] == windows[34] == windows[35] == 10.0  # each change, the next round
    assert 31 not in windows and 33 not in windows
