"""Helpers for black-box tests that run onepanel-sim.

Every wait here is a poll with a deadline; nothing sleeps to synchronise.

    from simhelpers import Sim, wait_for

    with Sim(tmp_path, workers=2, message="v1") as sim:   # started, port known
        assert "v1" in sim.get("/").text
        mark = sim.error_mark()
        sim.reload(message="v2")                           # rewrite + SIGHUP + wait
        sim.control("critical disk full")
        sim.wait_error_log(r"\\[crit\\] \\d+#\\d+: disk full", since=mark)

The binary comes from $SIM_BIN (default: build/onepanel-sim under the
repository root).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_TIMEOUT = 10.0

# nginx "combined": $remote_addr - $remote_user [$time_local] "$request"
# $status $body_bytes_sent "$http_referer" "$http_user_agent"
COMBINED_RE = re.compile(
    r'^(?P<addr>\S+) - (?P<user>\S+) \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<ua>[^"]*)"'
    r'(?P<extended> rt=(?P<rt>\d+\.\d{3}) urt=(?P<urt>\d+\.\d{3}|-))?$'
)

# nginx error log: 2026/11/26 04:14:47 [level] PID#TID: message
ERROR_LINE_RE = re.compile(
    r"^(?P<date>\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) \[(?P<level>emerg|alert|crit|error|warn|notice|info|debug)\] "
    r"(?P<pid>\d+)#(?P<tid>\d+): (?P<msg>.*)$"
)

PANIC_RECORD = (
    "panic: runtime error: invalid memory address or nil pointer dereference\n"
    "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a5b3c]\n"
    "\n"
    "goroutine 1 [running]:\n"
    "main.(*Server).handle(...)\n"
    "\t/src/onepanel/server.go:142 +0x1d\n"
    "main.main()\n"
    "\t/src/onepanel/main.go:57 +0x85\n"
    "exit status 2\n"
)


def sim_bin() -> str:
    """Path of the onepanel-sim binary under test."""
    env = os.environ.get("SIM_BIN")
    if env:
        return env
    return str(REPO_ROOT / "build" / "onepanel-sim")


class WaitAborted(Exception):
    """Raised by a wait_for predicate to stop waiting at once (e.g. the
    process died); wait_for lets it through."""


def wait_for(pred: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT, interval: float = 0.02,
             desc: str = "condition") -> Any:
    """Call pred() until it returns something truthy; return that value.

    Other exceptions raised by pred count as "not yet" (WaitAborted stops the
    wait). Raises TimeoutError after `timeout` seconds, mentioning `desc` and
    the last exception."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except WaitAborted:
            raise
        except Exception as exc:  # noqa: BLE001 - "not yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {desc}{extra}")
        time.sleep(interval)


