"""A real streaming replica of the local PostgreSQL (15) for the read-replica tests and benchmark.

`start_replica()` takes a base backup of the primary (`pg_basebackup -R -X stream`, through a
replication slot of its own so that the primary keeps the WAL the replica has not received, also
while a test has it stopped), writes it a configuration of its own (a free port, a socket directory
of its own, loopback trust) and starts it with `pg_ctl`. PostgreSQL refuses to run as root: run as
root, the binaries run as the `postgres` user (`runuser`), and the replica's folder, a fresh
directory of its own under /tmp, is given to that user (pytest's own temporary directories are
private to root, and the server could not reach a folder under them). `Replica.destroy()` stops it,
drops its slot and removes the folder; slots a killed run left behind are dropped by the next run.

Needs: the PostgreSQL binaries (`LEDGER_PG_BIN`, default /usr/lib/postgresql/15/bin), `wal_level`
replica or logical on the primary, and replication connections from 127.0.0.1 allowed by the
primary's pg_hba.conf (`.ci/replication` adds that line). `replication_problem()` says which is
missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("LEDGER_PG_BIN", "/usr/lib/postgresql/15/bin"))
PRIMARY = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
SLOT_PREFIX = "ledger_test_replica_"
# A standby needs these at least as high as its primary's (it refuses to start otherwise).
_COPIED = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
           "max_locks_per_transaction")  # fmt: skip


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _primary(**extra: object) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(**PRIMARY, dbname="postgres", autocommit=True, connect_timeout=10, **extra)  # type: ignore[arg-type]


def replication_problem() -> str | None:
    """Why a replica of the local PostgreSQL cannot be started here (None when it can)."""
    for tool in ("pg_basebackup", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"{PG_BIN / tool} is missing (set LEDGER_PG_BIN)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root, and runuser (to run PostgreSQL as the postgres user) is missing"
    try:
        with _primary() as c:
            wal_level = c.execute("SHOW wal_level").fetchone()
    except psycopg.Error as e:
        return f"the primary at 127.0.0.1:5432 is unreachable: {e}"
    if wal_level is None or wal_level[0] not in ("replica", "logical"):
        return f"the primary's wal_level is {wal_level}, not replica"
    try:
        with _primary(replication="true") as c:
            c.execute("IDENTIFY_SYSTEM")
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (
            f"the primary refuses replication connections from 127.0.0.1 ({first}); "
            "its pg_hba.conf needs `host replication all 127.0.0.1/32 trust` (run .ci/replication)"
        )
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_orphaned_slots() -> None:
    """Drops the slots of replicas whose test process is gone (a killed run): a slot keeps WAL."""
    with _primary() as c:
        rows = c.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s AND NOT active",
            (SLOT_PREFIX + "%",),
        ).fetchall()
        for (name,) in rows:
            pid = name[len(SLOT_PREFIX) :].split("_")[0]
            if pid.isdigit() and not _alive(int(pid)):
                c.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def _drop_slot(name: str) -> None:
    with _primary() as c:
        if c.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone():
            c.execute("SELECT pg_drop_replication_slot(%s)", (name,))


@dataclass
class Replica:
    directory: Path
    port: int
    slot: str

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database_url: str, application_name: str = "ledger-replica-reads") -> str:
        """`database_url` (a database of the primary) with the replica's port, naming the
        connections `application_name` (so that the replica's pg_stat_activity shows them)."""
        from sqlalchemy.engine import make_url

        u = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return u.update_query_dict({"application_name": application_name}).render_as_string(hide_password=False)

    def pg_ctl(self, *args: str, timeout: float = 120) -> None:
        log = self.directory / "server.log"
        cmd = _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(log), *args])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}\n{tail}")

    def start(self) -> None:
        self.pg_ctl("-w", "-t", "120", "start")

    def stop(self) -> None:
        self.pg_ctl("-w", "-t", "60", "-m", "fast", "stop")

    def running(self) -> bool:
        pid = self.data / "postmaster.pid"
        return pid.exists()

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop()
        finally:
            try:
                with _primary() as c:
                    for _ in range(50):  # the walsender goes a moment after the replica stops
                        row = c.execute(
                            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
                        ).fetchone()
                        if row is None or not row[0]:
                            break
                        time.sleep(0.1)
                    if row is not None:
                        c.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
            finally:
                shutil.rmtree(self.directory, ignore_errors=True)


def _base_backup(replica: Replica, slot: str) -> None:
    """`pg_basebackup` into `replica.data`. A database another process drops while the backup copies
    it can fail the backup: it is tried again, with a slot of a new name (the failed one's dropped)."""
    last = ""
    for attempt in range(3):
        replica.slot = f"{slot}_{attempt}"
        backup = subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_basebackup"),
                    *("-h", str(PRIMARY["host"]), "-p", str(PRIMARY["port"]), "-U", str(PRIMARY["user"])),
                    *("-D", str(replica.data), "-R", "-X", "stream", "-C", "-S", replica.slot, "--checkpoint=fast"),
                ]
            ),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if backup.returncode == 0:
            return
        last = backup.stderr.strip()
        _drop_slot(replica.slot)
        subprocess.run(_as_postgres(["rm", "-rf", str(replica.data)]), check=True)
    raise RuntimeError(f"pg_basebackup failed three times; the last: {last}")


def start_replica() -> Replica:
    """A streaming replica of the whole local cluster on a free port, started and accepting reads."""
    drop_orphaned_slots()
    directory = Path(tempfile.mkdtemp(prefix="ledger-replica-"))
    slot = f"{SLOT_PREFIX}{os.getpid()}_{directory.name.rsplit('-', 1)[-1].lower()}"
    port = _free_port()
    replica = Replica(directory=directory, port=port, slot=slot)
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        directory.chmod(0o700)
        with _primary() as c:
            copied = {name: c.execute(f"SHOW {name}").fetchone()[0] for name in _COPIED}  # type: ignore[index]
        _base_backup(replica, slot)
        conf = {
            "port": str(port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{directory}'",
            "hot_standby": "on",
            "hba_file": f"'{replica.data / 'pg_hba.conf'}'",
            "ident_file": f"'{replica.data / 'pg_ident.conf'}'",
            "logging_collector": "off",
            "fsync": "off",  # a throw-away copy: nothing to keep through a crash of this machine
            "shared_buffers": "32MB",
            **copied,
        }
        files = {
            "postgresql.conf": "".join(f"{k} = {v}\n" for k, v in conf.items()),
            "pg_hba.conf": "local all all trust\nhost all all 127.0.0.1/32 trust\n",
            "pg_ident.conf": "",
        }
        for name, text in files.items():
            path = replica.data / name
            path.write_text(text)
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")
        replica.start()
    except BaseException:
        replica.destroy()
        raise
    return replica
