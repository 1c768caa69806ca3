#!/usr/bin/python3
"""eBPF benchmarks (issue 5): event latency, overhead on onepanel, syscall cost.

1. Event latency, eBPF mode and procfs mode in the same run: a process that
   is onepanel (a copy of sleep named by onepanel.binary) is started and
   killed N times; for each FOUND (exec) and STOP (exit) the time from the
   kernel's hook (the event's kernel_ns field: the BPF program's timestamp,
   or the proc connector's) to the moment an SSE subscriber has read the
   event. p50/p99 over N events of each kind.
2. Overhead on onepanel: nginx (1 worker) under wrk, requests/s with
   (a) no agent, (b) the agent tracking nginx in eBPF mode with its always-on
   probes (process events + scheduler delay), (c) the same with a syscall
   investigation running, (e) the same after a 1 s investigation has
   ended (its probes detached), (d) the agent in procfs mode; rounds
   interleaved, medians, ratios to (a).
3. getpid() ns/call of a process that is NOT onepanel in states a, b, c, e.

    make bench-ebpf [BENCH_ARGS="--events 1000 --seconds 8 --rounds 3"]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Agent:
    def __init__(self, workdir, onepanel_lines, env_extra=None, name="agent"):
        self.port = free_port()
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        cfg = os.path.join(self.dir, "agent.yaml")
        with open(cfg, "w") as f:
            f.write("onepanel:\n" + "".join(f"  {l}\n" for l in onepanel_lines))
            f.write(f"api:\n  auth: false\n  rest_listen: 127.0.0.1:{self.port}\n  grpc_listen: off\n")
            f.write("metrics:\n  interval: 1s\nevents:\n  journal_size: 65536\n")
        env = dict(os.environ, **(env_extra or {}))
        self.log = open(os.path.join(self.dir, "agent.log"), "w")
        self.proc = subprocess.Popen([AGENT, "-c", cfg], stdout=self.log, stderr=self.log, env=env)
        end = time.monotonic() + 20
        while True:
            try:
                self.status = http(self.port, "GET", "/v1/status")[1]
                break
            except OSError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    raise SystemExit(f"agent did not start; see {self.log.name}")
                time.sleep(0.05)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        self.log.close()


class SSE:
    """Minimal blocking SSE reader on a raw socket (no thread: the reader is
    the measuring loop itself, so a read returning is the receive time)."""

    def __init__(self, port, path):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        self.buf = self.buf.split(b"\r\n\r\n", 1)[1]

    def next(self):
        """Next event's data (dict) and the monotonic ns at which it was read."""
        while True:
            # chunked transfer: strip chunk-size lines lazily by scanning for data: lines
            i = self.buf.find(b"\n\n")
            while i < 0:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise SystemExit("event stream closed")
                self.buf += chunk
                i = self.buf.find(b"\n\n")
            t = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            block, self.buf = self.buf[:i], self.buf[i + 2:]
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    return json.loads(line[6:]), t

    def close(self):
        self.s.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def latency(workdir, mode, n):
    target = os.path.join(workdir, "osb-target")
    if not os.path.exists(target):
        shutil.copy("/bin/sleep", target)
    env = {"ONESHIELD_FORCE_PROCFS": "1"} if mode == "procfs" else {}
    a = Agent(workdir, [f"binary: {target}"], env, name=f"lat-{mode}")
    assert a.status["mode"] == mode, a.status
    sse = SSE(a.port, "/v1/events/stream?type=ONEPANEL_FOUND_MESSAGE,ONEPANEL_STOP_MESSAGE")
    found, stop = [], []
    try:
        for _ in range(n):
            # posix_spawn (vfork): back here as soon as the child has exec'd,
            # so the reader is waiting before the event can arrive
            pid = os.posix_spawn(target, [target, "600"], os.environ)
            while True:
                e, t = sse.next()
                if e["type"] == "ONEPANEL_FOUND_MESSAGE" and e["pid"] == pid:
                    if "kernel_ns" not in e["fields"]:
                        raise SystemExit(f"no kernel_ns: {e}")
                    found.append((t - int(e["fields"]["kernel_ns"])) / 1000.0)
                    break
            os.kill(pid, signal.SIGKILL)
            while True:
                e, t = sse.next()
                if e["type"] == "ONEPANEL_STOP_MESSAGE" and e["pid"] == pid:
                    if "kernel_ns" not in e["fields"]:
                        raise SystemExit(f"no kernel_ns: {e}")
                    stop.append((t - int(e["fields"]["kernel_ns"])) / 1000.0)
                    break
            os.waitpid(pid, 0)
    finally:
        sse.close()
        a.stop()
    return found, stop


NGINX_CONF = """worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "hello\\n"; }}
    }}
}}
"""


