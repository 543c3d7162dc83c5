"""Scale-out: chunks handed to ``mailmigrate worker`` processes through Dramatiq over Redis.

Dramatiq does the queueing: a chunk's message is acknowledged only when the
chunk is done, a worker whose heartbeat stops has its messages requeued to
the others, and a chunk that cannot start yet (its account or a host is busy)
is retried later from Dramatiq's delay queue. Delivery is therefore
at-least-once; exactly-once comes from the checkpoints.

Redis is also the one place every worker reaches, so it holds what a chunk
needs to continue an account anywhere (docs/DESIGN.md, "Fleet"):

* ``current:KEY`` - the token of the chunk the dispatcher wants run next for an
  account. A worker runs a message only while its token is current, and clears
  it together with publishing the report, so a redelivered or duplicated
  message does nothing;
* ``results`` - the reports, by token, until the dispatcher has put them into
  the ledger (the ledger itself stays a file on the dispatcher's machine);
* ``state:KEY`` - the account's checkpoint file (copy and restore keep it in
  a SQLite state file), compressed, with a version: a worker takes the latest
  before a chunk and publishes its own after, only if nobody published in
  between. A chunk killed before it publishes leaves the older version: the
  next chunk finds the killed chunk's messages on the destination by content
  and claims them instead of appending them again;
* leases (redis-py :class:`redis.lock.Lock`, owned by a token, renewed while the
  chunk runs, expiring soon after a worker dies): one per account, so an
  account never runs on two workers at once, and ``cap`` slots per host, so the
  per-host caps hold across every worker. A worker that cannot renew its lease
  stops its chunk (kill -9 is safe) before anyone else can take the account.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from migrate.config.passwords import kind_of
from migrate.engine import progress
from migrate.errors import ConnectError, UsageError
from migrate.fleet.accounts import AccountSpec
from migrate.fleet.chunk import ChunkLimits, run_chunk, worker_name
from migrate.fleet.hosts import Session, sessions
from migrate.fleet.ledger import AccountRow, ChunkReport, Ledger
from migrate.fleet.passes import pass_for
from migrate.fleet.probe import probe

QUEUE = "mailmigrate"
ACTOR = "mailmigrate_chunk"
NAMESPACE = "mailmigrate"
#: Chance (per million broker commands) of the requeue check for dead workers: high,
#: because a fleet's broker sees few commands and a dead worker's chunk should not wait.
MAINTENANCE_CHANCE = 200_000
#: Lease lifetime: renewed every third of it; a dead worker's leases end this long after.
LEASE_SECONDS = 15.0
_POLL = 0.2
log = logging.getLogger("mailmigrate.worker")


def _imports() -> tuple[Any, Any]:
    try:
        import dramatiq
        import redis
    except ImportError:
        raise UsageError("scale-out needs the optional extra: pip install 'mailmigrate[distributed]'"
                         ) from None
    return dramatiq, redis


def redis_client(url: str) -> Any:
    """A Redis client for ``url``; a password comes from MAILMIGRATE_BROKER_PASSWORD, never
    the URL (argv shows it to every local user)."""
    _, redis = _imports()
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise UsageError(f"bad --broker {url!r}: expected redis://host:port/db")
    if parts.password:
        raise UsageError("put the broker's password in MAILMIGRATE_BROKER_PASSWORD, not in the "
                         "--broker URL (the process list shows it)")
    client = redis.Redis.from_url(url, password=os.environ.get("MAILMIGRATE_BROKER_PASSWORD"),
                                  socket_timeout=30, socket_connect_timeout=10,
                                  health_check_interval=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConnectError(f"cannot reach the broker at {parts.hostname}:{parts.port or 6379} "
                           f"({exc}); start Redis or fix --broker") from None
    return client


def make_broker(client: Any, heartbeat_timeout: float) -> Any:
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import Retries, TimeLimit

    broker: Any = RedisBroker(  # type: ignore[no-untyped-call]
        client=client, namespace=f"{NAMESPACE}-dramatiq",
        heartbeat_timeout=int(heartbeat_timeout * 1000), maintenance_chance=MAINTENANCE_CHANCE,
        middleware=[TimeLimit(), Retries(min_backoff=500, max_backoff=5000)])
    broker.declare_queue(QUEUE)
    return broker


def _key(batch: str, name: str) -> str:
    return f"{NAMESPACE}:{batch}:{name}"


# -- the dispatcher's side ---------------------------------------------------------------
class BrokerExecutor:
    """An :class:`migrate.fleet.passes.Executor` whose chunks run on the workers."""

    def __init__(self, ledger: Ledger, url: str, *, per_host: Mapping[str, int],
                 limits: ChunkLimits, heartbeat_timeout: float = 60.0) -> None:
        dramatiq, _ = _imports()
        self.ledger = ledger
        self.client = redis_client(url)
        self.broker = make_broker(self.client, heartbeat_timeout)
        self.per_host = dict(per_host)
        self.limits = limits
        self.batch = ledger.batch_id
        deadline = limits.hard_deadline or 24 * 3600.0
        #: A chunk outstanding this long is sent again (a message Redis lost).
        self.lost_after = deadline + 2 * heartbeat_timeout + 2 * LEASE_SECONDS + 60
        #: ... or this long, when nothing is queued and no worker holds its account.
        self.stuck_after = 2 * heartbeat_timeout + LEASE_SECONDS + 10
        self._message = dramatiq.Message
        self._flight: dict[int, dict[str, Any]] = {}
        self._instant: list[tuple[int, ChunkReport]] = []

    def adopt(self, rows: Sequence[AccountRow], mode: str) -> None:
        """Chunks a killed dispatcher handed out are waited for, not handed out again."""
        for row in rows:
            if row.task and row.task.get("payload", {}).get("pass") == pass_for(row, mode):
                self._flight[row.id] = row.task

    def start(self, row: AccountRow, pass_: str) -> bool:
        secret = next((c for c in (row.spec.source_password, row.spec.dest_password)
                       if c is not None and kind_of(c).method == "plaintext"), None)
        if secret is not None:
            self._instant.append((row.id, ChunkReport(
                ok=False, error="a clear password cannot be handed to workers; give it as "
                "env:, file:, command: or keyring: on the workers (see docs/fleet.md)")))
            return True
        token = uuid.uuid4().hex
        payload = {"batch": self.batch, "key": row.key, "token": token, "pass": pass_,
                   "account": _spec_dict(row.spec), "limits": self.limits.as_dict(),
                   "insecure": self.ledger.insecure,
                   "hosts": [[s.host, s.cap] for s in sessions(row.spec, self.per_host,
                                                               self.ledger.insecure)]}
        task = {"token": token, "payload": payload, "sent": 0.0}
        self.ledger.set_task(row.id, task)  # first durable, then handed out
        self._flight[row.id] = task
        _, redis = _imports()
        try:
            self._send(task)
        except redis.RedisError as exc:  # a broker restart: :meth:`wait` sends it again
            log.warning("broker unreachable (%s); the chunk is sent when it is back", exc)
        return True

    def _send(self, task: dict[str, Any]) -> None:
        payload = task["payload"]
        self.client.set(_key(self.batch, f"current:{payload['key']}"), task["token"])
        self.broker.enqueue(self._message(queue_name=QUEUE, actor_name=ACTOR, args=(payload,),
                                          kwargs={}, options={}))
        task["sent"] = time.time()

    def wait(self, timeout: float) -> list[tuple[int, ChunkReport]]:
        deadline = time.monotonic() + timeout
        while True:
            out, self._instant = self._instant, []
            out += self._collect()
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))

    def _collect(self) -> list[tuple[int, ChunkReport]]:
        _, redis = _imports()
        out: list[tuple[int, ChunkReport]] = []
        results = _key(self.batch, "results")
        queued: int | None = None
        for account_id, task in list(self._flight.items()):
            try:
                report = self._report(results, task)
                if report is not None:
                    out.append((account_id, report))
                    del self._flight[account_id]
                    continue
                key = task["payload"]["key"]
                if self.client.get(_key(self.batch, f"current:{key}")) is None:
                    if self._report(results, task) is None:  # not published just now
                        self._send(task)  # Redis lost it (a restart without persistence)
                    continue
                age = time.time() - task["sent"]
                if age > self.lost_after:
                    self._send(task)
                elif age > self.stuck_after and not self.client.exists(
                        _key(self.batch, f"lease:{key}")):
                    if queued is None:
                        queued = self._queued()
                    if queued == 0:
                        # Nothing waits in the queue and no worker holds the account: the
                        # message is stuck in a worker's memory (Dramatiq drops what it had
                        # prefetched when its Redis connection breaks). Send it again; the
                        # token makes a second copy harmless.
                        self._send(task)
            except redis.RedisError as exc:
                log.warning("broker unreachable (%s); waiting", exc)
                break
        return out

    def _report(self, results: str, task: dict[str, Any]) -> ChunkReport | None:
        data = self.client.hget(results, task["token"])
        if data is None:
            return None
        # A report lost after this (a kill before the ledger commit) costs only its
        # counts: the task stays in the ledger, and the next run sends it again.
        self.client.hdel(results, task["token"])
        return ChunkReport.from_dict(json.loads(data))

    def _queued(self) -> int:
        """Messages waiting in the broker's queue and delay queue (Dramatiq's Redis lists)."""
        prefix = f"{NAMESPACE}-dramatiq:{QUEUE}"
        return int(self.client.llen(prefix)) + int(self.client.llen(f"{prefix}.DQ"))

    def in_flight(self) -> list[int]:
        return list(self._flight)

    def stop(self) -> None:
        """Chunks handed out go on; the next run of the same command waits for them."""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _spec_dict(spec: AccountSpec) -> dict[str, Any]:
    from migrate.config.passwords import format_credential

    return {"kind": spec.kind, "source": spec.source, "dest": spec.dest,
            "source_password": format_credential(spec.source_password)
            if spec.source_password else None,
            "dest_password": format_credential(spec.dest_password) if spec.dest_password else None}


def _spec(data: dict[str, Any]) -> AccountSpec:
    from migrate.config.passwords import parse_credential

    def cred(text: str | None) -> Any:
        return parse_credential(text) if text else None

    return AccountSpec(data["kind"], data["source"], data["dest"], cred(data["source_password"]),
                       cred(data["dest_password"]))


# -- leases ------------------------------------------------------------------------------
class Leases:
    """The account's lease and one slot per host session, renewed while held."""

    def __init__(self, client: Any, ttl: float = LEASE_SECONDS) -> None:
        self.client = client
        self.ttl = ttl
        self.held: list[Any] = []
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._victim: subprocess.Popen[bytes] | None = None

    def _try(self, name: str) -> bool:
        lock = self.client.lock(name, timeout=self.ttl, blocking=False, thread_local=False)
        if lock.acquire(blocking=False):
            self.held.append(lock)
            return True
        return False

    def take(self, batch: str, key: str, wanted: Sequence[Session]) -> bool:
        """The account's lease and a slot for every session, or nothing."""
        if not self._try(_key(batch, f"lease:{key}")):
            return False
        for s in wanted:
            if s.cap is None:
                continue  # no cap for this host: nothing to count
            slots = list(range(s.cap))
            random.shuffle(slots)  # spread the tries, so that few of them collide
            if not any(self._try(f"{NAMESPACE}:host:{s.host}:{i}") for i in slots):
                self.release()
                return False
        return True

    def watch(self, proc: subprocess.Popen[bytes]) -> None:
        self._victim = proc
        if self.lost.is_set():
            self._kill()

    def _kill(self) -> None:
        if self._victim is not None:
            with contextlib.suppress(OSError):
                self._victim.kill()

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew, name="mailmigrate-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        _, redis = _imports()
        last_ok = time.monotonic()
        while not self._stop.wait(self.ttl / 3):
            try:
                for lock in self.held:
                    lock.extend(self.ttl, replace_ttl=True)
                last_ok = time.monotonic()
            except redis.exceptions.LockError:
                self._lose("a lease was taken over")
                return
            except redis.RedisError:
                if time.monotonic() - last_ok > self.ttl * 0.8:
                    self._lose("the broker was unreachable for longer than a lease")
                    return

    def _lose(self, why: str) -> None:
        log.warning("lease lost (%s): stopping the chunk; it goes on from its checkpoint", why)
        self.lost.set()
        self._kill()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for lock in self.held:
            with contextlib.suppress(Exception):
                lock.release()
        self.held = []


