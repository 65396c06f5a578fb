"""Fair scheduling across owners and the run-time estimate behind Retry-After (no Ray)."""

import pytest

from app.serve.scheduling import FairQueue, RunTimes


def drain(q: FairQueue) -> list[tuple[str, str]]:
    out = []
    while (item := q.pop()) is not None:
        out.append(item)
    return out


def test_fifo_within_one_owner():
    q = FairQueue()
    for i in range(3):
        q.push("alice", f"a{i}")
    assert drain(q) == [("alice", "a0"), ("alice", "a1"), ("alice", "a2")]
    assert q.pop() is None and len(q) == 0


def test_owners_take_turns_whatever_their_backlog():
    q = FairQueue()
    for i in range(5):
        q.push("alice", f"a{i}")
    q.push("bob", "b0")
    q.push("bob", "b1")
    q.push("carol", "c0")
    order = [job for _, job in drain(q)]
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]


def test_a_flooding_owner_delays_a_newcomer_by_at_most_the_running_job():
    """One worker: alice queued 40 jobs and one of them runs; bob's job is the very next one."""
    q = FairQueue()
    for i in range(40):
        q.push("alice", f"a{i}")
    assert q.pop() == ("alice", "a0")  # running
    q.push("bob", "b0")
    assert q.pop() == ("bob", "b0")
    assert q.pop() == ("alice", "a1")
    # bob comes back later: served before alice's next again
    q.push("bob", "b1")
    assert q.pop() == ("bob", "b1")


def test_retry_goes_to_the_front_of_its_owners_line():
    q = FairQueue()
    q.push("alice", "a1")
    q.push("alice", "a2")
    q.push("alice", "a0", front=True)
    assert [job for _, job in drain(q)] == ["a0", "a1", "a2"]


def test_counts_membership_and_remove():
    q = FairQueue()
    q.push("alice", "a0")
    q.push("alice", "a1")
    q.push("bob", "b0")
    assert (len(q), q.count("alice"), q.count("bob"), q.count("nobody")) == (3, 2, 1, 0)
    assert "a1" in q and "zz" not in q
    assert q.owners() == {"alice": 2, "bob": 1}
    assert q.remove("a0") and not q.remove("a0")
    assert q.remove("b0") and q.owners() == {"alice": 1}


@pytest.mark.parametrize("times, expected", [([], 5.0), ([10.0], 10.0), ([10.0, 20.0], 12.0)])
def test_run_times_mean(times, expected):
    r = RunTimes(default=5.0, weight=0.2)
    for t in times:
        r.add(t)
    assert r.estimate() == pytest.approx(expected)
