"""A throw-away single-node SLURM cluster on this machine, for tests (Debian 12, as root).

Daemons, all in the foreground of processes this module started and stops by PID, all
traffic on 127.0.0.1, all config, state, logs and sockets in one temporary directory:

    munged     (as user munge; its own key and socket)
    mariadbd   (a private data directory; accounting database for slurmdbd)
    slurmdbd   (so that `sacct` works: the executor plugin polls job states with it)
    slurmctld  (cluster "rsmtest", partition "debug", account "rsm")
    slurmd     (one node named after `hostname -s`, declared as a GPU node: 16 CPUs,
                128 GB, two fake GPUs /dev/null and /dev/zero; SlurmdParameters=config_overrides
                lets a 2-core machine stand in for it, and jobs that ask for a GPU get
                CUDA_VISIBLE_DEVICES like on a real GPU node)

No systemd and no cgroups: proctrack/linuxproc and task/none.

One thing outside the temporary directory: the plugin's job step clears every SLURM_*
variable (SLURM_CONF included) before its inner `srun`, which then looks for
/etc/slurm/slurm.conf and after it /run/slurm/conf/slurm.conf (where slurmd keeps its copy in
configless mode on real clusters). The cluster links /run/slurm/conf to its config directory
for its lifetime and removes the link when it stops.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = "munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
BINARIES = (
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "sacct",
    "sacctmgr",
    "squeue",
    "scancel",
    "sinfo",
)
CLUSTER = "rsmtest"
PARTITION = "debug"
ACCOUNT = "rsm"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
RUN_CONF = Path("/run/slurm/conf")
SACCT_FORMAT = "JobID,JobName%40,Comment%60,Partition,Account,State,ExitCode,Elapsed,AllocTRES%70"


class ClusterError(RuntimeError):
    pass


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (
            f"SLURM test cluster needs {', '.join(missing)} "
            f"(apt-get install --no-install-recommends {PACKAGES})"
        )
    if os.geteuid() != 0:
        return "SLURM test cluster needs root (it runs munged as user munge and slurmd as root)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "SLURM test cluster needs the user munge (Debian package munge)"
    if SYSTEM_CONF.exists():
        return f"{SYSTEM_CONF} exists: the plugin's inner srun would use that cluster, not ours"
    if (RUN_CONF.exists() or RUN_CONF.is_symlink()) and not _stale_link():
        return f"{RUN_CONF} is in use (configless slurmd, or another test cluster)"
    return None


def _stale_link() -> bool:
    """Whether /run/slurm/conf is our link left by a run that was killed (its slurmctld gone)."""
    if not RUN_CONF.is_symlink():
        return False
    base = Path(os.readlink(RUN_CONF)).parent
    if not base.name.startswith("rsm-slurm-"):
        return False
    try:
        os.kill(int((base / "state" / "slurmctld.pid").read_text()), 0)
    except (OSError, ValueError):
        return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, keep_logs_in: Path | None = None):
        self.base = Path(tempfile.mkdtemp(prefix="rsm-slurm-"))
        self.base.chmod(0o755)  # munged (user munge) must reach its socket directory
        self.keep_logs_in = keep_logs_in
        self.node = socket.gethostname().split(".")[0]
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.ports = {name: free_port() for name in ("mysql", "slurmdbd", "slurmctld", "slurmd")}
        self.etc = self.base / "etc"
        self.conf = self.etc / "slurm.conf"
        self.munge_socket = self.base / "munge" / "munge.sock"
        self._linked_run_conf = False
        self._made_run_slurm = False

    # -- environment -------------------------------------------------------------------------

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        for var in list(env):
            if var.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")):
                del env[var]
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=timeout)
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        return proc.stdout

    # -- start -------------------------------------------------------------------------------

    def start(self) -> SlurmCluster:
        t0 = time.monotonic()
        for sub in ("etc", "munge", "db", "state", "spool", "log"):
            (self.base / sub).mkdir()
        self._write_config()
        self._start_munge()
        self._start_mariadb()
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        self._wait(self._dbd_up, "slurmdbd", 30)
        self.run("sacctmgr", "-i", "add", "cluster", CLUSTER)
        self.run("sacctmgr", "-i", "add", "account", ACCOUNT, "Description=rsm-eval tests",
                 "Organization=rsm-eval")  # fmt: skip
        self.run("sacctmgr", "-i", "add", "user", "root", f"Account={ACCOUNT}")
        self._link_run_conf()
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node])
        self._wait(self._node_idle, "slurmd to register as idle", 30)
        self.started_in = time.monotonic() - t0
        return self

    def _write_config(self) -> None:
        b = self.base
        (self.etc / "slurm.conf").write_text(
            f"""\
