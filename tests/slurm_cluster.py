"""A one-node SLURM cluster on localhost, for tests: Debian's slurm-wlm 22.05 with munge, slurmdbd and a
scratch MariaDB, two fake GPUs declared as a generic resource.

Every config file, state directory, log and pid file lives in one scratch directory; daemons and clients
find the configs through ``SLURM_CONF`` (slurmdbd.conf and gres.conf are read from the same directory), so
nothing under /etc/slurm is written and every run starts from empty state. The GPUs are two character
devices with /dev/null's numbers (``/dev/nb360gpu0``, ``/dev/nb360gpu1``): SLURM only needs files to hand
out; jobs see their share in ``CUDA_VISIBLE_DEVICES``. Needs root (daemons, mknod, apt-get).

    with LocalSlurm(tmp_path / "slurm") as cluster:
        subprocess.run(["sbatch", "--gpus=1", "--wrap", "..."], env=cluster.env())

Developers: ``python -m tests.slurm_cluster up DIR`` starts one that outlives the command (it prints the
``SLURM_CONF`` to export), ``python -m tests.slurm_cluster down DIR`` stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Just what the daemons and clients need. slurm-wlm-basic-plugins (a dependency of all of them) holds
# select/cons_tres, gres/gpu, accounting_storage/slurmdbd, proctrack/linuxproc, task/none and auth/munge;
# slurm-wlm's Recommends (slurm-wlm-plugins: hdf5, rrd, influxdb profiling...) are not needed. The
# MariaDB server core has mariadbd and mariadb-install-db; the latter needs my_print_defaults from the
# client core. mariadb-server would add galera, perl and a dozen more.
PACKAGES = (
    "slurmctld",
    "slurmd",
    "slurm-client",
    "slurmdbd",
    "munge",
    "mariadb-server-core",
    "mariadb-client-core",
)
BINARIES = (
    "/usr/sbin/slurmctld",
    "/usr/sbin/slurmd",
    "/usr/sbin/slurmdbd",
    "/usr/bin/sbatch",
    "/usr/bin/sacct",
    "/usr/sbin/munged",
    "/usr/bin/munge",
    "/usr/sbin/mariadbd",
    "/usr/bin/mariadb-install-db",
    "/usr/bin/my_print_defaults",
)
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN_DIR = Path("/run/munge")  # munged's default socket lives here; slurm's auth/munge looks there
GPU_DEVICE_PREFIX = "/dev/nb360gpu"
CLIENT_TIMEOUT_S = 20  # sinfo and friends retry for minutes when slurmctld does not answer
GRACE_S = 20.0  # SIGTERM to SIGKILL


class SlurmError(RuntimeError):
    """A daemon did not start or a client call failed; the message names it and shows its log."""


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if not os.access(b, os.X_OK)]


def unavailable_reason() -> str | None:
    """Why no cluster can be started here, or None if it can (root, and the binaries or apt-get)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (daemons, mknod under /dev, apt-get)"
    if missing_binaries() and shutil.which("apt-get") is None:
        return f"SLURM binaries missing ({', '.join(missing_binaries())}) and no apt-get to install them"
    return None


