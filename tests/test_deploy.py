"""Deployment files, run for real: the systemd user unit and the SLURM templates.

The unit is checked three ways: its keys (always, with a small parser), ``systemd-analyze verify``
(where systemd is installed), and its ``ExecStart=`` expanded as systemd would and run as a real
daemon that must notify ``READY=1``. The SLURM scripts run under bash with the variables SLURM
would set and no scheduler (``#SBATCH`` lines are comments): the daemon job, array tasks that
stream over the socket or, from "another node", through the spool, and ``submit-at-end.sh``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket as socketlib
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DIR_OUTPUT, _readline, integrity_ok, lensd_cli
from test_watch import stored, until

import lensd

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "lensd.service"
SLURM = ROOT / "slurm"
BIN = Path(sys.executable).parent
HOST = socketlib.gethostname()
# Options that need privileges, or user namespaces that many clusters disable, in a user unit.
NOT_FOR_USER_UNITS = {"User", "Group", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                      "PrivateNetwork", "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
                      "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths", "CapabilityBoundingSet",
                      "AmbientCapabilities", "DynamicUser", "PrivateUsers"}


def unit_keys(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, in order (a key such as Environment= may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{line!r} before any section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def expand(value: str, specifiers: dict[str, str], env: dict[str, str]) -> list[str]:
    """An ExecStart= line as systemd runs it: %-specifiers, then $VAR split into words, ${VAR} kept whole."""
    words: list[str] = []
    for word in re.sub(r"%(.)", lambda m: specifiers[m.group(1)], value).split():
        if re.fullmatch(r"\$[A-Za-z_]\w*", word):
            words += env.get(word[1:], "").split()
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return words


def test_the_unit_is_a_notifying_user_service_that_restarts_on_failure() -> None:
    unit = unit_keys(UNIT)
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert service["Restart"] == ["on-failure"]
    [exec_start] = service["ExecStart"]
    assert re.match(r"\S*/lensd start --foreground( |$)", exec_start), exec_start
    assert "--db" not in exec_start and any(v.startswith("LENSD_DB=") for v in service["Environment"])
    assert unit["Install"]["WantedBy"] == ["default.target"]  # a user manager has no multi-user.target
    for hardening in ("NoNewPrivileges", "RestrictSUIDSGID", "LockPersonality", "SystemCallFilter",
                      "RestrictAddressFamilies", "UMask"):
        assert hardening in service, f"{hardening}= is missing"
    assert not NOT_FOR_USER_UNITS & set(service), "options a user manager cannot apply everywhere"
    assert service["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert service["UMask"] == ["0077"]


@pytest.fixture
def home(short_tmp: Path) -> Path:
    """A home folder whose ~/.local/bin/lensd is this checkout's lensd (as pip install --user puts it)."""
    folder = short_tmp / "home"
    (folder / ".local" / "bin").mkdir(parents=True)
    (folder / ".local" / "bin" / "lensd").symlink_to(BIN / "lensd")
    return folder


def verify(*args: str, home: Path, runtime: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args, "verify", str(UNIT)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)})