ClusterName={CLUSTER}
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={self.ports["slurmctld"]}
SlurmdPort={self.ports["slurmd"]}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool
SlurmctldPidFile={b}/state/slurmctld.pid
SlurmdPidFile={b}/state/slurmd.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.ports["slurmdbd"]}
AccountingStoragePass={self.munge_socket}
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs=16 Boards=1 SocketsPerBoard=1 CoresPerSocket=16 \
ThreadsPerCore=1 RealMemory=131072 Gres=gpu:2 State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        (self.etc / "gres.conf").write_text("Name=gpu File=/dev/null\nName=gpu File=/dev/zero\n")
        dbd = self.etc / "slurmdbd.conf"  # read from SLURM_CONF's directory
        dbd.write_text(
            f"""\
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.ports["slurmdbd"]}
SlurmUser=root
PidFile={b}/state/slurmdbd.pid
LogFile={b}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports["mysql"]}
StorageUser=root
StorageLoc=slurm_acct_db
"""
        )
        dbd.chmod(0o600)

    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        d = self.base / "munge"
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        for path in (d, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        self._spawn(
            "munged",
            [
                "munged", "-F", "--num-threads=4",
                f"--socket={self.munge_socket}", f"--key-file={key}",
                f"--log-file={d}/munged.log", f"--pid-file={d}/munged.pid",
                f"--seed-file={d}/munged.seed",
            ],
            user=munge.pw_uid,
            group=munge.pw_gid,
        )  # fmt: skip
        self._wait(self.munge_socket.exists, "munged", 10)

    def _start_mariadb(self) -> None:
        data = self.base / "db" / "data"
        subprocess.run(
            [
                "mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                "--auth-root-authentication-method=normal", "--skip-test-db",
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self._spawn(
            "mariadbd",
            [
                "mariadbd", "--no-defaults", "--user=root", f"--datadir={data}",
                f"--socket={self.base}/db/mysql.sock", f"--port={self.ports['mysql']}",
                "--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-name-resolve",
                f"--pid-file={self.base}/db/mariadbd.pid",
                f"--log-error={self.base}/log/mariadbd.log",
                "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=64M",
                "--innodb-lock-wait-timeout=900",
            ],
        )  # fmt: skip

        def accepting() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.ports["mysql"])) == 0

        self._wait(accepting, "mariadbd", 60)

    def _link_run_conf(self) -> None:
        if RUN_CONF.is_symlink():  # stale link from an earlier run that was killed
            RUN_CONF.unlink()
        if not RUN_CONF.parent.exists():
            RUN_CONF.parent.mkdir(parents=True)
            self._made_run_slurm = True
        RUN_CONF.symlink_to(self.etc)
        self._linked_run_conf = True

    def _spawn(self, name: str, cmd: list[str], **kwargs) -> None:
        log = open(self.base / "log" / f"{name}.out", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
            **kwargs,
        )
        log.close()
        self.procs.append((name, proc))

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise ClusterError(f"{name} exited ({proc.returncode}):\n{self.logs(name)}")
            if ready():
                return
            time.sleep(0.2)
        raise ClusterError(f"timed out after {timeout} s waiting for {what}:\n{self.logs()}")

    def _dbd_up(self) -> bool:
        proc = subprocess.run(
            ["sacctmgr", "-n", "list", "cluster"], capture_output=True, text=True, env=self.env()
        )
        return proc.returncode == 0 and "error" not in proc.stderr

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%t", check=False).split()
        return out == ["idle"]

    # -- queries -----------------------------------------------------------------------------

    def sacct(self, *extra: str) -> list[str]:
        out = self.run(
            "sacct", "-X", "--parsable2", "--noheader", f"--format={SACCT_FORMAT}",
            "--starttime", "now-1hour", *extra,
        )  # fmt: skip
        return [line for line in out.splitlines() if line.strip()]

    def logs(self, *names: str) -> str:
        parts = []
        for path in sorted((self.base / "log").glob("*")):
            if not names or path.stem in names:
                text = path.read_text(errors="replace").splitlines()[-30:]
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # -- stop --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel our jobs, stop every daemon we started (by PID), remove what we made."""
        if any(n == "slurmctld" and p.poll() is None for n, p in self.procs):
            with contextlib.suppress(Exception):
                self.run("scancel", "--full", "-u", "root", check=False, timeout=10)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and self.run("squeue", "-h", check=False):
                    time.sleep(0.5)
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.procs.clear()
        if self._linked_run_conf and RUN_CONF.is_symlink():
            RUN_CONF.unlink()
            if self._made_run_slurm:
                with contextlib.suppress(OSError):
                    RUN_CONF.parent.rmdir()
        if self.keep_logs_in is not None:
            with contextlib.suppress(OSError):
                shutil.copytree(self.base / "log", self.keep_logs_in, dirs_exist_ok=True)
        shutil.rmtree(self.base, ignore_errors=True)