def install(log: Callable[[str], None] = print) -> float:
    """Install the packages if a binary is missing; returns the seconds it took (0 if nothing to do)."""
    missing = missing_binaries()
    if not missing:
        return 0.0
    t0 = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"slurm_cluster: installing {' '.join(PACKAGES)} (missing: {', '.join(missing)})")
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise SlurmError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{_tail(proc.stdout + proc.stderr)}"
            )
    still = missing_binaries()
    if still:
        raise SlurmError(f"installed {' '.join(PACKAGES)} but still missing: {', '.join(still)}")
    seconds = time.monotonic() - t0
    log(f"slurm_cluster: installed in {seconds:.1f} s")
    return seconds


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int, name: str) -> bool:
    """The process runs (not a zombie) and is still the daemon we started (pids get reused)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if re.search(r"^State:\s+Z", status, re.M):
        return False
    return name.encode() in cmdline


@dataclass
class Daemon:
    name: str  # also what its command line contains
    pid: int
    logs: list[Path]
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.proc is not None:  # our child: authoritative, and reaps it
            return self.proc.poll() is None
        return _alive(self.pid, self.name)

    def log_tail(self) -> str:
        parts = []
        for log in self.logs:
            text = log.read_text(errors="replace") if log.exists() else ""
            if text.strip():
                parts.append(f"--- {log} (last lines) ---\n{_tail(text)}")
        return "\n".join(parts) or f"(its logs {', '.join(map(str, self.logs))} are empty)"


class LocalSlurm:
    """The cluster, started by ``start()`` (or ``with``) and stopped by ``stop()``: see the module docstring.

    ``daemons`` lists what this object started, in start order (a munged that was already running is
    reused, not listed). ``timings`` holds seconds per phase (install, bring-up, teardown).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        cpus: int = 8,
        memory_mb: int = 16000,
        gpus: int = 2,
        log: Callable[[str], None] = print,
    ):
        self.root = Path(root).resolve()
        self.cpus, self.memory_mb, self.gpus = cpus, memory_mb, gpus
        self.log = log
        self.node = socket.gethostname().split(".")[0]  # = `hostname -s`; slurmd takes its node name from it
        self.conf = self.root / "etc" / "slurm.conf"
        self.daemons: list[Daemon] = []
        self.devices = [f"{GPU_DEVICE_PREFIX}{i}" for i in range(gpus)]
        self.timings: dict[str, float] = {}
        self.allocations = self.root / "log" / "gpu-allocations.txt"  # "<job id> <gpu indices>" per job
        self.ports: dict[str, int] = {}

    # --- public -----------------------------------------------------------------------------------------

    def __enter__(self) -> LocalSlurm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for clients and daemons: ``base`` (default os.environ) pointed at this cluster."""
        env = dict(os.environ if base is None else base)
        # Variables of an enclosing SLURM job would confuse sbatch/srun run against this cluster.
        for key in [k for k in env if k.startswith("SLURM_")]:
            del env[key]
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
        return env

    def run(self, *cmd: str, timeout: float = CLIENT_TIMEOUT_S, check: bool = True) -> str:
        """A client command (sinfo, sacct, ...) against this cluster; its stdout."""
        try:
            proc = subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise SlurmError(f"{' '.join(cmd)}: no answer in {timeout} s\n{self._daemon_report()}") from e
        if check and proc.returncode != 0:
            raise SlurmError(
                f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}\n{self._daemon_report()}"
            )
        return proc.stdout

    def allotted_gpus(self, job_id: str) -> list[str]:
        """GPU indices SLURM gave a job's last run (``SLURM_JOB_GPUS`` of the node's prolog), e.g. ["1"]; []
        for none. A requeued job runs again, maybe on other GPUs: its last prolog record counts."""
        lines = self.allocations.read_text().splitlines() if self.allocations.exists() else []
        for line in reversed(lines):
            jid, _, gpus = line.partition(" ")
            if jid == str(job_id):
                return [g for g in gpus.strip().split(",") if g]
        raise SlurmError(
            f"job {job_id} never started on {self.node} (no prolog record in {self.allocations})"
        )

    def start(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise SlurmError(f"cannot start a local SLURM cluster: {reason}")
        self.timings["install"] = install(self.log)
        t0 = time.monotonic()
        for sub in ("etc", "log", "run", "state", "spool", "db", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._save()
        self._write_scripts()
        self._make_devices()
        self._write_configs()
        self._start_munge()
        self._start_mariadb()
        self._start_slurm_daemon("slurmdbd", ["/usr/sbin/slurmdbd", "-D"], port=self.ports["slurmdbd"])
        self._start_slurm_daemon(
            "slurmctld", ["/usr/sbin/slurmctld", "-D", "-i"], port=self.ports["slurmctld"]
        )
        self._start_slurm_daemon("slurmd", ["/usr/sbin/slurmd", "-D", "-N", self.node], port=None)
        self._wait_idle()
        self.timings["bring_up"] = time.monotonic() - t0
        self.log(
            f"slurm_cluster: node {self.node} idle after {self.timings['bring_up']:.1f} s "
            f"(SLURM_CONF={self.conf}; daemons {', '.join(f'{d.name}={d.pid}' for d in self.daemons)})"
        )

    def stop(self) -> None:
        """Cancel leftover jobs, stop the daemons this object started (reverse order, SIGKILL after a grace
        period) and remove the device nodes. Safe to call twice."""
        t0 = time.monotonic()
        if any(d.name == "slurmctld" and d.alive() for d in self.daemons):
            # Batch scripts outlive slurmd (proctrack/linuxproc); cancel them while slurmctld still answers.
            with contextlib.suppress(SlurmError):
                if self.run("squeue", "-h", "-o", "%i", timeout=10, check=False).strip():
                    self.run("scancel", f"--user={os.geteuid()}", timeout=10, check=False)
                    deadline = time.monotonic() + 15
                    while self.run("squeue", "-h", "-o", "%i", timeout=10).strip():
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.5)
        for daemon in reversed(self.daemons):
            try:
                _stop(daemon)
            except OSError as e:  # go on with the others; reported below as still running
                self.log(f"slurm_cluster: stopping {daemon.name} (pid {daemon.pid}): {e}")
        still = [d for d in self.daemons if d.alive()]
        for dev in self.devices:
            if os.path.lexists(dev):
                os.unlink(dev)
        self.timings["teardown"] = time.monotonic() - t0
        if still:
            raise SlurmError(f"still running after SIGKILL: {', '.join(f'{d.name}={d.pid}' for d in still)}")
        self.daemons = []
        self._save()

    # --- bring-up ---------------------------------------------------------------------------------------

    def _write_scripts(self) -> None:
        """``bin/srun`` (first on the PATH of env()) that puts SLURM_CONF back: jobs inherit the PATH
        (sbatch --export=ALL), and snakemake-executor-plugin-slurm-jobstep (0.6.1) removes every SLURM_*
        variable but the job ids before its nested ``srun``, which then finds no config (ours is not at
        /etc/slurm) and dies with "Could not establish a configuration source"."""
        srun = self.root / "bin" / "srun"
        srun.parent.mkdir(parents=True, exist_ok=True)
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={shlex.quote(str(self.conf))} exec /usr/bin/srun "$@"\n')
        srun.chmod(0o755)
        # Which GPUs each job got, as slurmd tells its prolog: scontrol forgets it when a job ends.
        prolog = self.root / "bin" / "prolog"
        prolog.write_text(
            "#!/bin/sh\n# A failing prolog would drain the node: never fail.\n"
            f'echo "$SLURM_JOB_ID ${{SLURM_JOB_GPUS:-}}" >> {shlex.quote(str(self.allocations))} || true\n'
        )
        prolog.chmod(0o755)

    def _make_devices(self) -> None:
        for dev in self.devices:
            if os.path.lexists(dev):
                os.unlink(dev)  # left by a killed run
            os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))

    def _write_configs(self) -> None:
        r = self.root
        self.ports = {name: _free_port() for name in ("mariadb", "slurmdbd", "slurmctld", "slurmd")}
        self.db_password = secrets.token_hex(12)
        last = self.gpus - 1
        self.conf.write_text(
            f"""# Written by tests/slurm_cluster.py: a one-node test cluster.
