#!/usr/bin/python3
"""Idle cost of the agent beside a running onepanel (the simulator).

Runs the simulator (2 workers, no synthetic traffic) and the agent with a 1 s
sampling interval, scrapes /metrics once a second (as Prometheus would), and
reports the agent's RSS and CPU over the window. When Debian's
prometheus-node-exporter is installed it is measured in the same run, under
the same 1 s scrapes, as the baseline for host-metric collection (NGINX Agent
is not packaged for Debian and cannot be installed on these machines).

    make bench-idle [BENCH_ARGS="--seconds 60"]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def mem_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def wait_http(url, deadline=20):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"no answer from {url}")


def measure(name, pid, url, seconds):
    wait_http(url)
    time.sleep(2)  # let start-up work finish before the window opens
    c0, t0 = cpu_seconds(pid), time.monotonic()
    rss_max = 0
    while time.monotonic() - t0 < seconds:
        urllib.request.urlopen(url, timeout=5).read()
        rss_max = max(rss_max, mem_kib(pid, "VmRSS"))
        time.sleep(1)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    cpu_pct = 100.0 * (c1 - c0) / (t1 - t0)
    rss = mem_kib(pid, "VmRSS")
    print(f"{name:34s} RSS {rss / 1024:6.2f} MiB (anon {mem_kib(pid, 'RssAnon') / 1024:5.2f}, "
          f"file {mem_kib(pid, 'RssFile') / 1024:5.2f}, max {rss_max / 1024:6.2f})"
          f"   CPU {cpu_pct:6.3f} % of a core over {t1 - t0:.0f} s")
    return rss, cpu_pct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", default="build/oneshield-agent")
    ap.add_argument("--sim", default="build/onepanel-sim")
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="oneshield-bench-")
    os.chmod(d, 0o755)
    sim = os.path.realpath(args.sim)
    with open(f"{d}/onepanel.conf", "w") as f:
        f.write(f"listen 127.0.0.1:0;\npid_file {d}/onepanel.pid;\naccess_log {d}/access.log;\n"
                f"error_log {d}/error.log;\nworkers 2;\n")
    for grpc in ("off", "127.0.0.1:19441"):
        with open(f"{d}/agent-{grpc != 'off'}.yaml", "w") as f:
            f.write(f"onepanel:\n  binary: {sim}\n  pid_file: {d}/onepanel.pid\n  config_file: {d}/onepanel.conf\n"
                    f"  allowed_dirs: [{d}]\n  validate_command: \"{sim} -t -c {{config}}\"\n"
                    f"api:\n  auth: false\n  rest_listen: 127.0.0.1:19440\n  grpc_listen: {grpc}\nmetrics:\n  interval: 1s\n")
    procs = []
    try:
        procs.append(subprocess.Popen([sim, "-c", f"{d}/onepanel.conf"], stderr=subprocess.DEVNULL))
        print(f"idle benchmark: {args.seconds} s window, 1 s interval, /metrics scraped every 1 s")
        print("(RSS = anon + file; file is shared library pages, mostly libgrpc's, shared with other processes)")
        results = {}
        for grpc in (False, True):
            agent = subprocess.Popen([os.path.realpath(args.agent), "-c", f"{d}/agent-{grpc}.yaml"],
                                     stderr=subprocess.DEVNULL)
            name = "oneshield-agent (REST + gRPC)" if grpc else "oneshield-agent (REST, gRPC off)"
            results[grpc] = measure(name, agent.pid, "http://127.0.0.1:19440/metrics", args.seconds)
            agent.terminate()
            agent.wait(timeout=10)
        rss, cpu = results[False]
        ne = shutil.which("prometheus-node-exporter")
        if ne:
            nep = subprocess.Popen([ne, "--web.listen-address=127.0.0.1:19100"], stderr=subprocess.DEVNULL)
            procs.append(nep)
            measure("prometheus-node-exporter", nep.pid, "http://127.0.0.1:19100/metrics", args.seconds)
        else:
            print("prometheus-node-exporter not installed: no baseline in this run")
        goal_ok = rss <= 8 * 1024 and cpu <= 0.2
        print(f"goal without gRPC (RSS <= 8 MiB, CPU <= 0.2 %): {'met' if goal_ok else 'NOT met'}")
        grss, gcpu = results[True]
        print(f"goal with gRPC up (RSS <= 16 MiB, CPU <= 0.2 %): "
              f"{'met' if grss <= 16 * 1024 and gcpu <= 0.2 else 'NOT met'}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
