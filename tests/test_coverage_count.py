"""detect.coverage's arithmetic: the kernel's running count of opened connections,
sampled before each poll's read, against what each poll saw."""

from __future__ import annotations

from tcpfast.detect.coverage import SETTLE_SECONDS, Counted, Coverage


def counting(totals: list[int | None], seen: list[int], interval: float = 10.0
             ) -> tuple[list[Counted | None], list[str]]:
    """Poll after poll, ``interval`` seconds apart: the kernel's total sampled before the
    read, then the poll's count."""
    said: list[str] = []
    samples = iter(totals)
    clock = iter(range(len(seen)))
    coverage = Coverage(lambda: next(samples), said.append, "try netlink",
                        clock=lambda: next(clock) * interval)
    counts = []
    for established in seen:
        coverage.sample()
        counts.append(coverage.count(established))
    return counts, said


def test_the_first_poll_is_the_baseline_and_a_miss_is_said_once_per_run():
    """A shortfall the next poll does not pay back is missed, counted at that poll."""
    counts, said = counting([100, 110, 130, 150, 170, 180], [50, 10, 15, 15, 20, 10])
    assert counts == [None, Counted(10, 0), Counted(20, 0), Counted(20, 5), Counted(20, 5),
                      Counted(10, 0)]
    assert len(said) == 1 and said[0].startswith(
        "5 of the 20 connections the kernel opened between two polls were not seen (25.0 %)")
    assert "try netlink" in said[0]


def test_a_shortfall_the_next_poll_makes_up_is_no_miss():
    """A handshake in flight at the sample, a destroy event sent after the drain: counted
    by the kernel at one poll, seen at the next."""
    counts, said = counting([0, 10, 20, 30], [0, 8, 12, 10])
    assert counts == [None, Counted(10, 0), Counted(10, 0), Counted(10, 0)]
    assert said == []


def test_destroy_events_heard_polls_late_are_no_miss():
    """The kernel sends destroy events from a work queue: on a busy host they may come
    several short polls after the kernel counted their connections."""
    counts, said = counting([0, 2, 2, 2, 2, 2], [0, 0, 0, 0, 2, 0], interval=0.3)
    assert [count.missed for count in counts[1:]] == [0, 0, 0, 0, 0]
    assert said == []


def test_what_short_polls_never_pay_back_is_missed_once_the_settling_time_is_up():
    polls = 8
    counts, said = counting([0] + [2] * polls, [0] * polls, interval=0.5)
    missed = [count.missed for count in counts[1:]]
    settled_at = 1 + int(SETTLE_SECONDS / 0.5)     # the shortfall is the first count's
    assert missed == [2 if at == settled_at else 0 for at in range(1, polls)]
    assert len(said) == 1 and said[0].startswith("2 of the 2 connections")


def test_what_a_poll_saw_ahead_of_the_kernels_count_is_carried_to_the_next():
    """Sockets opened between the sample and the read (or heard destroyed in the drain
    after it) are seen now and counted by the kernel at the next sample: no miss."""
    counts, said = counting([0, 8, 10, 20], [0, 10, 0, 10])
    assert counts == [None, Counted(8, 0), Counted(2, 0), Counted(10, 0)]
    assert said == []


def test_the_carry_is_at_most_one_polls_worth():
    """An old excess never hides a later miss: what is carried is at most what the last
    poll saw."""
    counts, _ = counting([0, 0, 0, 5, 10], [0, 30, 2, 0, 0])
    assert [count.missed for count in counts[1:]] == [0, 0, 0, 3]


def test_counters_that_cannot_be_read_are_said_once_and_not_counted():
    said: list[str] = []

    def broken() -> int:
        raise OSError("no snmp")
    coverage = Coverage(broken, said.append, "")
    for _ in range(3):
        coverage.sample()
        assert coverage.count(5) is None
    assert said == ["cannot count the connections missed between polls: no snmp"]


def test_a_source_without_counters_counts_nothing():
    counts, said = counting([None, None], [3, 3])
    assert counts == [None, None] and said == []