# -- checkpoint state in Redis -------------------------------------------------------------
def pull_state(client: Any, batch: str, key: str, path: Path) -> int:
    """Make ``path`` the latest published state of the account; returns its version."""
    data = client.hmget(_key(batch, f"state:{key}"), ["version", "blob"])
    version = int(data[0] or 0)
    marker = path.with_name(path.name + ".version")
    if version == 0:
        return 0  # none published yet (or Redis lost it): a local copy, if any, is kept
    with contextlib.suppress(OSError, ValueError):
        if int(marker.read_text()) == version and path.exists():
            return version
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(zlib.decompress(data[1]))
    for extra in ("-wal", "-shm"):
        Path(str(path) + extra).unlink(missing_ok=True)
    os.replace(tmp, path)
    marker.write_text(str(version))
    return version


def push_state(client: Any, batch: str, key: str, path: Path, base_version: int) -> bool:
    """Publish ``path`` as version ``base_version + 1`` unless someone published in between."""
    _, redis = _imports()
    if not path.exists():
        return False
    src = sqlite3.connect(path)
    mem = sqlite3.connect(":memory:")
    try:
        src.backup(mem)
        blob = zlib.compress(mem.serialize(), 6)
    finally:
        src.close()
        mem.close()
    name = _key(batch, f"state:{key}")
    with client.pipeline() as pipe:
        try:
            pipe.watch(name)
            if int(pipe.hget(name, "version") or 0) != base_version:
                return False
            pipe.multi()
            pipe.hset(name, mapping={"version": base_version + 1, "blob": blob})
            pipe.execute()
        except redis.WatchError:
            return False
    path.with_name(path.name + ".version").write_text(str(base_version + 1))
    return True