def test_systemd_analyze_verify_finds_nothing_but_a_missing_binary(home: Path, short_tmp: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed; the unit's keys are checked by the test above")
    runtime = short_tmp / "run"
    runtime.mkdir(mode=0o700)
    for mode in ((), ("--user",)):
        found = verify(*mode, home=home, runtime=runtime)
        assert (found.returncode, found.stdout + found.stderr) == (0, ""), mode
        elsewhere = verify(*mode, home=short_tmp / "nobody", runtime=runtime)
        problems = (elsewhere.stdout + elsewhere.stderr).strip().splitlines()
        assert len(problems) == 1 and "/.local/bin/lensd is not executable" in problems[0], problems


def test_the_units_command_starts_a_daemon_that_tells_systemd_it_is_ready(home: Path, short_tmp: Path) -> None:
    """ExecStart= and Environment= run as systemd would, with an env file of the kind the unit documents."""
    service = unit_keys(UNIT)["Service"]
    runtime, state, config = short_tmp / "run", short_tmp / "state", short_tmp / "config"
    runtime.mkdir(mode=0o700)
    (config / "lensd").mkdir(parents=True)
    spool = short_tmp / "spool"
    (config / "lensd" / "lensd.env").write_text(f"LENSD_OPTIONS=--spool {spool} --lost-after 30\n")
    specifiers = {"h": str(home), "S": str(state), "t": str(runtime), "E": str(config), "%": "%"}
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    for assignment in service["Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = expand(value, specifiers, env)[0] if value else ""
    [env_file] = service["EnvironmentFile"]
    for line in Path(expand(env_file.lstrip("-"), specifiers, env)[0]).read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    for directory in service["StateDirectory"]:
        (state / directory).mkdir(parents=True, mode=int(service["StateDirectoryMode"][0], 8))
    command = expand(service["ExecStart"][0], specifiers, env)
    assert command[:3] == [str(home / ".local/bin/lensd"), "start", "--foreground"]

    with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM) as notify:
        notify.bind(str(short_tmp / "notify"))
        notify.settimeout(60)
        process = subprocess.Popen(command, env={**env, "NOTIFY_SOCKET": str(short_tmp / "notify")},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: os.umask(int(service["UMask"][0], 8)))
        try:
            assert notify.recv(256) == b"READY=1"
            socket_path = runtime / "lensd.sock"  # %t/lensd.sock: where every lensd command looks
            assert socket_path.stat().st_mode & 0o777 == 0o600
            report = lensd_cli("status", "--format", "json", env={"LENSD_SOCKET": str(socket_path)})
            assert report.returncode == 0, report.stderr
            assert '"lost_after": 30' in report.stdout and spool.is_dir()  # LENSD_OPTIONS were applied
            database = state / "lensd" / "lensd.sqlite"
            assert database.stat().st_mode & 0o777 == 0o600
            process.send_signal(signal.SIGTERM)  # what `systemctl --user stop lensd` sends
            assert notify.recv(256) == b"STOPPING=1"
            assert process.wait(60) == 0  # exit 0: Restart=on-failure leaves it stopped
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)


# --- SLURM -------------------------------------------------------------------------------------

SCRIPTS = sorted(p for p in SLURM.iterdir() if p.suffix in {".sbatch", ".sh"})


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_slurm_scripts_parse_and_explain_their_variables(script: Path) -> None:
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n")
    header = text[:text.index("\nset -euo pipefail")]
    assert "# Variables" in header
    for name in set(re.findall(r"^(\w+)=\$\{\1:-", text, flags=re.M)):  # every NAME=${NAME:-default}
        assert re.search(rf"^#\s+{name}\s", header, flags=re.M), f"{script.name}: {name} is not explained"


def test_the_three_templates_are_there() -> None:
    assert {p.name for p in SCRIPTS} == {"lensd-daemon.sbatch", "fit-array.sbatch", "submit-at-end.sh"}


