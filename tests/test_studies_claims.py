"""Claim files: one owner per grid point, stale claims taken over by exactly one runner, nothing of others deleted."""
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from experiments import claims

STEM = "seed1-0123456789"


def age(path, seconds: float) -> None:
    """Make a claim look `seconds` old, as if its owner stopped refreshing it."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_the_first_runner_claims_and_the_next_one_is_told_who_holds_it(tmp_path):
    claim = claims.acquire(tmp_path, STEM, 600, note={"point": "seed=1"})
    assert isinstance(claim, claims.Claim) and claim.path.name == f"Claim_{STEM}_g0.json"
    content = json.loads(claim.path.read_text())
    assert content["host"] == socket.gethostname() and content["pid"] == os.getpid() and content["point"] == "seed=1"
    holder = claims.acquire(tmp_path, STEM, 600)
    assert isinstance(holder, claims.Holder) and holder.pid == os.getpid()
    assert holder.describe().startswith(f"claimed by {socket.gethostname()} pid {os.getpid()}, refreshed ")


def test_a_stale_claim_is_taken_over_with_the_next_generation_and_its_owner_can_tell(tmp_path):
    old = claims.acquire(tmp_path, STEM, 600, note={"host": "another-host"})
    age(old.path, 30)
    assert isinstance(claims.acquire(tmp_path, STEM, 60), claims.Holder)  # 30 s old: not stale after 60 s
    new = claims.acquire(tmp_path, STEM, 10)
    assert isinstance(new, claims.Claim) and new.generation == 1 and old.path.exists()
    assert new.still_ours() and not old.still_ours()
    assert isinstance(claims.acquire(tmp_path, STEM, 10), claims.Holder)  # the new claim is fresh
    new.release()
    assert claims.generations(tmp_path, STEM) == []


def test_releasing_an_old_generation_leaves_the_new_owners_claim(tmp_path):
    old = claims.acquire(tmp_path, STEM, 600, note={"host": "another-host"})
    age(old.path, 30)
    new = claims.acquire(tmp_path, STEM, 10)
    old.release()
    assert new.path.exists() and new.still_ours() and not old.path.exists()


def test_a_claim_whose_runner_and_trainer_died_on_this_host_is_free_at_once(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claim = claims.acquire(tmp_path, STEM, 600, note={"pid": int(dead.stdout)})
    assert isinstance(claims.acquire(tmp_path, STEM, 600), claims.Claim)  # no stale time to wait for
    claim.record_trainer(os.getpid())  # but a trainer still alive (say, orphaned by a killed runner) holds it
    assert isinstance(claims.acquire(tmp_path, STEM, 600), claims.Holder)


def _wait_at(barrier) -> None:
    barrier.wait()  # each pool process starts here once all eight exist, so their first tasks race


def _take(directory) -> bool:
    return isinstance(claims.acquire(directory, STEM, 10, note={"host": "taker"}), claims.Claim)


@pytest.mark.parametrize("stale", [False, True])
def test_of_many_runners_racing_for_a_point_exactly_one_wins(tmp_path, stale):
    if stale:
        age(claims.acquire(tmp_path, STEM, 600, note={"host": "another-host"}).path, 60)
    # spawn, not fork: forking a process that runs TensorFlow's or JAX's threads (earlier tests) can deadlock
    context = multiprocessing.get_context("spawn")
    with context.Pool(8, initializer=_wait_at, initargs=(context.Barrier(8),)) as pool:
        won = pool.map(_take, [tmp_path] * 8, chunksize=1)
    assert sum(won) == 1
    assert [generation for generation, _ in claims.generations(tmp_path, STEM)] == ([0, 1] if stale else [0])


def test_refresh_reports_a_claim_that_is_gone(tmp_path):
    claim = claims.acquire(tmp_path, STEM, 600)
    age(claim.path, 100)
    assert claim.refresh() and time.time() - claim.path.stat().st_mtime < 5
    claim.release()
    assert not claim.refresh()


@pytest.mark.parametrize("content", [
    b"[" * 100_000 + b"]" * 100_000,  # deeper than the JSON parser recurses
    json.dumps({"host": socket.gethostname(), "pid": 10**30, "pidNamespace": claims._pid_namespace()}).encode(),
    json.dumps({"host": "elsewhere", "pid": 1, "trainerPid": -4}).encode(),
    b"[1, 2]", b'"a claim"', b"\xff\xfe\x00garbage\x80", json.dumps({"host": 5, "pid": 1}).encode()])
def test_a_damaged_claim_is_stale_and_taken_over_not_a_crash(tmp_path, content):
    damaged = tmp_path / claims.claim_name(STEM, 0)
    damaged.write_bytes(content)  # fresh: only its content says it is stale
    taken = claims.acquire(tmp_path, STEM, 600)
    assert isinstance(taken, claims.Claim) and taken.generation == 1 and taken.still_ours()


def test_a_claim_being_written_waits_for_its_runner(tmp_path):
    (tmp_path / claims.claim_name(STEM, 0)).write_bytes(b"")  # created, its content not written yet
    assert isinstance(claims.acquire(tmp_path, STEM, 600), claims.Holder)


def test_recording_the_trainer_replaces_the_claim_whole(tmp_path):
    claim = claims.acquire(tmp_path, STEM, 600)
    claim.record_trainer(os.getpid())
    content = json.loads(claim.path.read_text())
    assert content["trainerPid"] == os.getpid() and content["host"] == socket.gethostname()
    assert sorted(path.name for path in tmp_path.iterdir()) == [claim.path.name]  # no temporary left