def start_nginx(workdir):
    d = os.path.join(workdir, "nginx")
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    os.chmod(workdir, 0o755)
    os.chmod(d, 0o755)
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(d=d, port=port))
    p = subprocess.Popen(["/usr/sbin/nginx", "-p", d, "-c", conf], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    end = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            return p, port, d
        except OSError:
            if time.monotonic() > end:
                raise SystemExit("nginx did not start")
            time.sleep(0.05)


def wrk(port, seconds):
    out = subprocess.run(["wrk", "-t2", "-c50", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit("no Requests/sec in wrk output:\n" + out)


def getpid_ns(runs=3, n=5000000):
    return statistics.median(float(subprocess.run([GETPID, str(n)], capture_output=True, text=True,
                                                  check=True).stdout) for _ in range(runs))


def overhead(workdir, seconds, rounds, investigate_s):
    ng, port, d = start_nginx(workdir)
    lines = ["binary: /usr/sbin/nginx", f"pid_file: {d}/nginx.pid"]
    rps = {k: [] for k in "abcde"}
    gp = {k: [] for k in "abce"}
    notes = []
    try:
        for r in range(rounds):
            order = ["a", "b", "c", "e", "d"] if r % 2 == 0 else ["d", "e", "c", "b", "a"]
            for state in order:
                a = None
                if state in "bce":
                    a = Agent(workdir, lines, name=f"ovh-{r}-{state}")
                    if a.status["mode"] != "ebpf":
                        raise SystemExit(f"agent not in eBPF mode: {a.status.get('mode_reason')}")
                elif state == "d":
                    a = Agent(workdir, lines, {"ONESHIELD_FORCE_PROCFS": "1"}, name=f"ovh-{r}-{state}")
                try:
                    if state == "c":
                        code, body = http(a.port, "POST", "/v1/probes/syscalls", {"duration_s": investigate_s})
                        if code not in (200, 201, 202):
                            raise SystemExit(f"could not start an investigation: {code} {body}")
                    if state == "e":
                        # an investigation that has ended: the probes must be gone
                        code, body = http(a.port, "POST", "/v1/probes/syscalls", {"duration_s": 1})
                        if code not in (200, 201, 202):
                            raise SystemExit(f"could not start an investigation: {code} {body}")
                        end = time.monotonic() + 30
                        while http(a.port, "GET", "/v1/probes/syscalls")[1].get("state") != "finished":
                            if time.monotonic() > end:
                                raise SystemExit("the 1 s investigation did not finish")
                            time.sleep(0.1)
                    rps[state].append(wrk(port, seconds))
                    if state in gp:
                        gp[state].append(getpid_ns())
                    if state == "c":
                        code, body = http(a.port, "GET", "/v1/probes/syscalls")
                        if r == 0 and code == 200:
                            top = sorted(body.get("syscalls", []), key=lambda s: -s["count"])[:3]
                            notes.append("investigation saw: " + ", ".join(
                                f"{s['name']} {s['count']} (p99 {s['p99_us']:.1f} us)" for s in top))
                finally:
                    if a:
                        a.stop()
    finally:
        ng.send_signal(signal.SIGQUIT)
        ng.wait(timeout=20)
    return rps, gp, notes


def main():
    global AGENT, GETPID
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--getpid", required=True)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    args = ap.parse_args()
    AGENT, GETPID = os.path.abspath(args.agent), os.path.abspath(args.getpid)
    if os.geteuid() != 0:
        raise SystemExit("needs root (eBPF)")
    with tempfile.TemporaryDirectory(prefix="osb-ebpf-") as w:
        if not args.skip_latency:
            print(f"== event latency: kernel hook -> SSE subscriber, {args.events} starts and kills per mode")
            print(f"{'mode':8} {'event':6} {'n':>5} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} {'max us':>9}")
            for mode in ("ebpf", "procfs"):
                f, s = latency(w, mode, args.events)
                for name, xs in (("FOUND", f), ("STOP", s)):
                    print(f"{mode:8} {name:6} {len(xs):5d} {pct(xs, 50):9.1f} {pct(xs, 90):9.1f} "
                          f"{pct(xs, 99):9.1f} {max(xs):9.1f}")
        if not args.skip_overhead:
            if not shutil.which("wrk") or not os.path.exists("/usr/sbin/nginx"):
                raise SystemExit("needs nginx and wrk (scripts/deps.sh all)")
            print(f"\n== overhead: nginx (1 worker) under wrk -t2 -c50, {args.seconds} s x {args.rounds} rounds; "
                  "getpid() of a process that is not onepanel")
            rps, gp, notes = overhead(w, args.seconds, args.rounds, args.seconds * 3 + 30)
            base = statistics.median(rps["a"])
            names = {"a": "no agent", "b": "agent, eBPF always-on probes", "c": "agent + syscall investigation",
                     "e": "agent, investigation ended", "d": "agent, procfs mode"}
            print(f"{'state':34} {'req/s':>10} {'ratio':>7} {'getpid ns':>10}")
            for k in "abced":
                m = statistics.median(rps[k])
                g = f"{statistics.median(gp[k]):10.1f}" if k in gp else f"{'-':>10}"
                print(f"{names[k]:34} {m:10.0f} {m / base:7.3f} {g}")
            for n in notes:
                print(n)


if __name__ == "__main__":
    main()