def publish(client: Any, batch: str, key: str, token: str, report: ChunkReport) -> None:
    """The report, and the token no longer current, in one step (a rerun of the same
    message then does nothing)."""
    _, redis = _imports()
    current = _key(batch, f"current:{key}")
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(current)
                still = pipe.get(current) == token.encode()
                pipe.multi()
                pipe.hset(_key(batch, "results"), token, json.dumps(report.as_dict()))
                if still:
                    pipe.delete(current)
                pipe.execute()
                return
            except redis.WatchError:
                continue


# -- the worker's side ---------------------------------------------------------------------
class _Worker:
    """What the actor needs: the Redis client and where checkpoint copies live."""

    def __init__(self, client: Any, workdir: Path) -> None:
        self.client = client
        self.workdir = workdir

    def run(self, payload: dict[str, Any]) -> None:
        dramatiq, _ = _imports()
        batch, key, token = payload["batch"], payload["key"], payload["token"]
        current = _key(batch, f"current:{key}")
        if self.client.get(current) != token.encode():
            return  # already done, or no longer wanted: a redelivered message does nothing
        spec = _spec(payload["account"])
        wanted = [Session(h, c) for h, c in payload["hosts"]]
        leases = Leases(self.client)
        if not leases.take(batch, key, wanted):
            raise dramatiq.Retry(delay=random.randint(300, 1500))
        try:
            if self.client.get(current) != token.encode():
                return
            leases.start_renewing()
            log.info("chunk start %s %s (%s)", payload["pass"], spec.label, token[:8])
            report = self._chunk(spec, payload, leases, batch, key)
            if leases.lost.is_set() and report.ok:
                report = ChunkReport(ok=False, error="lease lost mid-chunk; it goes on from its "
                                     "checkpoint", duration_s=report.duration_s, worker=report.worker)
            publish(self.client, batch, key, token, report)
            log.info("chunk done %s %s: ok=%s more=%s messages=%d (%s)", payload["pass"],
                     spec.label, report.ok, report.more, report.messages, token[:8])
        finally:
            leases.release()

    def _chunk(self, spec: AccountSpec, payload: dict[str, Any], leases: Leases, batch: str,
               key: str) -> ChunkReport:
        insecure = bool(payload.get("insecure"))
        if payload["pass"] == "verify":
            return probe(spec, insecure=insecure)
        state = None
        version = 0
        if spec.kind in ("copy", "restore"):
            state = self.workdir / "state" / batch / f"{key}.sqlite"
            version = pull_state(self.client, batch, key, state)
        report = run_chunk(spec, state_path=state, limits=ChunkLimits.from_dict(payload["limits"]),
                           insecure=insecure, on_start=leases.watch)
        if state is not None and not leases.lost.is_set():
            push_state(self.client, batch, key, state, version)
        return report


