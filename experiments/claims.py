"""Claims on the models of a sweep shared by several workers: each model trained once, none lost with a worker.

Several processes (one per GPU, or machines sharing a filesystem) that run `experiments.sweep` with the same flags
split its models between them. ROOT/claims/NAME.K (K = 1, 2, ...) are the successive claims on the model NAME; the
newest, the highest K, is the one that counts. A worker claims a model by creating the next file with
`O_CREAT | O_EXCL`, which exactly one worker can do (on a local filesystem or NFS), and while it works on the model
it touches that file every `heartbeat` seconds. The newest claim is free

- once its worker released it (the model finished, or its worker was interrupted: the run directory tells which),
- when its heartbeat is older than `expiry` seconds (a dead or unreachable worker, on any machine), or at once
  when its worker was a process of this machine that no longer runs.

A claim whose worker gave the model up (training diverged) stays, with its message: no worker retries it until the
file is removed. A worker taking over a free claim resumes the model from its last checkpoint (`tfhyper.training.train`). A worker
that finds its own claim superseded (it stalled past the expiry and another took the model over) stops working
on that model. Clocks of machines sharing ROOT must agree to well within `expiry`.
"""
import json
import os
import pathlib
import socket
import threading
import time

CLAIMS_FOLDER = "claims"
EXPIRY = 300.0  # seconds without a heartbeat after which a claim is taken over
RELEASED, FAILED = "released", "failed"  # how a worker ended its claim: free to take, or given up


class ClaimLost(RuntimeError):
    """Another worker took over the model of this claim."""


def _identity():
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _process_gone(owner):
    """Whether `owner` was a process of this machine that has ended (a reused pid counts as running)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


class Claims:
    """The claims of one sweep's models under `root`."""

    def __init__(self, root, expiry=EXPIRY, heartbeat=None):
        if expiry <= 0:
            raise ValueError(f"the claim expiry must be positive, got {expiry}")
        self.folder = pathlib.Path(root) / CLAIMS_FOLDER
        self.expiry = float(expiry)
        self.heartbeat = float(heartbeat) if heartbeat else self.expiry / 10

    def _files(self, name):
        numbered = []
        for path in self.folder.glob(f"{name}.*"):
            suffix = path.name[len(name) + 1:]
            if suffix.isdigit():
                numbered.append((int(suffix), path))
        return sorted(numbered)

    def newest(self, name):
        """(K, its record or {} while its creator is writing it, its age in seconds), or None if never claimed."""
        files = self._files(name)
        if not files:
            return None
        number, path = files[-1]
        try:
            age = time.time() - path.stat().st_mtime
            record = json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            return self.newest(name)  # removed under us: look again
        except ValueError:
            record = {}
        return number, record, age

    def failure(self, name):
        """The message of a worker that gave the model up (its training diverged), else None."""
        newest = self.newest(name)
        if newest and newest[1].get("state") == FAILED:
            return newest[1].get("message", "failed")
        return None

    def _free(self, record, age):
        if record.get("state"):
            return True
        return age > self.expiry or _process_gone(record)

    def take(self, name):
        """A `Claim` on `name` held by this process, or None while another live worker holds it or it failed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        newest = self.newest(name)
        if newest is not None:
            number, record, age = newest
            if record.get("state") == FAILED or not self._free(record, age):
                return None
        number = newest[0] + 1 if newest else 1
        path = self.folder / f"{name}.{number}"
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None  # another worker claimed it first
        with os.fdopen(descriptor, "w") as stream:
            json.dump({**_identity(), "taken_over": newest is not None}, stream)
        return Claim(self, name, number, path)


class Claim:
    """One worker's claim on one model, kept alive by a heartbeat thread until `end`; a context manager."""

    def __init__(self, claims, name, number, path):
        self.claims, self.name, self.number, self.path = claims, name, number, path
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim {name}", daemon=True)
        self._thread.start()

    def _beat(self):
        while not self._stop.wait(self.claims.heartbeat):
            newest = self.claims.newest(self.name)
            if newest is None or newest[0] != self.number:
                self.lost = True
                return
            try:
                os.utime(self.path)
            except OSError:
                pass  # a filesystem hiccup: the next beat tries again, the expiry is many beats long

    def check(self):
        """Raises ClaimLost if another worker has taken the model over."""
        if self.lost:
            raise ClaimLost(f"{self.name} was taken over by another worker")

    def end(self, state=RELEASED, message=""):
        """Stops the heartbeat and records how the work ended: RELEASED (free to take; finished or interrupted, the
        run directory tells which) or FAILED (with `message`; no worker takes it again)."""
        self._stop.set()
        self._thread.join()
        if self.lost:
            return
        record = {**_identity(), "state": state, "message": message}
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, self.path)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if not self._stop.is_set():
            self.end(RELEASED)
        return False
