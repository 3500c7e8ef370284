"""detect.coverage's arithmetic: the kernel's running count of opened connections,
sampled before each poll's read, against what each poll saw."""

from __future__ import annotations

from tcpfast.detect.coverage import Counted, Coverage


def counting(totals: list[int | None], seen: list[int]) -> tuple[list[Counted | None], list[str]]:
    """Poll after poll: the kernel's total sampled before the read, then the poll's count."""
    said: list[str] = []
    samples = iter(totals)
    coverage = Coverage(lambda: next(samples), said.append, "try netlink")
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