def run_worker(url: str, *, threads: int, workdir: Path | None, heartbeat_timeout: float,
               quiet: bool) -> int:
    """``mailmigrate worker``: take chunks until SIGTERM or SIGINT (chunks running then finish)."""
    os.environ.setdefault("dramatiq_queue_prefetch", str(threads))  # read when dramatiq loads
    dramatiq, _ = _imports()
    # Our lines go through the one "mailmigrate" logger (timestamped on stderr, and into
    # --log-file, which gets them all even with --quiet); Dramatiq's through the root.
    progress.log_to_stderr(logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=logging.WARNING, format="mailmigrate worker: %(message)s")
    logging.getLogger("dramatiq").setLevel(logging.ERROR if quiet else logging.WARNING)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    if workdir is None:
        import platformdirs

        workdir = Path(platformdirs.user_state_dir("mailmigrate")) / "worker"
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    client = redis_client(url)
    broker = make_broker(client, heartbeat_timeout)
    state = _Worker(client, workdir)
    dramatiq.actor(state.run, broker=broker, actor_name=ACTOR, queue_name=QUEUE,
                   retry_when=lambda retries, exc: True, time_limit=7 * 24 * 3600 * 1000)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = dramatiq.Worker(broker, queues={QUEUE}, worker_threads=threads, worker_timeout=500)
    worker.start()
    log.info("worker %s ready: %d threads, checkpoints in %s", worker_name(), threads, workdir)
    stop.wait()
    log.info("stopping: chunks under way finish first")
    worker.stop()
    return 0


__all__ = ["BrokerExecutor", "Leases", "make_broker", "publish", "pull_state", "push_state",
           "redis_client", "run_worker"]