def slurm_env(shared: Path, task: int | None = None, **extra: str) -> dict[str, str]:
    """What a job sees: this checkout's lensd on PATH, SLURM's variables, no scheduler."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LENSD_"))}
    env = {**clean, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "LENSD_SHARED": str(shared),
           "SLURM_JOB_ID": "4300", **extra}
    if task is not None:
        env |= {"SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": str(task), "SLURM_JOB_ID": str(4300 + task)}
    return env


def run_script(name: str, *args: str, env: dict[str, str],
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SLURM / name), *args], capture_output=True, text=True, timeout=120, env=env,
                          cwd=cwd)


def fits_by_tag(db: Path) -> dict[str, lensd.store.reader.Fit]:
    agg = lensd.Aggregator.from_database(db)
    try:
        return {str(fit.unique_tag): fit for fit in agg.fits()}
    finally:
        agg.close()


def test_an_array_task_on_the_daemons_node_streams_its_fit_over_the_socket(make_daemon, shared) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon()
    (shared / "lensd.env").write_text(f"LENSD_NODE={HOST}\nLENSD_SOCKET={daemon.socket}\n"
                                      f"LENSD_SPOOL={shared / 'spool'}\n")
    task = run_script("fit-array.sbatch", env=slurm_env(shared, task=1))
    assert task.returncode == 0, task.stderr
    assert "dataset lens_b: streaming to the daemon" in task.stdout and "(applied)" in task.stdout

    fit = fits_by_tag(daemon.db)["lens_b"]  # acknowledged, so committed: no waiting
    assert (fit.status, fit.name, fit.n_samples, fit.progress) == ("completed", "gaussian", 8000, 1.0)
    assert fit.job is not None and (fit.job["SLURM_ARRAY_JOB_ID"], fit.job["SLURM_ARRAY_TASK_ID"]) == ("4242", "1")
    agg = lensd.Aggregator.from_database(daemon.db)
    assert [f.id for f in agg.query((agg.model.centre > 0) & (agg.job["SLURM_ARRAY_TASK_ID"] == 1)).fits()] == [fit.id]
    agg.close()
    assert not (shared / "spool").exists()

    beyond = run_script("fit-array.sbatch", env=slurm_env(shared, task=3))
    assert beyond.returncode == 1 and "has no line 4 for task 3" in beyond.stderr


def test_an_array_task_on_another_node_spools_and_the_daemon_ingests_it(make_daemon, shared) -> None:  # type: ignore[no-untyped-def]
    spool = shared / "spool"
    daemon = make_daemon("--spool", str(spool), "--poll", "--poll-interval", "0.1")
    (shared / "lensd.env").write_text(f"LENSD_NODE=node-that-is-not-{HOST}\nLENSD_SOCKET=/nonexistent/lensd.sock\n"
                                      f"LENSD_SPOOL={spool}\n")
    task = run_script("fit-array.sbatch", env=slurm_env(shared, task=2))
    assert task.returncode == 0, task.stderr
    assert "not on the daemon's node, spooling" in task.stdout and "(spooled)" in task.stdout
    until(lambda: fits_by_tag(daemon.db).get("lens_c") and not list(spool.glob("*.lensd")), daemon.db.parent,
          spool, what="the spooled fit")
    assert fits_by_tag(daemon.db)["lens_c"].status == "completed"

    folder = next(DIR_OUTPUT.rglob("d84750cd075cd129a33ac035b98cf1c4"))  # plain PyAutoFit output
    sent = run_script("submit-at-end.sh", str(folder), env=slurm_env(shared))
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.split() == ["spooled", folder.name]
    until(lambda: folder.name in stored(daemon.db) and not list(spool.glob("*.lensd")), daemon.db.parent, spool,
          what="the submitted folder")


def start_daemon_job(env: dict[str, str], started: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], str]:
    """Run lensd-daemon.sbatch; returns it and what it printed until it said where jobs find it."""
    job = subprocess.Popen(["bash", str(SLURM / "lensd-daemon.sbatch")], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    started.append(job)
    printed = ""
    while "jobs read these from" not in printed:
        line = _readline(job, 60)
        assert line, f"the daemon job stopped talking: {printed!r}"
        printed += line
    return job, printed


def end_of_time_limit(job: subprocess.Popen[str]) -> str:
    """SLURM's --signal=B:USR1@300: the job stops its daemon, backs up, exits; nothing stays running."""
    job.send_signal(signal.SIGUSR1)
    rest, _ = job.communicate(timeout=120)
    assert job.returncode == 0, rest
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pid, 0)  # no process of the job is left
    return rest


