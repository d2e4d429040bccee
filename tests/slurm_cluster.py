"""A real one-node SLURM cluster for the tests, started and stopped by this process.

:class:`SlurmCluster` installs ``slurm-wlm`` and ``munge`` with apt-get when they are missing, writes a
munge key and a ``slurm.conf`` naming this host into a private directory, starts ``munged`` (on its
own socket), ``slurmctld`` and ``slurmd`` (on free ports), waits for ``sinfo`` to show the node idle,
and at the end stops only the daemons it started, by the pids in their pid files. Nothing under
``/etc`` is written and a cluster already running on the host is left alone.

    # pytest: the session fixture ``slurm_cluster`` (tests/test_slurm.py) yields a SlurmCluster
    # by hand:
    python -m tests.slurm_cluster start /tmp/slurm     # prints `export SLURM_CONF=...`
    python -m tests.slurm_cluster stop /tmp/slurm

Clients (sbatch, squeue, scontrol, submitit) find the cluster through ``SLURM_CONF``:
:meth:`SlurmCluster.env` returns an environment with it set.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged")
PACKAGES = ("slurm-wlm", "munge")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed here (not root, no apt-get, no package): the tests skip. A cluster that
    is installed but does not start raises :class:`SlurmStartError` instead: the tests fail."""


