"""`fair_share`, the Celery dispatcher's split of free chunk slots between jobs: one chunk per
key in turn (keys by their oldest job, each key's jobs oldest first), each job within its room,
the capacity in all. Pure: jobs are bare `JobView`s."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter

from batchvision.jobs.store import JobView
from batchvision.work.dispatch import fair_share
from job_views import job_view

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _job(job_id: str, owner: int | None, minute: int) -> JobView:
    """A processing job of key `owner` created `minute` minutes after T0."""
    created_at = T0 + dt.timedelta(minutes=minute)
    return job_view(id=job_id, owner_key_id=owner, total_lines=1000, created_at=created_at)


def _per_key(jobs: list[JobView], picks: dict[str, int]) -> Counter[int | None]:
    owners = {job.id: job.owner_key_id for job in jobs}
    counts: Counter[int | None] = Counter()
    for job_id, count in picks.items():
        counts[owners[job_id]] += count
    return counts


def test_each_key_gets_one_chunk_in_turn() -> None:
    jobs = [_job("a", 1, 0), _job("b", 2, 1), _job("c", 3, 2)]
    room = {"a": 5, "b": 5, "c": 5}
    assert fair_share(jobs, room, 6) == {"a": 2, "b": 2, "c": 2}
    assert fair_share(jobs, room, 4) == {"a": 2, "b": 1, "c": 1}  # the round left unfinished
    assert fair_share(jobs, room, 1) == {"a": 1}


def test_a_key_with_many_jobs_gets_no_more_per_round_than_a_key_with_one() -> None:
    many = [_job(f"m{i}", 1, i) for i in range(6)]
    jobs = [*many, _job("one", 2, 10)]
    room = {job.id: 2 for job in many} | {"one": 5}
    picks = fair_share(jobs, room, 6)
    assert _per_key(jobs, picks) == {1: 3, 2: 3}
    assert picks == {"m0": 2, "m1": 1, "one": 3}  # the key's oldest job first, then the next


def test_a_key_keeps_its_turns_once_the_other_keys_are_out_of_room() -> None:
    jobs = [_job("big", 1, 0), _job("small", 2, 1)]
    assert fair_share(jobs, {"big": 10, "small": 2}, 8) == {"big": 6, "small": 2}


def test_no_job_gets_more_than_its_room() -> None:
    jobs = [_job("a", 1, 0), _job("b", 2, 1), _job("c", 3, 2)]
    assert fair_share(jobs, {"a": 1, "b": 3, "c": 0}, 100) == {"a": 1, "b": 3}


def test_jobs_without_room_take_no_turn() -> None:
    jobs = [_job("full", 1, 0), _job("over", 2, 1), _job("absent", 3, 2), _job("free", 4, 3)]
    room = {"full": 0, "over": -2, "free": 5}  # in flight beyond its share, after a setting change
    assert fair_share(jobs, room, 2) == {"free": 2}


def test_the_total_never_exceeds_the_capacity() -> None:
    jobs = [_job(f"j{i}", i, i) for i in range(5)]
    room = {job.id: 10 for job in jobs}
    for capacity in range(0, 60, 7):
        picks = fair_share(jobs, room, capacity)
        assert sum(picks.values()) == min(capacity, 50)


def test_no_capacity_sends_nothing() -> None:
    jobs = [_job("a", 1, 0), _job("b", 2, 1)]
    assert fair_share(jobs, {"a": 3, "b": 3}, 0) == {}
    assert fair_share(jobs, {"a": 3, "b": 3}, -4) == {}  # more in flight than allowed
    assert fair_share([], {}, 10) == {}


def test_keys_take_their_turns_in_the_order_of_their_oldest_job() -> None:
    # Listed newest first, and key 1 also has the newest job: its oldest one sets its place.
    jobs = [_job("k1-new", 1, 9), _job("k3", 3, 2), _job("k2", 2, 1), _job("k1-old", 1, 0)]
    room = {job.id: 5 for job in jobs}
    assert fair_share(jobs, room, 1) == {"k1-old": 1}
    assert fair_share(jobs, room, 2) == {"k1-old": 1, "k2": 1}
    assert fair_share(jobs, room, 3) == {"k1-old": 1, "k2": 1, "k3": 1}
    assert fair_share(jobs, room, 4) == {"k1-old": 2, "k2": 1, "k3": 1}


def test_jobs_created_at_the_same_moment_go_by_id() -> None:
    jobs = [_job("b", 2, 0), _job("a", 1, 0)]
    assert fair_share(jobs, {"a": 1, "b": 1}, 1) == {"a": 1}


def test_anonymous_jobs_share_one_key() -> None:
    jobs = [_job("anon1", None, 0), _job("anon2", None, 1), _job("keyed", 7, 2)]
    room = {job.id: 5 for job in jobs}
    picks = fair_share(jobs, room, 4)
    assert _per_key(jobs, picks) == {None: 2, 7: 2}
    assert picks == {"anon1": 2, "keyed": 2}


def test_random_splits_are_fair_bounded_and_oldest_first() -> None:
    rng = random.Random(16)
    for _ in range(300):
        jobs = [_job(f"j{i}", rng.choice([None, 1, 2, 3]), rng.randrange(6)) for i in range(8)]
        room = {job.id: rng.randrange(-1, 4) for job in jobs}
        capacity = rng.randrange(-1, 20)
        picks = fair_share(jobs, room, capacity)
        _check(jobs, room, capacity, picks)


def _check(jobs: list[JobView], room: dict[str, int], capacity: int, picks: dict[str, int]) -> None:
    free = {job.id: max(room[job.id], 0) for job in jobs}
    assert all(0 < count <= free[job_id] for job_id, count in picks.items())
    assert sum(picks.values()) == max(0, min(capacity, sum(free.values())))
    by_age = sorted(jobs, key=lambda j: (j.created_at, j.id))
    turn = {}  # a key's place: that of its oldest job with room
    for job in by_age:
        if free[job.id]:
            turn.setdefault(job.owner_key_id, len(turn))
    got, wanted = _per_key(jobs, picks), _per_key(jobs, free)
    for key in turn:
        for other in turn:
            if got[other] < wanted[other]:  # `other` could have taken more
                assert got[key] <= got[other] + 1, (key, other, picks)
                if got[key] == got[other] + 1:
                    assert turn[key] < turn[other], (key, other, picks)
    for job in by_age:  # within a key, a job gets chunks only once its older ones are full
        older = [j for j in by_age[: by_age.index(job)] if j.owner_key_id == job.owner_key_id]
        if picks.get(job.id):
            assert all(picks.get(j.id, 0) == free[j.id] for j in older), (job.id, picks)
