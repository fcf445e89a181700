"""experiments.claims: one worker per model, a dead worker's claim expires, a superseded worker learns it."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from experiments.claims import FAILED, ClaimLost, Claims


def _write_claim(claims, name, number, record, age=0.0):
    """A claim file as another worker would have left it, its heartbeat `age` seconds old."""
    claims.folder.mkdir(parents=True, exist_ok=True)
    path = claims.folder / f"{name}.{number}"
    path.write_text(json.dumps(record))
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


ELSEWHERE = {"host": "another-machine.invalid", "pid": 1}


def test_of_many_workers_racing_for_a_model_exactly_one_wins(tmp_path):
    """The worst interleaving: all 16 workers have seen the model unclaimed before any of them claims it."""
    claims = Claims(tmp_path, expiry=60)
    looked, won = threading.Barrier(16), []
    first_look = claims.newest

    def newest_then_wait(name):
        seen = first_look(name)
        looked.wait(timeout=60)
        return seen

    def racer():
        racing = Claims(tmp_path, expiry=60)
        racing.newest = newest_then_wait
        claim = racing.take("hyperprior-mse-q1")
        if claim is not None:
            won.append(claim)

    threads = [threading.Thread(target=racer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(won) == 1 and won[0].number == 1
    assert claims.take("hyperprior-mse-q1") is None  # held by a live process of this machine
    won[0].end()
    again = claims.take("hyperprior-mse-q1")  # released: free again, as the next claim
    assert again is not None and again.number == 2
    again.end()


def test_a_claim_of_another_machine_is_held_until_its_heartbeat_is_older_than_the_expiry(tmp_path):
    claims = Claims(tmp_path, expiry=60)
    path = _write_claim(claims, "m", 3, ELSEWHERE, age=59)
    assert claims.take("m") is None
    os.utime(path, (time.time() - 61, time.time() - 61))
    claim = claims.take("m")
    assert claim is not None and claim.number == 4
    record = json.loads((claims.folder / "m.4").read_text())
    assert record["taken_over"] and record["pid"] == os.getpid()
    claim.end()


def test_a_claim_of_an_ended_process_of_this_machine_is_free_at_once(tmp_path):
    claims = Claims(tmp_path, expiry=3600)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    _write_claim(claims, "m", 1, {"host": socket.gethostname(), "pid": int(ended.stdout)})
    claim = claims.take("m")
    assert claim is not None and claim.number == 2
    claim.end()
    # A running process of this machine (this one) keeps its claim however young or old the expiry.
    _write_claim(claims, "n", 1, {"host": socket.gethostname(), "pid": os.getpid()})
    assert claims.take("n") is None


def test_the_heartbeat_keeps_a_claim_alive_and_a_superseded_worker_finds_out(tmp_path):
    claims = Claims(tmp_path, expiry=0.5, heartbeat=0.05)
    claim = claims.take("m")
    stale = time.time() - 100
    os.utime(claim.path, (stale, stale))
    deadline = time.monotonic() + 30
    while claim.path.stat().st_mtime < time.time() - 10:  # the heartbeat touches it again
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.01)
    assert Claims(tmp_path, expiry=0.5).take("m") is None
    claim.check()

    # As if this worker had stalled past the expiry and another took the model over as claim 2.
    newer = _write_claim(claims, "m", 2, ELSEWHERE)
    while not claim.lost:
        assert time.monotonic() < deadline, "the superseded claim did not notice"
        time.sleep(0.01)
    with pytest.raises(ClaimLost, match="m was taken over by another worker"):
        claim.check()
    claim.end()  # ending a lost claim leaves the newer one alone
    assert json.loads(newer.read_text()) == ELSEWHERE and json.loads(claim.path.read_text())["pid"] == os.getpid()


def test_a_failed_model_stays_failed_with_its_message(tmp_path):
    claims = Claims(tmp_path, expiry=0.1)
    claim = claims.take("m")
    claim.end(FAILED, "loss became NaN")
    time.sleep(0.2)  # older than the expiry: still not taken again
    assert claims.take("m") is None and claims.failure("m") == "loss became NaN"
    assert claims.failure("other") is None


def test_an_interrupted_worker_releases_its_claim(tmp_path):
    claims = Claims(tmp_path, expiry=3600)
    with pytest.raises(KeyboardInterrupt):
        with claims.take("m"):
            raise KeyboardInterrupt
    claim = claims.take("m")
    assert claim is not None and claim.number == 2
    claim.end()


def test_claims_of_similar_names_are_apart(tmp_path):
    claims = Claims(tmp_path, expiry=3600)
    base = claims.take("hyperprior-mse-q1-base")
    model = claims.take("hyperprior-mse-q1")
    assert base is not None and model is not None and model.number == 1
    base.end(), model.end()
    with pytest.raises(ValueError, match="expiry must be positive"):
        Claims(tmp_path, expiry=0)