class SlurmStartError(RuntimeError):
    """The daemons are installed but did not start or the node did not become idle."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def ensure_installed(timeout: float = 600) -> None:
    """``apt-get install slurm-wlm munge`` unless ``slurmctld``, ``slurmd``, ``munged`` and ``sbatch``
    are already on the PATH. Raises :class:`SlurmUnavailable` (with the reason) when that fails."""
    needed = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue", "sinfo")
    if all(shutil.which(b) for b in needed):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurm-wlm/munge are not installed and installing them needs root")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("slurm-wlm/munge are not installed and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        update = _run(["apt-get", "update", "-qq"], timeout=timeout, env=env)
        install = _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                       timeout=timeout, env=env)
    except subprocess.TimeoutExpired as err:
        raise SlurmUnavailable(f"apt-get timed out after {err.timeout:.0f} s") from err
    if install.returncode != 0:
        tail = (update.stderr + install.stdout + install.stderr).strip().splitlines()[-5:]
        raise SlurmUnavailable("apt-get install slurm-wlm munge failed: " + " | ".join(tail))
    missing = [b for b in needed if not shutil.which(b)]
    if missing:
        raise SlurmUnavailable(f"apt-get installed slurm-wlm but {missing} are still not on the PATH")


def node_line(cpus: int | None = None, memory_mb: int | None = None) -> str:
    """The ``NodeName=...`` line of this host as ``slurmd -C`` reports it (so slurmd accepts it),
    with the memory capped (jobs of the tests ask for little)."""
    out = _run(["slurmd", "-C"]).stdout
    line = next((x for x in out.splitlines() if x.startswith("NodeName=")), "")
    fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
    if not fields:
        fields = {"NodeName": socket.gethostname().split(".")[0], "CPUs": str(os.cpu_count() or 1)}
    if cpus is not None:  # a smaller CPU count needs the topology dropped, or slurmd complains
        fields = {"NodeName": fields["NodeName"], "CPUs": str(cpus)}
    real = int(fields.get("RealMemory", 4096))
    fields["RealMemory"] = str(min(real, memory_mb or 16000))
    fields.pop("UpTime", None)
    return " ".join(f"{k}={v}" for k, v in fields.items())


class SlurmCluster:
    """A single-node SLURM under ``root`` (a private directory). ``start()`` then ``stop()``."""

    def __init__(self, root: Path, partition: str = "debug", kill_wait_s: int = 5):
        self.root = Path(root).resolve()
        self.partition = partition
        self.kill_wait_s = kill_wait_s
        self.conf = self.root / "slurm.conf"
        self.hostname = ""
        self._started: list[str] = []

    # ------------------------------------------------------------------ paths
    def pid_file(self, daemon: str) -> Path:
        return self.root / "run" / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.root / "log" / f"{daemon}.log"

    @property
    def munge_socket(self) -> Path:
        return self.root / "run" / "munge.socket"

    def env(self, base: dict | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with ``SLURM_CONF`` pointing at this cluster, and no
        ``SLURM_*`` job variables inherited from an allocation the tests might run in."""
        env = {k: v for k, v in (base if base is not None else os.environ).items()
               if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
        return env

    # ------------------------------------------------------------------ setup
    def write_config(self) -> None:
        for sub in ("run", "log", "state", "spool", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        os.chmod(self.root / "munge", 0o700)
        node = node_line()
        self.hostname = node.split()[0].split("=", 1)[1]
        lines = [
            "ClusterName=flashtest",
            f"SlurmctldHost={self.hostname}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SlurmUser=root",
            "SlurmdUser=root",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "JobCompType=jobcomp/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2",
            f"KillWait={self.kill_wait_s}",
            "MinJobAge=600",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            f"SlurmctldPidFile={self.pid_file('slurmctld')}",
            f"SlurmdPidFile={self.pid_file('slurmd')}",
            f"SlurmctldLogFile={self.log_file('slurmctld')}",
            f"SlurmdLogFile={self.log_file('slurmd')}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"StateSaveLocation={self.root / 'state'}",
            node,
            f"PartitionName={self.partition} Nodes={self.hostname} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self._write_sacct()

    def _write_sacct(self) -> None:
        """``bin/sacct`` (first on :meth:`env`'s PATH): accounting is off, so the real sacct only says so
        and submitit sees every job as UNKNOWN, waiting forever for one that was killed (time limit,
        scancel) without writing its result. This answers submitit's query
        (``sacct -o JobID,State,NodeList --parsable2 -j <id> ...``) from slurmctld, which keeps
        finished jobs for MinJobAge seconds."""
        sacct = self.root / "bin" / "sacct"
        sacct.parent.mkdir(parents=True, exist_ok=True)
        sacct.write_text(
            "#!/bin/sh\n"
            "# sacct stand-in of the test cluster (no slurmdbd): job states from squeue\n"
            "ids=''\n"
            "while [ $# -gt 0 ]; do\n"
            "  case \"$1\" in -j) ids=\"${ids:+$ids,}$2\"; shift ;; -j*) ids=\"${ids:+$ids,}${1#-j}\" ;; esac\n"
            "  shift\n"
            "done\n"
            "echo 'JobID|State|NodeList'\n"
            "exec squeue -h -r -t all ${ids:+-j \"$ids\"} -o '%i|%T|%N' 2>/dev/null\n")
        sacct.chmod(0o755)

    def _spawn(self, daemon: str, cmd: list[str]) -> None:
        result = _run(cmd, timeout=60, env=self.env())
        if result.returncode != 0:
            raise SlurmStartError(f"{daemon} did not start ({result.returncode}): "
                                   f"{(result.stdout + result.stderr).strip()[-400:]}")
        deadline = time.time() + 20
        while not self.pid_file(daemon).is_file() and time.time() < deadline:
            time.sleep(0.2)
        if not self.pid_file(daemon).is_file():
            raise SlurmStartError(f"{daemon} wrote no pid file; log: {self._log_tail(daemon)}")
        self._started.append(daemon)

    def _log_tail(self, daemon: str, lines: int = 8) -> str:
        path = self.log_file(daemon)
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(none)"

    def start(self, timeout: float = 60) -> SlurmCluster:
        """Install if needed, configure, start the daemons and wait for the node to be idle."""
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmd/slurmctld/munged needs root")
        ensure_installed()
        self.write_config()
        try:
            m = self.root / "munge"
            self._spawn("munged", ["munged", "--force", f"--socket={self.munge_socket}",
                                   f"--key-file={m / 'munge.key'}", f"--pid-file={self.pid_file('munged')}",
                                   f"--log-file={self.log_file('munged')}", f"--seed-file={m / 'munged.seed'}"])
            self._spawn("slurmctld", ["slurmctld", "-f", str(self.conf)])
            self._spawn("slurmd", ["slurmd", "-f", str(self.conf)])
            self.wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            out = _run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env())
            state = (out.stdout + out.stderr).strip()
            if out.returncode == 0 and state.split() and state.split()[0].rstrip("*~#") == "idle":
                return
            time.sleep(0.5)
        raise SlurmStartError(f"node not idle after {timeout:.0f} s (sinfo: {state!r}); slurmctld log: "
                               f"{self._log_tail('slurmctld')}; slurmd log: {self._log_tail('slurmd')}")

    def stop(self, timeout: float = 20) -> None:
        """Let running jobs end (then cancel them), SIGTERM each daemon this object started (by its pid
        file, SIGKILL if it stays), and end job steps that outlived slurmd (see :meth:`_leftovers`)."""
        if "slurmctld" in self._started:
            self._drain()
        for daemon in ("slurmd", "slurmctld", "munged"):
            if daemon not in self._started:
                continue
            try:
                pid = int(self.pid_file(daemon).read_text().strip())
            except (OSError, ValueError):
                continue
            with _suppress():
                os.kill(pid, signal.SIGTERM)
            deadline = time.time() + timeout
            while _alive(pid) and time.time() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                with _suppress():
                    os.kill(pid, signal.SIGKILL)
        self._started.clear()
        leftovers = self._leftovers()
        for sig in (signal.SIGTERM, signal.SIGKILL):  # slurmstepd and srun ignore SIGTERM
            for pid in leftovers:
                with _suppress():
                    os.kill(pid, sig)
            deadline = time.time() + 3
            while any(_alive(p) for p in leftovers) and time.time() < deadline:
                time.sleep(0.2)
            leftovers = [p for p in leftovers if _alive(p)]

    def _drain(self, timeout: float = 30) -> None:
        """Wait for the jobs still running (a launcher returns once every job wrote its result, while the
        job steps are still ending), then cancel whatever is left."""
        busy = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "PENDING", "REQUEUED"}
        deadline = time.time() + timeout
        cancelled = False
        while True:
            try:
                states = self.jobs()
            except (RuntimeError, subprocess.TimeoutExpired):
                return
            active = [job for job, state in states.items() if state in busy]
            if not active:
                return
            if time.time() >= deadline:
                if cancelled:
                    return
                self.run("scancel", *active, check=False)
                cancelled, deadline = True, time.time() + 15
            time.sleep(0.5)

    def _leftovers(self) -> list[int]:
        """Processes started through this cluster (they carry its ``SLURM_CONF`` in their environment:
        job steps, job scripts, srun) that are still running, this process excluded."""
        needle = f"SLURM_CONF={self.conf}".encode()
        spared = _ancestors()  # this process and the shell that may have exported SLURM_CONF
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in spared:
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0") and _alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    # ------------------------------------------------------------------ clients
    def run(self, *cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        result = _run(list(cmd), timeout=timeout, env=self.env())
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def jobs(self) -> dict[str, str]:
        """``{job id (array tasks as <job>_<task>): state}`` of every job slurmctld still knows."""
        out = self.run("squeue", "-h", "-t", "all", "-o", "%i %T").stdout
        return dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as ``{key: value}`` (accounting is off: this is the job record)."""
        out = self.run("scontrol", "show", "job", "-o", job_id, check=False).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError | PermissionError)


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (our own child not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__)
        return 2
    cluster = SlurmCluster(Path(argv[1]))
    if argv[0] == "start":
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster._started = list(DAEMONS)
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