def test_the_daemon_job_says_where_it_is_and_backs_up_when_its_time_is_up(shared, short_tmp, daemon_jobs) -> None:  # type: ignore[no-untyped-def]
    secret = str(short_tmp / "home" / "secret")  # ~/.lensd/secret on a cluster
    env = slurm_env(shared, LENSD_LOCAL=str(short_tmp / "node1"), LENSD_BACKUP_EVERY="0", LENSD_SECRET_FILE=secret)
    job, printed = start_daemon_job(env, daemon_jobs)
    where = dict(line.split("=", 1) for line in (shared / "lensd.env").read_text().splitlines())
    assert where["LENSD_NODE"] == HOST and where["LENSD_SPOOL"] == str(shared / "spool")
    assert where["LENSD_DAEMON_JOB"] == "4300"
    for fact in ("LENSD_SOCKET", "LENSD_SPOOL", "LENSD_DB"):
        assert where[fact] in printed
    assert Path(where["LENSD_SOCKET"]).parent.stat().st_mode & 0o777 == 0o700
    assert Path(where["LENSD_DB"]).is_relative_to(short_tmp / "node1")

    task = run_script("fit-array.sbatch", env=slurm_env(shared, task=0))  # finds the daemon by lensd.env
    assert task.returncode == 0 and "(applied)" in task.stdout, task.stdout + task.stderr
    assert where["LENSD_CONTACT"] == str(shared / "contact.json")
    contact = json.loads((shared / "contact.json").read_text())
    assert contact["tcp"] and contact["tcp"][0]["port"] > 0 and contact["host"] == HOST
    elsewhere = slurm_env(shared, task=1, LENSD_NODE="another-node", LENSD_SECRET_FILE=secret)  # another node
    task = run_script("fit-array.sbatch", env=elsewhere)
    assert task.returncode == 0 and "over TCP" in task.stdout and "(applied)" in task.stdout, task.stdout + task.stderr
    folder = next(DIR_OUTPUT.rglob("d84750cd075cd129a33ac035b98cf1c4"))
    sent = run_script("submit-at-end.sh", str(folder), env=slurm_env(shared))
    assert sent.stdout.split() == ["applied", folder.name], sent.stderr

    rest = end_of_time_limit(job)
    assert "backed up to" in rest and "stopped (exit 0)" in rest
    assert not (shared / "lensd.env").exists() and not Path(where["LENSD_SOCKET"]).parent.exists()
    backup = shared / "backup" / "lensd.sqlite"
    assert set(fits_by_tag(backup)) == {"lens_a", "lens_b", "gaussian_b"}
    assert not (shared / "contact.json").exists()  # a clean stop removes it
    assert backup.read_bytes()[18] == 1  # a rollback-journal file: readable without -wal/-shm beside it

    # the next daemon job lands on another node with an empty local disk: it starts from the backup
    env["LENSD_LOCAL"] = str(short_tmp / "node2")
    job, printed = start_daemon_job(env, daemon_jobs)
    assert f"restored from {backup}" in printed
    where = dict(line.split("=", 1) for line in (shared / "lensd.env").read_text().splitlines())
    answer = lensd_cli("query", 'unique_tag == "lens_a"', "--format", "json", "--socket", where["LENSD_SOCKET"])
    assert answer.returncode == 0 and '"lens_a"' in answer.stdout, answer.stderr
    end_of_time_limit(job)


# --- docs/operating.md -------------------------------------------------------------------------

def operating_block(first_line: str) -> str:
    page = (ROOT / "docs" / "operating.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", page, flags=re.S | re.M)
    [body] = [str(b) for b in blocks if b.startswith(first_line)]
    return body


def test_the_backup_recipe_copies_a_database_while_the_daemon_writes_it(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon()
    recipe = short_tmp / "backup.py"
    recipe.write_text(operating_block("# backup.py"))
    writer = subprocess.Popen([sys.executable, str(ROOT / "tests" / "workers.py"), "submit", str(daemon.socket),
                               "0", "400"], stdout=subprocess.PIPE, text=True)
    try:
        assert _readline(writer, 60).startswith("ack fit-0")  # the writer is under way
        backup = short_tmp / "shared" / "lensd.sqlite"
        backup.parent.mkdir()
        made = subprocess.run([sys.executable, str(recipe), str(daemon.db), str(backup)], capture_output=True,
                              text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        rest, _ = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(30)
    assert writer.returncode == 0 and rest.rstrip().endswith("done")
    assert integrity_ok(backup) and backup.read_bytes()[18] == 1  # whole, and a rollback-journal file
    assert not list(backup.parent.glob("*.partial")) and not list(backup.parent.glob("*-wal"))
    copied = set(stored(backup))
    print(f"the backup holds {len(copied)} of the 400 fits")
    assert "fit-0" in copied and copied <= set(stored(daemon.db))
    assert len(stored(daemon.db)) == 400
