#!/usr/bin/python3
"""Config-apply cost: the agent's own time per apply (path checks, backup,
atomic writes with fsync; and the restore where one happens), apart from the
validator's run and the reload wait, for 1 file and for 100 files.

    make bench-apply [BENCH_ARGS="--runs 20"]

The simulator is the onepanel (2 workers); every apply is a real one: the
validator runs and onepanel is reloaded and verified. The figures come from
the result's timings_ms, which the agent measures with CLOCK_MONOTONIC.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/config/apply", data=json.dumps(body).encode(),
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_http(url, deadline=20):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"no answer from {url}")


def summary(name, rows):
    prep = [r["prepare"] for r in rows]
    val = [r["validate"] for r in rows]
    rel = [r["reload"] for r in rows]
    q = statistics.quantiles(prep, n=10) if len(prep) >= 2 else prep * 9
    print(f"{name:10s} agent's own time: median {statistics.median(prep):7.2f} ms  p90 {q[-1]:7.2f} ms  "
          f"max {max(prep):7.2f} ms   | validator median {statistics.median(val):6.1f} ms, "
          f"reload+verify median {statistics.median(rel):6.1f} ms")
    return statistics.median(prep)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", default="build/oneshield-agent")
    ap.add_argument("--sim", default="build/onepanel-sim")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="oneshield-apply-")
    os.chmod(d, 0o755)
    sim = os.path.realpath(args.sim)
    base = (f"listen 127.0.0.1:0;\npid_file {d}/onepanel.pid;\naccess_log {d}/access.log;\n"
            f"error_log {d}/error.log;\nworkers 2;\n")
    with open(f"{d}/onepanel.conf", "w") as f:
        f.write(base + "message start;\n")
    with open(f"{d}/agent.yaml", "w") as f:
        f.write(f"onepanel:\n  binary: {sim}\n  pid_file: {d}/onepanel.pid\n  config_file: {d}/onepanel.conf\n"
                f"  allowed_dirs: [{d}]\n  validate_command: \"{sim} -t -c {{config}}\"\n"
                f"  error_logs:\n    - {{ path: {d}/error.log }}\n"
                f"api:\n  auth: false\n  rest_listen: 127.0.0.1:19940\n  grpc_listen: off\n"
                # back-to-back applies: above the default 30 a minute
                f"  limits: {{ applies_per_minute: 10000 }}\n")
    procs = []
    try:
        procs.append(subprocess.Popen([sim, "-c", f"{d}/onepanel.conf"], stderr=subprocess.DEVNULL))
        agent = subprocess.Popen([os.path.realpath(args.agent), "-c", f"{d}/agent.yaml"], stderr=subprocess.DEVNULL)
        procs.append(agent)
        wait_http("http://127.0.0.1:19940/healthz")
        print(f"config apply benchmark: {args.runs} applies each, validator = onepanel-sim -t, "
              f"reload verified (2 workers); file system: {d} "
              f"({subprocess.run(['stat', '-f', '-c', '%T', d], capture_output=True, text=True).stdout.strip()})")
        results = {}
        for nfiles in (1, 100):
            rows = []
            for i in range(args.runs):
                files = [{"path": f"{d}/onepanel.conf", "content": base + f"message run{nfiles}x{i};\n"}]
                files += [{"path": f"{d}/extra{k:03d}.conf", "content": f"# extra file {k}, run {i}\n" * 20}
                          for k in range(nfiles - 1)]
                code, res = post(19940, {"files": files})
                if code != 200:
                    raise SystemExit(f"apply failed: {code} {res}")
                rows.append(res["timings_ms"])
            results[nfiles] = summary(f"{nfiles} file{'s' if nfiles > 1 else ''}", rows)
        print(f"goal (<= 5 ms for one file): {'met' if results[1] <= 5 else 'NOT met'}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
