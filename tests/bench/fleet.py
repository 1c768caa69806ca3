#!/usr/bin/python3
"""Fleet simulation (issue 7): N agents on this machine, each in procfs mode
beside its own onepanel simulator, all reporting to one reference management
server (tools/mgmt-server). Prints per-agent CPU and RSS, bytes on the wire
per metrics report and per event (TCP payload counted by the kernel, ss -ti),
the server's event ingest rate, and how long a command takes to reach every
agent and come back; then what that implies for 10,000 hosts.

    make bench-fleet [BENCH_ARGS="--agents 200 --seconds 60"]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER = os.path.join(ROOT, "tools", "mgmt-server", "oneshield-mgmt-server")
CLK = os.sysconf("SC_CLK_TCK")


_next_port = [21000]


def free_port():
    """Below the kernel's ephemeral range (32768-60999), so that no client
    socket or listen(0) of the simulators can take it between our check
    and the agent's bind."""
    while True:
        p = _next_port[0]
        _next_port[0] += 1
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def http(url, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def wait(pred, what, deadline=300, interval=0.2):
    end = time.monotonic() + deadline
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def wire_bytes(server_port):
    """Sum over the agents' established connections to the server of the
    kernel's byte counters: (agent -> server, server -> agent)."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( dport = :{server_port} )"],
                         capture_output=True, text=True).stdout
    sent = recv = 0
    for m in re.finditer(r"bytes_acked:(\d+).*?bytes_received:(\d+)", out, re.S):
        sent += int(m.group(1))
        recv += int(m.group(2))
    return sent, recv


def fmt_kib(k):
    return f"{k / 1024:.1f} MiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", default=os.path.join(ROOT, "build", "oneshield-agent"))
    ap.add_argument("--sim", default=os.path.join(ROOT, "build", "onepanel-sim"))
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60, help="steady-state window")
    ap.add_argument("--report-interval", default="15s", help="oneshield.report_interval of every agent")
    ap.add_argument("--events", type=int, default=100, help="events each agent journals in the event phase")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    # the agent's config wants absolute paths (make passes build/...)
    a.agent, a.sim = os.path.realpath(a.agent), os.path.realpath(a.sim)

    work = tempfile.mkdtemp(prefix="oneshield-fleet-")
    procs = []
    env = dict(os.environ, ONESHIELD_FORCE_PROCFS="1", ONESHIELD_TEST_EVENTS="1")
    try:
        sport, cport = free_port(), free_port()
        srv = subprocess.Popen(["/usr/bin/python3", SERVER, "--listen", f"127.0.0.1:{sport}", "--control",
                                f"127.0.0.1:{cport}", "--max-events", "1000"],
                               stdout=subprocess.DEVNULL, stderr=open(f"{work}/server.log", "w"))
        procs.append(srv)
        ctl = f"http://127.0.0.1:{cport}"
        wait(lambda: srv.poll() is None and _try(ctl + "/v1/health") or
             (srv.poll() is not None and sys.exit(open(f"{work}/server.log").read())), "the server")

        agents = []
        t_start = time.monotonic()
        for i in range(a.agents):
            d = f"{work}/a{i}"
            os.makedirs(d)
            conf = f"{d}/onepanel.conf"
            with open(conf, "w") as f:
                f.write(f"listen 127.0.0.1:0;\npid_file {d}/onepanel.pid;\naccess_log {d}/access.log;\n"
                        f"error_log {d}/error.log;\nworkers 1;\naccess_rate 0;\nerror_rate 0;\n"
                        f"control_file {d}/control;\n")
            procs.append(subprocess.Popen([a.sim, "-c", conf], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            rport = free_port()
            with open(f"{d}/agent.yaml", "w") as f:
                f.write(f"onepanel:\n  binary: {a.sim}\n  pid_file: {d}/onepanel.pid\n  config_file: {conf}\n"
                        f"  allowed_dirs: [{d}]\n  access_logs: [{{ path: {d}/access.log }}]\n"
                        f"  error_logs: [{{ path: {d}/error.log }}]\n"
                        f"api:\n  auth: false\n  rest_listen: 127.0.0.1:{rport}\n  grpc_listen: off\n"
                        f"metrics:\n  interval: {a.report_interval}\n"
                        f"oneshield:\n  address: 127.0.0.1:{sport}\n  spool_dir: {d}/state\n"
                        f"  report_interval: {a.report_interval}\n  labels: [fleet=bench, n={i}]\n")
            p = subprocess.Popen([a.agent, "-c", f"{d}/agent.yaml"], stdout=subprocess.DEVNULL,
                                 stderr=open(f"{d}/agent.log", "w"), env=env)
            procs.append(p)
            agents.append({"pid": p.pid, "proc": len(procs) - 1, "rest": f"http://127.0.0.1:{rport}", "dir": d})

        def connected():
            for ag in agents:  # an agent that died: say why at once
                p = procs[ag["proc"]]
                if p.poll() is not None:
                    tail = open(f"{ag['dir']}/agent.log").read().splitlines()[-5:]
                    raise SystemExit(f"agent in {ag['dir']} exited ({p.returncode}):\n" + "\n".join(tail))
            try:
                ags = http(ctl + "/v1/agents")["agents"]
            except OSError:
                return None
            return len([x for x in ags if x["connected"]]) >= a.agents and ags
        try:
            ags = wait(connected, f"{a.agents} agents connected", deadline=600)
        except SystemExit:
            # which ones, and what they say about it
            for ag in agents:
                st = _try(ag["rest"] + "/v1/status")
                o = st["oneshield"] if st else {}
                if not o.get("connected"):
                    print(f"not connected: {ag['dir']}: {json.dumps(o)[:400]}", file=sys.stderr)
            raise
        t_up = time.monotonic() - t_start
        for ag in agents:
            st = wait(lambda: _try(ag["rest"] + "/v1/status"), "agent status")
            ag["id"] = st["oneshield"]["agent_id"]
        print(f"fleet: {a.agents} agents (procfs mode, each beside its own simulator) connected to one "
              f"reference server in {t_up:.1f} s")

        # steady state: metrics reports only
        time.sleep(3)
        c0 = {ag["pid"]: cpu_seconds(ag["pid"]) for ag in agents}
        s0 = cpu_seconds(srv.pid)
        m0 = sum(x["metrics_received"] for x in http(ctl + "/v1/agents")["agents"])
        w0 = wire_bytes(sport)
        t0 = time.monotonic()
        time.sleep(a.seconds)
        t1 = time.monotonic()
        w1 = wire_bytes(sport)
        m1 = sum(x["metrics_received"] for x in http(ctl + "/v1/agents")["agents"])
        s1 = cpu_seconds(srv.pid)
        cpu = sorted(100.0 * (cpu_seconds(ag["pid"]) - c0[ag["pid"]]) / (t1 - t0) for ag in agents)
        rss = sorted(rss_kib(ag["pid"]) for ag in agents)
        reports = m1 - m0
        up = w1[0] - w0[0]
        down = w1[1] - w0[1]
        print(f"\nsteady state, {t1 - t0:.0f} s window, report interval {a.report_interval}:")
        print(f"  agent CPU  mean {sum(cpu) / len(cpu):.2f} %  p50 {cpu[len(cpu) // 2]:.2f} %  "
              f"max {cpu[-1]:.2f} % of a core (metric collection, reports, the simulator's tracking)")
        print(f"  agent RSS  mean {fmt_kib(sum(rss) / len(rss))}  max {fmt_kib(rss[-1])}")
        print(f"  server CPU {100.0 * (s1 - s0) / (t1 - t0):.1f} % of a core (Python reference server)")
        if reports:
            print(f"  metrics reports received: {reports}; on the wire {up / reports:.0f} B agent->server "
                  f"and {down / reports:.0f} B server->agent per report (TCP payload, HTTP/2 framing included)")

        # events: every agent journals a.events test events at once
        w0 = wire_bytes(sport)
        base = {x["agent_id"]: x["last_seq"] for x in http(ctl + "/v1/agents")["agents"]}
        s0 = cpu_seconds(srv.pid)
        t0 = time.monotonic()
        for ag in agents:
            http(ag["rest"] + f"/v1/test/events?count={a.events}&rate=0", body={})
        want = a.events * len(agents)

        def delivered():
            got = sum(x["last_seq"] - base.get(x["agent_id"], 0) for x in http(ctl + "/v1/agents")["agents"])
            return got >= want and got
        wait(delivered, "events delivered", deadline=600, interval=0.05)
        t1 = time.monotonic()
        s1 = cpu_seconds(srv.pid)
        w1 = wire_bytes(sport)
        print(f"\nevents: {a.events} per agent, {want} in all, journaled at once:")
        print(f"  all received and acknowledged after {t1 - t0:.2f} s: server ingest {want / (t1 - t0):.0f} "
              f"events/s (server CPU {100.0 * (s1 - s0) / (t1 - t0):.0f} % of a core)")
        print(f"  on the wire {(w1[0] - w0[0]) / want:.0f} B per event agent->server, "
              f"{(w1[1] - w0[1]) / want:.0f} B per event server->agent (acks)")

        # commands: a ping to every agent, then get_status to every agent
        for kind in ("ping", "get_status"):
            t0 = time.monotonic()
            ids = [http(ctl + f"/v1/agents/{ag['id']}/commands", {"kind": kind, "wait": False})["id"]
                   for ag in agents]
            t_sent = time.monotonic()
            for cid in ids:
                r = http(ctl + f"/v1/commands/{cid}?wait=60", timeout=90)
                if r["state"] != "done" or r["result"].get("code", 0) != 0:
                    raise SystemExit(f"command {cid}: {r}")
            t1 = time.monotonic()
            print(f"\ncommand {kind} to all {len(agents)} agents: every result back {t1 - t0:.2f} s after the "
                  f"first was issued ({t_sent - t0:.2f} s of that issuing them through the control API)")

        per_report = up / reports if reports else 0
        iv = _seconds(a.report_interval)
        print("\nfor 10,000 hosts (linear, from the figures above):")
        print(f"  metrics: {10000 / iv:.0f} reports/s, {10000 * per_report / iv / 1e6:.2f} MB/s into the "
              f"management plane at a {a.report_interval} interval")
        print(f"  agent side: the figures per agent do not depend on fleet size; "
              f"{fmt_kib(sum(rss) / len(rss))} and {sum(cpu) / len(cpu):.2f} % of a core each")
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")


def _try(url):
    try:
        return http(url)
    except OSError:
        return None


def _seconds(s):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", s)
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, "m": n * 60, "h": n * 3600, None: n}[m.group(2)]


if __name__ == "__main__":
    sys.exit(main())
