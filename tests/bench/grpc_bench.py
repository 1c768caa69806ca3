#!/usr/bin/python3
"""gRPC throughput of the agent: event fan-out and unary GetStatus.

Builds tests/bench/grpc_client.c (a C client on the gRPC core: Python could
not consume a million messages a second on this machine) into the build dir,
then, each time against a freshly started agent (ONESHIELD_TEST_EVENTS=1, so
POST /v1/test/events journals TEST_EVENT_MESSAGE events at a given rate):

  fan-out   N subscribers (Subscribe, types=[TEST_EVENT_MESSAGE]) while the
            agent emits RATE events/s for S seconds, at the goal rate and at
            lower ones, so the table shows where loss starts on this machine:
            events delivered and lost per subscriber, delivery latency
            (client CLOCK_REALTIME minus the event's time_unix_nano), the
            agent's CPU (all threads, and its core-loop thread alone) and RSS;
  unary     GetStatus with CONCURRENCY calls in flight.

The client reports its own CPU: with 2 cores, client and agent compete, so a
client near a full core means the figures are a lower bound for the agent.
Both CPU figures are also given per delivered message (us/msg), which is what
decides whether a rate can be carried at all: rate x subscribers x (agent +
client us/msg) must fit in the machine's cores.

After the fixed rates, a short search (--search-steps runs of
--search-seconds each, bisecting between the highest rate that met the goals
and the lowest that did not) finds the highest rate with zero loss and p99
<= 1 ms on this machine as it is loaded now; when not even the lowest rate
makes it, a second search finds how many subscribers do at the lowest
fixed rate. The report ends with what one event costs to fan out (agent and
client CPU), which bounds the latency whatever the rate.

--baseline AGENT measures a second build in the same run (each rate and the
unary test alternately for both, fresh agents each time) and prints a
before/after table: compare builds only within one run, since the machine's
other load moves every figure.

    make bench-grpc [BENCH_ARGS="--rates 500,1000 --seconds 5"]
    make bench-grpc BENCH_ARGS="--baseline /tmp/base/build/oneshield-agent"
"""
import argparse
import json
import math
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CLK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))
TEST_EVENT = 12
MIB = 1024.0

GOAL_P99_US = 1000
GOAL_RSS_KIB = 16 * 1024
KEEP_UP_P99_US = 100_000


# ---- process sampling ----

def cpu_ticks(path):
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def agent_cpu(pid):
    """(all threads, core-loop thread) CPU seconds."""
    return cpu_ticks(f"/proc/{pid}/stat") / CLK, cpu_ticks(f"/proc/{pid}/task/{pid}/stat") / CLK


def mem(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[k] = int(v.split()[0])
    return out


class RssSampler(threading.Thread):
    def __init__(self, pid, period=0.1):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.max_rss = self.max_anon = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                m = mem(self.pid)
            except OSError:
                return
            self.max_rss = max(self.max_rss, m.get("VmRSS", 0))
            self.max_anon = max(self.max_anon, m.get("RssAnon", 0))
            self.stop.wait(self.period)


# ---- helpers ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, method="GET", timeout=10):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def wait_http(url, deadline=20):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            return http(url, timeout=2)
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"no answer from {url}")