def wait_exit(proc: subprocess.Popen, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Wait for a process to exit; return its returncode (negative = signal)."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"process {proc.pid} did not exit within {timeout:.1f}s") from None


def proc_children(pid: int) -> list[int]:
    """Child pids of `pid` (from /proc/PID/task/*/children, or a /proc scan)."""
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except FileNotFoundError:
        return []
    found_file = False
    for t in tasks:
        try:
            text = (t / "children").read_text()
            found_file = True
        except FileNotFoundError:
            continue
        kids.extend(int(x) for x in text.split())
    if found_file:
        return sorted(set(kids))
    for entry in Path("/proc").iterdir():  # kernels without CONFIG_PROC_CHILDREN
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            kids.append(int(entry.name))
    return sorted(kids)


def pid_gone(pid: int) -> bool:
    """True if the process no longer exists or is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def http_session() -> requests.Session:
    """A session that ignores proxy settings from the environment."""
    s = requests.Session()
    s.trust_env = False
    return s


def render_config(directives: dict[str, Any]) -> str:
    """nginx-like text for {"listen": "127.0.0.1:0", "message": "hi", ...}.

    None values are left out; strings with spaces or specials are quoted."""
    lines = ["# generated by simhelpers"]
    for key, value in directives.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        value = str(value)
        if value == "" or re.search(r'[\s;#"\'\\]', value):
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{key} {value};")
    return "\n".join(lines) + "\n"


class Sim:
    """One onepanel-sim master running in `workdir` (a pytest tmp_path).

    Keyword arguments override/extend the default directives; pass None to
    drop a default (e.g. control_file=None)."""

    def __init__(self, workdir: os.PathLike | str, binary: Optional[str] = None,
                 **directives: Any) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or sim_bin()
        self.config_path = self.dir / "onepanel-sim.conf"
        self.pid_file = self.dir / "onepanel-sim.pid"
        self.access_log = self.dir / "access.log"
        self.error_log = self.dir / "error.log"
        self.control_file = self.dir / "control"
        self.stderr_path = self.dir / "sim.stderr"
        self.directives: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "pid_file": str(self.pid_file),
            "access_log": str(self.access_log),
            "error_log": str(self.error_log),
            "control_file": str(self.control_file),
            "workers": 1,
        }
        self.directives.update(directives)
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.host = "127.0.0.1"   # "[::1]" style for IPv6
        self.generation = 1
        self.write_config()

    # ---- lifecycle ----

    def write_config(self, **changes: Any) -> None:
        self.directives.update(changes)
        self.config_path.write_text(render_config(self.directives))

    def start(self, timeout: float = DEFAULT_TIMEOUT, wait: bool = True) -> "Sim":
        """Start the master and wait until it logged its listening port (or,
        without `listen`, its start line). wait=False only spawns it."""
        stderr = open(self.stderr_path, "ab")
        try:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=stderr, cwd=str(self.dir))
        finally:
            stderr.close()
        if not wait:
            return self
        listening = self.directives.get("listen") is not None

        def ready():
            if self.proc.poll() is not None:
                raise WaitAborted(f"onepanel-sim exited with {self.proc.returncode} during "
                                  f"startup: {self.stderr_text()}")
            text = self.error_text()
            if listening:
                m = re.search(r"\[notice\] \d+#\d+: listening on (\S+):(\d+)$", text, re.M)
                return (m.group(1), int(m.group(2))) if m else None
            return "onepanel-sim started" in text

        got = wait_for(ready, timeout, desc="onepanel-sim to start")
        if listening:
            host, self.port = got
            if host not in ("0.0.0.0", "[::]"):
                self.host = host
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        assert self.proc is not None
        return wait_exit(self.proc, timeout)

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> Optional[int]:
        """SIGTERM (then SIGKILL) the master if it is still running; reap it."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            kids = proc_children(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
            for k in kids:  # belt and braces: no stray workers after a test
                if not pid_gone(k):
                    try:
                        os.kill(k, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        return self.proc.returncode

    def __enter__(self) -> "Sim":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- processes ----

    def workers(self) -> list[int]:
        return proc_children(self.pid)

    def wait_workers(self, count: int, exclude: Iterable[int] = (),
                     timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        """Wait until the master has exactly `count` live children, none of
        them in `exclude`; return their pids."""
        excl = set(exclude)

        def check():
            kids = [k for k in self.workers() if not pid_gone(k)]
            if len(kids) == count and not excl.intersection(kids):
                return kids
            return None

        return wait_for(check, timeout, desc=f"{count} worker(s) not in {sorted(excl)}")

    # ---- logs ----

    def error_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_lines(self) -> list[str]:
        try:
            return self.access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def error_mark(self) -> int:
        """Current size of the error log: pass as `since` to wait_error_log."""
        try:
            return self.error_log.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_error_log(self, pattern: str, since: int = 0, count: int = 1,
                       timeout: float = DEFAULT_TIMEOUT, path: Optional[Path] = None) -> list[re.Match]:
        """Wait until `pattern` (multiline regex) matches `count` times in the
        error log after byte offset `since`; return the matches."""
        p = Path(path) if path else self.error_log
        rx = re.compile(pattern, re.M)

        def check():
            try:
                with open(p, "rb") as f:
                    f.seek(since)
                    text = f.read().decode(errors="replace")
            except FileNotFoundError:
                return None
            found = list(rx.finditer(text))
            return found if len(found) >= count else None

        return wait_for(check, timeout, desc=f"{pattern!r} x{count} in {p}")

    # ---- HTTP ----

    def url(self, path: str = "/") -> str:
        assert self.port, "no listen port"
        return f"http://{self.host}:{self.port}{path}"

    def get(self, path: str = "/", **kw: Any) -> requests.Response:
        """GET on a fresh connection (no keep-alive reuse across calls)."""
        kw.setdefault("timeout", 5)
        with http_session() as s:
            return s.get(self.url(path), **kw)

    def wait_message(self, message: str, timeout: float = DEFAULT_TIMEOUT) -> requests.Response:
        """Poll GET / until the body carries `message`."""
        def check():
            r = self.get("/")
            return r if r.status_code == 200 and f"message: {message}\n" in r.text else None
        return wait_for(check, timeout, desc=f"GET / to serve message {message!r}")

    # ---- control ----

    def control(self, command: str) -> None:
        """Append a command line to the control file (picked up within ~100 ms)."""
        with open(self.control_file, "a") as f:
            f.write(command.rstrip("\n") + "\n")

    def reload(self, expect_ok: bool = True, timeout: float = DEFAULT_TIMEOUT, **changes: Any) -> int:
        """Rewrite the config with `changes`, SIGHUP, wait for the outcome.

        Returns the error-log offset from before the reload."""
        if changes:
            self.write_config(**changes)
        mark = self.error_mark()
        self.signal(signal.SIGHUP)
        if expect_ok:
            self.generation += 1
            # a new error_log/access_log path takes effect with the reload
            new_error = Path(self.directives.get("error_log") or self.error_log)
            since = mark if new_error == self.error_log else 0
            self.wait_error_log(rf"\[notice\] \d+#\d+: reconfigured, generation {self.generation}$",
                                since=since, timeout=timeout, path=new_error)
            self.error_log = new_error
            if self.directives.get("access_log"):
                self.access_log = Path(self.directives["access_log"])
        else:
            self.wait_error_log(r"\[notice\] \d+#\d+: reload failed, keeping the old configuration$",
                                since=mark, timeout=timeout)
        return mark
