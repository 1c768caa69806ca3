#!/usr/bin/python3
"""The agent's CPU while nginx serves requests with access logging on.

nginx (2 workers, access_log to a file, combined format) under wrk; the
agent follows the access and error logs. Prints nginx's requests/s, the
agent's CPU % over the window and its CPU per 10k logged requests, and
checks that the agent counted every logged request.

    make bench-logs  (runs this after the parser benchmark)
    tests/bench/logs_cpu.py --agent build/oneshield-agent [--seconds 10]
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        x = f.read().rsplit(")", 1)[1].split()
    return (int(x[11]) + int(x[12])) / CLK


def get(port, path):
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=20000, help="target requests/s (0: as fast as wrk can)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="osb-logcpu-") as d:
        os.chmod(d, 0o755)
        port, aport = free_port(), free_port()
        acc, err = f"{d}/access.log", f"{d}/error.log"
        conf = f"{d}/nginx.conf"
        with open(conf, "w") as f:
            f.write(f"""daemon off; worker_processes 2; pid {d}/nginx.pid; error_log {err} notice;
events {{ worker_connections 1024; }}
http {{ access_log {acc} combined;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello\\n"; }} }} }}
""")
        ng = subprocess.Popen(["/usr/sbin/nginx", "-p", d, "-c", conf, "-e", err], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        with open(f"{d}/agent.yaml", "w") as f:
            f.write(f"onepanel:\n  binary: /usr/sbin/nginx\n  pid_file: {d}/nginx.pid\n"
                    f"  access_logs: [{{ path: {acc} }}]\n  error_logs: [{{ path: {err} }}]\n"
                    f"api:\n  auth: false\n  rest_listen: 127.0.0.1:{aport}\n  grpc_listen: off\n")
        ag = subprocess.Popen([args.agent, "-c", f"{d}/agent.yaml"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        try:
            end = time.monotonic() + 20
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                    get(aport, "/v1/status")
                    break
                except OSError:
                    if time.monotonic() > end:
                        sys.exit("nginx or the agent did not start")
                    time.sleep(0.05)
            time.sleep(1)
            # lines from before the agent followed the file are not its to count
            base = sum(1 for _ in open(acc))
            st0 = [l for l in get(aport, "/v1/status")["onepanel"]["logs"] if l["path"] == acc][0]
            c0, t0 = cpu_s(ag.pid), time.monotonic()
            cmd = ["wrk", "-t2", "-c50", f"-d{args.seconds}s"]
            if args.rate:
                # wrk's delay() paces each connection: 50 connections at
                # 50/rate s apart make about `rate` requests/s
                lua = f"{d}/pace.lua"
                with open(lua, "w") as f:
                    f.write(f"function delay() return {50 * 1000.0 / args.rate:.3f} end\n")
                cmd += ["-s", lua]
            out = subprocess.run(cmd + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                                 check=True).stdout
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            # the agent may still be reading the tail of the log
            logged = sum(1 for _ in open(acc)) - base
            while True:
                st = [l for l in get(aport, "/v1/status")["onepanel"]["logs"] if l["path"] == acc][0]
                if st["lines"] + st["truncated"] - st0["lines"] - st0["truncated"] >= logged or \
                        time.monotonic() - t0 > args.seconds + 30:
                    break
                time.sleep(0.1)
            c1, t1 = cpu_s(ag.pid), time.monotonic()
            cpu = 100.0 * (c1 - c0) / (t1 - t0)
            print(f"nginx: {rps:.0f} req/s over {args.seconds} s (wrk -t2 -c50, target "
                  f"{args.rate or 'max'}), {logged} lines logged")
            print(f"agent: {cpu:.2f} % CPU over the window, {1000.0 * (c1 - c0) / max(logged, 1) * 10000:.1f} ms "
                  f"CPU per 10k requests; counted {st['requests'] - st0['requests']} of {logged} logged requests "
                  f"({st['malformed']} malformed, {st['truncated']} truncated)")
        finally:
            ag.send_signal(signal.SIGTERM)
            ag.wait(timeout=20)
            ng.send_signal(signal.SIGQUIT)
            ng.wait(timeout=20)


if __name__ == "__main__":
    main()