ClusterName=nb360test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={self.ports["slurmctld"]}
SlurmdPort={self.ports["slurmd"]}
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
MpiDefault=none
# No cgroup setup needed; jobs are tracked by parent process.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.ports["slurmdbd"]}
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# cons_tres understands --gpus (what the Snakemake plugin sends for resources: gpu=1).
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job without --mem would otherwise get the whole node's memory, and run alone.
DefMemPerCPU=1000
MailProg=/bin/true
Prolog={r}/bin/prolog
GresTypes=gpu
ReturnToService=2
# Finished jobs stay known to slurmctld (scontrol show job, squeue) for 5 minutes.
MinJobAge=300
# Trust the node line below, not the CPUs and memory slurmd detects.
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} \
Gres=gpu:tesla:{self.gpus} State=UNKNOWN
PartitionName=main Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        (r / "etc" / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.node} Name=gpu Type=tesla File={GPU_DEVICE_PREFIX}[0-{last}]\n"
        )
        dbd = r / "etc" / "slurmdbd.conf"
        dbd.touch(mode=0o600)
        os.chmod(dbd, 0o600)  # slurmdbd refuses a config others can read (it holds the DB password)
        dbd.write_text(
            f"""AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.ports["slurmdbd"]}
SlurmUser=root
LogFile={r}/log/slurmdbd.log
PidFile={r}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports["mariadb"]}
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass={self.db_password}
"""
        )

    def _spawn(self, name: str, cmd: Sequence[str], extra_logs: Sequence[Path] = (), **popen) -> Daemon:
        out = self.root / "log" / f"{name}.out"
        with out.open("ab") as fh:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,  # a Ctrl-C meant for pytest reaches us, and we stop them in order
                **popen,
            )
        daemon = Daemon(name, proc.pid, [out, *extra_logs], proc)
        self.daemons.append(daemon)
        self._save()
        return daemon

    def _wait(self, daemon: Daemon | None, what: str, ready: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if daemon is not None and not daemon.alive():
                raise SlurmError(
                    f"{daemon.name} (pid {daemon.pid}) exited before {what}\n{daemon.log_tail()}"
                )
            if time.monotonic() > deadline:
                tail = daemon.log_tail() if daemon is not None else self._daemon_report()
                raise SlurmError(
                    f"{daemon.name if daemon else 'cluster'}: not {what} after {timeout} s\n{tail}"
                )
            time.sleep(0.2)

    def _munge_works(self) -> bool:
        try:
            return subprocess.run(["munge", "-n"], capture_output=True, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _start_munge(self) -> None:
        if self._munge_works():
            self.log("slurm_cluster: reusing the running munged")
            return
        if not MUNGE_KEY.exists():
            subprocess.run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)], check=True, timeout=30)
            shutil.chown(MUNGE_KEY, "munge", "munge")
            MUNGE_KEY.chmod(0o600)
        MUNGE_RUN_DIR.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN_DIR, "munge", "munge")
        daemon = self._spawn(
            "munged", ["/usr/sbin/munged", "-F"], user="munge", group="munge", extra_groups=[]
        )
        self._wait(daemon, "answering munge -n", self._munge_works, timeout=30)

    def _start_mariadb(self) -> None:
        data = self.root / "db" / "data"
        proc = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise SlurmError(
                f"mariadb-install-db failed ({proc.returncode}):\n{_tail(proc.stdout + proc.stderr)}"
            )
        # Run at every server start (idempotent): the account slurmdbd logs in with.
        init = self.root / "db" / "init.sql"
        init.write_text(
            f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}';\n"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';\n"
        )
        init.chmod(0o600)
        daemon = self._spawn(
            "mariadbd",
            [
                "/usr/sbin/mariadbd",
                "--no-defaults",
                "--user=root",
                f"--datadir={data}",
                f"--socket={self.root / 'run' / 'mariadb.sock'}",
                f"--pid-file={self.root / 'run' / 'mariadb.pid'}",
                f"--tmpdir={self.root / 'tmp'}",
                f"--port={self.ports['mariadb']}",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                f"--init-file={init}",
                "--innodb-buffer-pool-size=32M",
                # The database is thrown away: no need to flush it at shutdown.
                "--innodb-fast-shutdown=2",
            ],
        )
        self._wait(
            daemon, f"listening on port {self.ports['mariadb']}", lambda: _port_open(self.ports["mariadb"])
        )

    def _start_slurm_daemon(self, name: str, cmd: list[str], port: int | None) -> None:
        daemon = self._spawn(name, cmd, extra_logs=[self.root / "log" / f"{name}.log"])
        if port is not None:
            self._wait(daemon, f"listening on port {port}", lambda: _port_open(port))

    def _node_state(self) -> str:
        try:
            return self.run("sinfo", "-h", "-N", "-o", "%T", timeout=10, check=False).strip()
        except SlurmError:
            return ""

    def _wait_idle(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for d in self.daemons:
                if not d.alive():
                    raise SlurmError(f"{d.name} (pid {d.pid}) exited during start-up\n{d.log_tail()}")
            state = self._node_state()
            if state == "idle":
                return
            if any(bad in state for bad in ("drain", "inval", "down")) or time.monotonic() > deadline:
                node = self.run("scontrol", "show", "node", self.node, check=False)
                raise SlurmError(
                    f"node {self.node} is {state or 'unknown'!r}, not idle:\n{node}\n{self._daemon_report()}"
                )
            time.sleep(0.3)

    def _daemon_report(self) -> str:
        return "\n".join(
            f"== {d.name} (pid {d.pid}, {'alive' if d.alive() else 'gone'}):\n{d.log_tail()}"
            for d in self.daemons
            if d.name.startswith("slurm")
        )

    # --- bookkeeping for `down` from another process ----------------------------------------------------

    def _save(self) -> None:
        state = {
            "conf": str(self.conf),
            "devices": self.devices,
            "daemons": [
                {"name": d.name, "pid": d.pid, "logs": [str(p) for p in d.logs]} for d in self.daemons
            ],
        }
        path = self.root / "cluster.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)

    @classmethod
    def attach(cls, root: str | os.PathLike, log: Callable[[str], None] = print) -> LocalSlurm:
        """The cluster that ``up`` started in ``root`` (to stop it)."""
        self = cls(root, log=log)
        state = json.loads((self.root / "cluster.json").read_text())
        self.devices = state["devices"]
        self.daemons = [Daemon(d["name"], d["pid"], [Path(p) for p in d["logs"]]) for d in state["daemons"]]
        return self


def _stop(daemon: Daemon) -> None:
    """SIGTERM, then SIGKILL if it is still there after GRACE_S; returns when it is gone (alive() reaps our
    children)."""
    for sig, grace in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 5.0)):
        if not daemon.alive():
            break
        try:
            os.kill(daemon.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while daemon.alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.slurm_cluster", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("dir", type=Path, help="scratch directory of the cluster (configs, state, logs)")
    args = parser.parse_args(argv)
    if args.action == "up":
        cluster = LocalSlurm(args.dir)
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        print(f"export SLURM_CONF={cluster.conf}")
        print(f"stop with: {sys.executable} -m tests.slurm_cluster down {args.dir}")
    else:
        cluster = LocalSlurm.attach(args.dir)
        cluster.stop()
        print(f"stopped in {cluster.timings['teardown']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