def build_client(build):
    gen = os.path.join(build, "gen")
    pbc = os.path.join(gen, "oneshield/agent/v1/agent.pb-c.c")
    if not os.path.exists(pbc):
        raise SystemExit(f"{pbc} missing: run make BUILD={build} first")
    out = os.path.join(build, "grpc_bench_client")
    src = os.path.join(HERE, "grpc_client.c")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "grpc", "gpr", "libprotobuf-c"],
                           check=True, capture_output=True, text=True).stdout.split()
    cmd = ["gcc", "-O2", "-g", "-std=gnu11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-I", gen, "-o", out, src, pbc,
           *flags, "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stderr)
        raise SystemExit("cannot build the gRPC bench client")
    if r.stderr.strip():
        sys.stderr.write(r.stderr)
    return out


class Agent:
    def __init__(self, binary, tmp, journal_size, max_subscribers):
        self.rest, self.grpc = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.rest}"
        self.target = f"127.0.0.1:{self.grpc}"
        cfg = os.path.join(tmp, f"agent-{self.rest}.yaml")
        with open(cfg, "w") as f:
            f.write(f"api:\n  auth: false\n  rest_listen: 127.0.0.1:{self.rest}\n  grpc_listen: 127.0.0.1:{self.grpc}\n"
                    f"  max_subscribers: {max_subscribers}\n"
                    f"  limits: {{ max_streams_per_peer: {max_subscribers} }}\nevents:\n  journal_size: {journal_size}\n"
                    f"metrics:\n  interval: 1s\n")
        env = dict(os.environ, ONESHIELD_TEST_EVENTS="1")
        self.log = open(os.path.join(tmp, f"agent-{self.rest}.log"), "w")
        self.p = subprocess.Popen([binary, "-c", cfg], env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp)
        self.pid = self.p.pid
        wait_http(self.base + "/healthz")

    def last_seq(self):
        return int(json.loads(http(self.base + "/v1/status"))["events"]["last_seq"])

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def read_json_line(p, deadline):
    """The client's stdout: 'READY' lines and one JSON object."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([p.stdout], [], [], left)
        if not r:
            return None
        line = p.stdout.readline()
        if not line:
            return None
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)


# ---- fan-out ----

def run_fanout(args, client, tmp, rate, binary=None, seconds=None, subscribers=None):
    seconds = seconds or args.seconds
    subscribers = subscribers or args.subscribers
    count = rate * seconds
    agent = Agent(binary or args.agent, tmp, args.journal_size, max(subscribers, 1000))
    try:
        time.sleep(1.0)  # start-up work done
        idle = mem(agent.pid)
        after = agent.last_seq()
        timeout = max(3 * seconds, seconds + 30)
        cmd = [client, "fanout", "--target", agent.target, "--subscribers", str(subscribers),
               "--types", str(TEST_EVENT), "--after", str(after), "--expect", str(count),
               "--timeout", str(timeout), "--threads", str(args.client_threads)]
        if args.channels:
            cmd += ["--channels", str(args.channels)]
        cp = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 30
        while True:
            r, _, _ = select.select([cp.stdout], [], [], max(0.0, end - time.monotonic()))
            line = cp.stdout.readline() if r else ""
            if line.strip() == "READY":
                break
            if not r or not line:
                cp.kill()
                raise SystemExit(f"client not READY: {cp.stderr.read()}")
        time.sleep(0.2)
        connected = mem(agent.pid)
        sampler = RssSampler(agent.pid)
        sampler.start()
        c0, l0, t0 = *agent_cpu(agent.pid), time.monotonic()
        http(f"{agent.base}/v1/test/events?count={count}&rate={rate}", method="POST")
        # When the agent has journaled the last event (its generator may fall
        # behind the requested rate when its loop is saturated).
        gen_done = None
        res = None
        deadline = t0 + timeout + 10
        while res is None:
            if gen_done is None:
                try:
                    if agent.last_seq() >= after + count:
                        gen_done = time.monotonic()
                except OSError:
                    pass
            r, _, _ = select.select([cp.stdout], [], [], 0.25)
            if r:
                line = cp.stdout.readline()
                if not line:
                    break
                if line.startswith("{"):
                    res = json.loads(line)
            if time.monotonic() > deadline:
                break
        t1 = time.monotonic()
        c1, l1 = agent_cpu(agent.pid)
        sampler.stop.set()
        sampler.join()
        try:
            cp.wait(timeout=20)
        except subprocess.TimeoutExpired:
            cp.kill()
        if res is None:
            raise SystemExit(f"no result from the client: {cp.stderr.read()}")
        if gen_done is None and agent.last_seq() >= after + count:
            gen_done = time.monotonic()
        end_mem = mem(agent.pid)
        wall = t1 - t0
        msgs = max(1, res["delivered"]["total"] + res["lost"]["markers"])
        return {
            "rate": rate, "subscribers": subscribers, "count": count, "res": res, "wall": wall, "t0_mono": t0,
            "timeout": timeout,
            "gen_s": (gen_done - t0) if gen_done else None,
            "cpu_pct": 100 * (c1 - c0) / wall, "loop_pct": 100 * (l1 - l0) / wall,
            "cpu_us_per_msg": 1e6 * (c1 - c0) / msgs,
            "client_us_per_msg": 1e6 * res["client"]["cpu_s"] / msgs,
            "idle": idle, "connected": connected, "end": end_mem,
            "max_rss": sampler.max_rss, "max_anon": sampler.max_anon,
        }
    finally:
        agent.stop()


# ---- unary ----

def run_unary(args, client, tmp, binary=None):
    agent = Agent(binary or args.agent, tmp, args.journal_size, 1000)
    try:
        time.sleep(1.0)
        sampler = RssSampler(agent.pid)
        sampler.start()
        c0, l0, t0 = *agent_cpu(agent.pid), time.monotonic()
        r = subprocess.run([client, "unary", "--target", agent.target, "--concurrency", str(args.concurrency),
                            "--seconds", str(args.unary_seconds)], capture_output=True, text=True,
                           timeout=args.unary_seconds + 60)
        t1 = time.monotonic()
        c1, l1 = agent_cpu(agent.pid)
        sampler.stop.set()
        sampler.join()
        lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
        if not lines:
            raise SystemExit(f"unary client failed: {r.stderr}")
        res = json.loads(lines[-1])
        return {"res": res, "cpu_pct": 100 * (c1 - c0) / (t1 - t0), "loop_pct": 100 * (l1 - l0) / (t1 - t0),
                "max_rss": sampler.max_rss, "end": mem(agent.pid)}
    finally:
        agent.stop()


# ---- report ----

def mib(kib):
    return f"{kib / MIB:.1f}"


def lat(us):
    """Table cell: ms, or seconds marked s."""
    return f"{us / 1000:.2f}" if us < 10_000 else f"{us / 1e6:.2f}s" if us >= 1e6 else f"{us / 1000:.0f}"


def lat_u(us):
    return f"{us / 1e6:.2f} s" if us >= 1e6 else f"{us / 1000:.2f} ms"


def tail_s(r):
    """Seconds between the agent journaling the last event and the last delivery."""
    res = r["res"]
    if r["gen_s"] is None or not res.get("last_mono_s") or res["timed_out"]:
        return None
    return max(0.0, res["last_mono_s"] - (r["t0_mono"] + r["gen_s"]))


def lossless(r):
    res = r["res"]
    return res["lost"]["total"] == 0 and not res["timed_out"] and not res["gaps"]


def meets_goal(r):
    return lossless(r) and r["res"]["latency_us"]["p99"] <= GOAL_P99_US


def print_fanout_table(runs):
    hdr = (f"{'rate/s':>7} {'count':>7} {'gen s':>6} {'deliv min':>9} {'deliv max':>9} {'lost min':>8} "
           f"{'lost max':>8} {'subs w/ loss':>12} {'msgs/s':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} "
           f"{'tail s':>6} {'agent CPU':>9} {'loop':>5} {'us/msg':>6} {'RSS max':>7} {'anon':>5} {'HWM':>5} "
           f"{'client CPU':>10} {'cl us/msg':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in runs:
        res = r["res"]
        L = res["latency_us"]
        cl = res["client"]
        gen = f"{r['gen_s']:.1f}" if r["gen_s"] is not None else "n/a"
        # Delivery finished this long after the generator stopped.
        tail = "n/a" if tail_s(r) is None else f"{tail_s(r):.1f}"
        print(f"{r['rate']:>7} {r['count']:>7} {gen:>6} {res['delivered']['min']:>9} {res['delivered']['max']:>9} "
              f"{res['lost']['min']:>8} {res['lost']['max']:>8} {res['lost']['subscribers']:>12} "
              f"{res['msgs_per_s']:>8.0f} {lat(L['p50']):>7} {lat(L['p90']):>7} {lat(L['p99']):>7} "
              f"{lat(L['max']):>7} {tail:>6} {r['cpu_pct']:>8.0f}% {r['loop_pct']:>4.0f}% "
              f"{r['cpu_us_per_msg']:>6.1f} {mib(r['max_rss']):>7} {mib(r['max_anon']):>5} {mib(r['end']['VmHWM']):>5} "
              f"{100 * cl['cpu_s'] / cl['wall_s']:>9.0f}% {r['client_us_per_msg']:>9.1f}")
        notes = []
        if res["timed_out"]:
            pe = res["pending"]
            notes.append(f"client stopped at its {r['timeout']} s timeout: {res['complete']}/{res['subscribers']} "
                         f"subscribers accounted for all {r['count']} events; {pe['min']}..{pe['max']} per "
                         f"subscriber still unread (behind the subscriber in the journal), so 'lost' is a "
                         f"lower bound")
        if res["ended_by_server"]:
            notes.append(f"{res['ended_by_server']} streams ended by the agent")
        if res["duplicates"] or res["gaps"] or res["decode_errors"]:
            notes.append(f"duplicates {res['duplicates']}, unreported gaps {res['gaps']}, "
                         f"decode errors {res['decode_errors']}")
        if res["lost"]["markers"]:
            notes.append(f"{res['lost']['markers']} EVENTS_LOST markers")
        for n in notes:
            print(f"{'':>9}{n}")


def unary_line(un):
    ur = un["res"]
    L = ur["latency_us"]
    return (f"{ur['calls_per_s']:.0f} calls/s ({ur['calls']} in {ur['wall_s']:.1f} s, {ur['failed']} failed), "
            f"latency p50 {L['p50'] / 1000:.2f} ms p99 {L['p99'] / 1000:.2f} ms max {L['max'] / 1000:.2f} ms; "
            f"agent CPU {un['cpu_pct']:.0f}% (loop {un['loop_pct']:.0f}%), RSS max {mib(un['max_rss'])} MiB; "
            f"client CPU {100 * ur['client']['cpu_s'] / ur['client']['wall_s']:.0f}%")


def print_comparison(rates, before, after, ub, ua):
    """One line per rate and build, measured alternately in this run."""
    hdr = (f"{'rate/s':>7} {'build':>7} {'msgs/s':>8} {'lost':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
           f"{'agent CPU':>9} {'loop':>5} {'us/msg':>6} {'client us/msg':>13} {'RSS max':>7} {'anon':>5}")
    print(hdr)
    print("-" * len(hdr))
    for rate in rates:
        for name, r in (("before", before[rate]), ("after", after[rate])):
            res = r["res"]
            L = res["latency_us"]
            print(f"{rate:>7} {name:>7} {res['msgs_per_s']:>8.0f} {res['lost']['total']:>6} {lat(L['p50']):>7} "
                  f"{lat(L['p99']):>7} {lat(L['max']):>7} {r['cpu_pct']:>8.0f}% {r['loop_pct']:>4.0f}% "
                  f"{r['cpu_us_per_msg']:>6.1f} "
                  f"{r['client_us_per_msg']:>13.1f} {mib(r['max_rss']):>7} {mib(r['max_anon']):>5}")
    for name, un in (("before", ub), ("after", ua)):
        print(f"  GetStatus c=16 {name:>6}: {unary_line(un)}")


def search_max_rate(args, client, tmp, runs, log):
    """Bisect (geometrically) between the highest measured rate that met
    zero loss + p99 <= 1 ms and the lowest that did not."""
    ok = [r["rate"] for r in runs if meets_goal(r)]
    bad = [r["rate"] for r in runs if not meets_goal(r)]
    lo = max(ok) if ok else 0
    hi = min([b for b in bad if b > lo], default=None)
    if hi is None:
        return lo, None, []
    tried = []
    for _ in range(args.search_steps):
        if lo and hi / lo <= 1.15:
            break
        mid = int(round(math.sqrt(lo * hi))) if lo else max(args.search_floor, hi // 4)
        if mid <= lo or mid >= hi:
            break
        log(f"  search: {mid} events/s x {args.search_seconds} s ...")
        r = run_fanout(args, client, tmp, mid, seconds=args.search_seconds)
        tried.append(r)
        if meets_goal(r):
            lo = mid
        else:
            hi = mid
            if mid == args.search_floor:
                break
    return lo, hi, tried


def search_subscribers(args, client, tmp, rate, log):
    """At one (low) rate, the most subscribers that still get zero loss and
    p99 <= 1 ms: bisect between 1 and --subscribers."""
    lo, hi, tried = 0, args.subscribers, []
    n = max(1, args.subscribers // 10)
    for _ in range(args.search_steps):
        log(f"  search: {n} subscribers at {rate} events/s x {args.search_seconds} s ...")
        r = run_fanout(args, client, tmp, rate, seconds=args.search_seconds, subscribers=n)
        tried.append(r)
        if meets_goal(r):
            lo = n
        else:
            hi = n
        if hi - lo <= max(1, lo // 8):
            break
        n = (lo + hi) // 2 if lo else max(1, hi // 4)
        if n in (lo, hi):
            break
    return lo, tried


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", default="build/oneshield-agent")
    ap.add_argument("--build", help="build dir with gen/ (default: the agent's directory)")
    ap.add_argument("--baseline", help="another agent binary (its plugin beside it) measured in the same run")
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--rate", type=int, default=10000, help="goal rate, events/s")
    ap.add_argument("--rates", default="250,1000,3000",
                    help="lower rates also measured, comma-separated ('' for none)")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--channels", type=int, default=0,
                    help="client connections for the subscribers (default: one each)")
    ap.add_argument("--client-threads", type=int, default=1)
    ap.add_argument("--journal-size", type=int, default=65536)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--unary-seconds", type=int, default=5)
    ap.add_argument("--search-steps", type=int, default=5,
                    help="runs to find the highest rate with zero loss and p99 <= 1 ms (0: no search)")
    ap.add_argument("--search-seconds", type=int, default=5)
    ap.add_argument("--search-floor", type=int, default=10, help="lowest rate the search tries")
    args = ap.parse_args()
    args.agent = os.path.realpath(args.agent)
    if args.baseline:
        args.baseline = os.path.realpath(args.baseline)
    build = args.build or os.path.dirname(args.agent)
    client = build_client(build)
    rates = sorted({int(x) for x in args.rates.split(",") if x.strip()} | {args.rate})

    def log(msg):
        print(msg, flush=True)

    tmp = tempfile.mkdtemp(prefix="oneshield-grpc-bench-")
    try:
        print(f"gRPC benchmark: {os.cpu_count()} CPUs; agent {args.agent}; client {client}")
        if args.baseline:
            print(f"baseline (before), measured alternately in this run: {args.baseline}")
        print(f"fan-out: {args.subscribers} subscribers ({args.channels or args.subscribers} connections, "
              f"{args.client_threads} client thread(s)), {args.seconds} s per rate, journal_size "
              f"{args.journal_size}; a fresh agent per run")
        print("latency = subscriber's CLOCK_REALTIME at receipt - event time_unix_nano (set when journaled)\n")

        runs, before = [], {}
        for i, rate in enumerate(rates):
            # Alternate which build goes first, so a drift in the machine's
            # load does not always favour the same one.
            order = [("after", args.agent), ("before", args.baseline)]
            if i % 2:
                order.reverse()
            for name, binary in order:
                if not binary:
                    continue
                log(f"  running {rate} events/s x {args.seconds} s{' (' + name + ')' if args.baseline else ''} ...")
                r = run_fanout(args, client, tmp, rate, binary)
                if name == "after":
                    runs.append(r)
                else:
                    before[rate] = r
        log(f"  running unary GetStatus, concurrency {args.concurrency}, {args.unary_seconds} s ...")
        un = run_unary(args, client, tmp)
        ub = run_unary(args, client, tmp, args.baseline) if args.baseline else None
        lo, hi, tried = (search_max_rate(args, client, tmp, runs, log) if args.search_steps
                         else (None, None, []))
        slow = min(runs, key=lambda r: r["rate"])
        smax, stried = ((search_subscribers(args, client, tmp, slow["rate"], log))
                        if args.search_steps and not lo else (None, []))

        idle = runs[0]["idle"]
        print()
        print(f"agent idle, gRPC server up, no clients: RSS {mib(idle['VmRSS'])} MiB "
              f"(anon {mib(idle['RssAnon'])}, file {mib(idle['RssFile'])}), HWM {mib(idle['VmHWM'])} MiB, "
              f"{idle['Threads']} threads")
        c = runs[0]["connected"]
        print(f"agent with {args.subscribers} idle subscribers:     RSS {mib(c['VmRSS'])} MiB "
              f"(anon {mib(c['RssAnon'])}, file {mib(c['RssFile'])})")
        print()
        print("fan-out (per subscriber: delivered / lost out of COUNT; latency in ms unless marked s)")
        print_fanout_table(runs)
        print()
        print("  gen s: time for the agent to journal all COUNT events (the generator shares the core loop);")
        print("  tail s: how long after the last event was journaled the last subscriber got its last one;")
        print("  msgs/s: messages delivered to all subscribers together; agent CPU: % of one core, all threads;")
        print("  loop: the core-loop thread alone; us/msg: agent CPU per delivered message; cl us/msg: the")
        print("  client's CPU (all its threads) per delivered message;")
        print("  RSS max / anon: highest VmRSS / RssAnon sampled every 0.1 s (MiB); HWM: VmHWM at the end.")
        print("  RSS includes ~15 MiB of file-backed pages (libgrpc and the other shared libraries); a journal")
        print(f"  of {args.journal_size} events is all resident once a run has filled it.")
        print()
        print(f"unary GetStatus, concurrency {un['res']['concurrency']} on {un['res']['channels']} connection: "
              f"{unary_line(un)}")
        print()
        if args.baseline:
            print("before/after, same run (before = --baseline, after = --agent):")
            print_comparison(rates, before, {r["rate"]: r for r in runs}, ub, un)
            print()

        # ---- goals ----
        goal = next(r for r in runs if r["rate"] == args.rate)
        g = goal["res"]
        kept = [r for r in runs if lossless(r) and r["res"]["latency_us"]["p99"] <= KEEP_UP_P99_US]
        print(f"goals at {args.rate} events/s x {args.subscribers} subscribers "
              f"({args.rate * args.subscribers} messages/s):")
        ok_loss = lossless(goal)
        ccpu = 100 * g["client"]["cpu_s"] / g["client"]["wall_s"]
        print(f"  zero loss for subscribers that keep up: {'met' if ok_loss else 'NOT met'} "
              f"(lost {g['lost']['total']} of {goal['count'] * args.subscribers}; "
              f"{g['lost']['subscribers']} of {args.subscribers} subscribers lost events)")
        if not ok_loss:
            print(f"    the agent delivered {g['msgs_per_s']:.0f} messages/s of the {args.rate * args.subscribers} "
                  f"needed; the client used {ccpu:.0f}% of a core "
                  f"({'so it was not the bottleneck' if ccpu < 90 else 'and may itself be a bottleneck'})")
        print(f"  p99 latency <= 1 ms: {'met' if g['latency_us']['p99'] <= GOAL_P99_US else 'NOT met'} "
              f"(p99 {lat_u(g['latency_us']['p99'])})")
        peak = max(r["max_rss"] for r in runs)
        print(f"  agent RSS <= 16 MiB with the gRPC server up: idle {'met' if idle['VmRSS'] <= GOAL_RSS_KIB else 'NOT met'} "
              f"({mib(idle['VmRSS'])} MiB, of which file-backed {mib(idle['RssFile'])}); under this load "
              f"{'met' if goal['max_rss'] <= GOAL_RSS_KIB else 'NOT met'} "
              f"({mib(goal['max_rss'])} MiB, anon {mib(goal['max_anon'])}; peak over all runs {mib(peak)} MiB)")
        lossless_runs = [r for r in runs if lossless(r)]
        if lossless_runs:
            best = max(lossless_runs, key=lambda r: r["rate"])
            print(f"  highest rate measured with zero loss: {best['rate']}/s "
                  f"(p99 {lat_u(best['res']['latency_us']['p99'])})")
        else:
            print("  no measured rate was free of loss")
        if kept:
            best = max(kept, key=lambda r: r["rate"])
            print(f"  highest rate measured with zero loss and the subscribers keeping up (p99 <= "
                  f"{KEEP_UP_P99_US // 1000} ms, no backlog building): {best['rate']}/s "
                  f"({best['rate'] * args.subscribers} messages/s, p99 {lat_u(best['res']['latency_us']['p99'])})")
        else:
            print("  at no measured rate did every subscriber keep up without loss")

        # ---- what the machine can carry ----
        # Throughput: the cheapest per-message CPU measured (batching makes
        # messages cheaper as the rate grows, so this is the optimistic bound).
        cores = os.cpu_count()
        ref = min(runs, key=lambda r: r["cpu_us_per_msg"] + r["client_us_per_msg"])
        need = args.rate * args.subscribers
        a_us, c_us = ref["cpu_us_per_msg"], ref["client_us_per_msg"]
        print(f"  CPU per delivered message, cheapest measured ({ref['rate']} events/s, senders batching): agent "
              f"{a_us:.1f} us, client {c_us:.1f} us (both with the kernel's TCP work over loopback, which "
              f"the sender also pays for the receiver)")
        print(f"    {need} messages/s would take {need * a_us / 1e6:.1f} cores for the agent and "
              f"{need * c_us / 1e6:.1f} for the client: {need * (a_us + c_us) / 1e6:.1f} of the {cores} cores "
              f"this machine has (shared with whatever else runs): at most about "
              f"{cores * 1e6 / (a_us + c_us) / args.subscribers:.0f} events/s x {args.subscribers} fit at all")
        # Latency: at a low rate every event is a round of one write per
        # subscriber on the agent and one read per subscriber on the client,
        # nothing batched. The last subscriber of a round cannot have its
        # copy before that round's CPU has been spent.
        fa, fc = slow["cpu_us_per_msg"] * args.subscribers, slow["client_us_per_msg"] * args.subscribers
        print(f"  one event to {args.subscribers} subscribers at {slow['rate']} events/s costs {fa / 1000:.2f} ms of "
              f"agent CPU and {fc / 1000:.2f} ms of client CPU ({slow['cpu_us_per_msg']:.1f} and "
              f"{slow['client_us_per_msg']:.1f} us per message): even with all {cores} cores free the last "
              f"subscriber gets it no sooner than {(fa + fc) / cores / 1000:.2f} ms after it was journaled"
              + (", so p99 <= 1 ms is out of reach at any rate here" if (fa + fc) / cores > GOAL_P99_US else ""))
        if args.search_steps:
            for r in tried:
                L = r["res"]["latency_us"]
                print(f"    search {r['rate']:>6}/s: lost {r['res']['lost']['total']}, p50 {lat_u(L['p50'])}, "
                      f"p99 {lat_u(L['p99'])}, agent {r['cpu_us_per_msg']:.1f} us/msg, "
                      f"client {r['client_us_per_msg']:.1f} us/msg")
            if lo:
                print(f"  maximum sustainable rate with zero loss and p99 <= 1 ms on this machine now: {lo} events/s "
                      f"x {args.subscribers} subscribers ({lo * args.subscribers} messages/s)"
                      + (f"; {hi}/s did not make it" if hi else ""))
            else:
                print(f"  maximum sustainable rate with zero loss and p99 <= 1 ms on this machine now: none; "
                      f"{hi} events/s x {args.subscribers} subscribers (the lowest rate tried) did not make it")
            for r in stried:
                L = r["res"]["latency_us"]
                print(f"    search {r['subscribers']:>4} subscribers at {r['rate']}/s: "
                      f"lost {r['res']['lost']['total']}, p50 {lat_u(L['p50'])}, p99 {lat_u(L['p99'])}")
            if smax is not None:
                print(f"  most subscribers with zero loss and p99 <= 1 ms at {slow['rate']} events/s: "
                      + (f"{smax}" if smax else "none (not even 1)"))
        print(f"  (with journal_size {args.journal_size}, a run of rate x {args.seconds} s <= {args.journal_size} "
              f"events cannot lose events however slow the subscribers: there, watch p99 and tail s)")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
