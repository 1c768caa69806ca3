"""Access and error logs: exact counts through rotations, real nginx under
wrk, panics and critical errors from the simulator, JSON and custom formats,
garbage."""
import json
import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import SIM_BIN, Sim, agent_yaml, sim_onepanel, wait_for
from test_nginx import NGINX, Nginx, nginx_agent

STATUSES = [200, 200, 200, 301, 404, 500, 200, 304]


def line(i, status=None):
    st = status if status is not None else STATUSES[i % len(STATUSES)]
    return (f'10.0.{i % 250}.{i % 7} - - [26/Nov/2026:07:00:00 +0000] "GET /p/{i} HTTP/1.1" {st} {100 + i % 900} '
            f'"-" "bench/{i % 3}"\n')


def expected(n, start=0):
    out = {}
    for i in range(start, start + n):
        c = f"{STATUSES[i % len(STATUSES)] // 100}xx"
        out[c] = out.get(c, 0) + 1
    return out


def log_status(a, path):
    for l in a.get("/v1/status").json()["onepanel"].get("logs", []):
        if l["path"] == path:
            return l
    return None


def logs_yaml(access=(), errors=(), extra_access="", binary=SIM_BIN):
    acc = ", ".join(f"{{ path: {p}{extra_access} }}" for p in access)
    err = ", ".join(f"{{ path: {p} }}" for p in errors)
    d = {"binary": binary}
    if access:
        d["access_logs"] = f"[{acc}]"
    if errors:
        d["error_logs"] = f"[{err}]"
    return d


def caught_up(a, path):
    """The agent has read the file to its end."""
    st = log_status(a, path)
    return st and st["open"] and st["offset"] == os.path.getsize(path)


@pytest.mark.parametrize("how", ["rename", "delete", "copytruncate"])
def test_exact_counts_across_rotation(tmp_path, agents, how):
    """N lines written fast with a rotation in the middle: every line counted
    exactly once. copytruncate is exact when the agent has read the file up
    to the copy (what logrotate cannot guarantee for any tailer: lines
    written between its copy and its truncate exist only in the copy)."""
    path = str(tmp_path / "access.log")
    open(path, "w").close()
    a = agents(tmp_path, agent_yaml(logs_yaml(access=[path])))
    wait_for(lambda: caught_up(a, path), what="tailer ready")
    n1, n2 = 20000, 15000
    with open(path, "a") as f:
        f.write("".join(line(i) for i in range(n1)))
    if how == "rename":
        os.rename(path, path + ".1")
        # the server still writes to the renamed file until it reopens
        with open(path + ".1", "a") as f:
            f.write("".join(line(i) for i in range(n1, n1 + 500)))
        n1 += 500
    elif how == "delete":
        wait_for(lambda: caught_up(a, path), what="caught up before the delete")
        os.unlink(path)
    else:
        wait_for(lambda: caught_up(a, path), what="caught up before copytruncate")
        shutil.copy(path, path + ".1")
        os.truncate(path, 0)
    with open(path, "a") as f:
        f.write("".join(line(i) for i in range(n1, n1 + n2)))
    total = n1 + n2
    want = expected(total)

    def counts():
        st = log_status(a, path)
        return st if st and st["lines"] == total and st["status"]["2xx"] == want["2xx"] else None
    st = wait_for(counts, timeout=60, what=f"{total} lines counted")
    for k, v in want.items():
        assert st["status"][k] == v, (k, st["status"])
    assert st["malformed"] == 0 and st["truncated"] == 0
    assert (st["rotations"] if how != "copytruncate" else st["truncations"]) >= 1
    wait_for(lambda: f'onepanel_log_lines_total{{log="{path}"}} {total}' in a.get("/metrics").text,
             what="the count in /metrics")


def test_starts_at_end_and_waits_for_missing_file(tmp_path, agents):
    old = str(tmp_path / "old.log")
    with open(old, "w") as f:
        f.write("".join(line(i) for i in range(100)))
    missing = str(tmp_path / "later" / "access.log")
    a = agents(tmp_path, agent_yaml(logs_yaml(access=[old, missing])))
    wait_for(lambda: caught_up(a, old), what="old log open")
    assert log_status(a, old)["lines"] == 0  # history is not replayed
    st = log_status(a, missing)
    assert not st["open"] and st["state"] in ("waiting for directory", "waiting for file")
    os.makedirs(os.path.dirname(missing))
    with open(missing, "w") as f:
        f.write("".join(line(i) for i in range(10)))
    wait_for(lambda: (log_status(a, missing) or {}).get("lines") == 10, what="new file read from its start")
    with open(old, "a") as f:
        f.write(line(1))
    wait_for(lambda: log_status(a, old)["lines"] == 1, what="appended line")


def test_partial_line_completed_later_and_garbage(tmp_path, agents):
    path = str(tmp_path / "access.log")
    open(path, "w").close()
    a = agents(tmp_path, agent_yaml(logs_yaml(access=[path]) | {}))
    wait_for(lambda: caught_up(a, path), what="tailer ready")
    l = line(7)
    with open(path, "a") as f:
        f.write(l[:30])
        f.flush()
        wait_for(lambda: caught_up(a, path), what="partial line read")
        assert log_status(a, path)["lines"] == 0
        f.write(l[30:])
    wait_for(lambda: log_status(a, path)["lines"] == 1, what="completed line")
    with open(path, "ab") as f:
        f.write(b"\x00\x01garbage \xff\xfe not a log line\n" + b"x" * 200000 + b"\n" + b"\n" + line(8).encode())
    st = wait_for(lambda: (lambda s: s if s["tail_lines"] == 5 else None)(log_status(a, path)),
                  what="garbage read")
    assert st["requests"] == 2
    assert st["truncated"] == 1          # the 200 kB line (max_line 64 KiB), not parsed
    assert st["malformed"] == 2          # the binary line and the empty one
    assert st["lines"] == 4              # parsed: requests + malformed
    assert a.get("/healthz").status_code == 200


def test_json_lines_and_custom_format_with_upstream_times(tmp_path, agents):
    jpath = str(tmp_path / "access.json")
    cpath = str(tmp_path / "custom.log")
    open(jpath, "w").close()
    open(cpath, "w").close()
    fmt = '$remote_addr [$time_local] "$request" $status $body_bytes_sent rt=$request_time urt=$upstream_response_time'
    op = {"binary": SIM_BIN,
          "access_logs": f"[{{ path: {jpath}, format: json }}, {{ path: {cpath}, format: '{fmt}' }}]"}
    a = agents(tmp_path, agent_yaml(op))
    wait_for(lambda: caught_up(a, jpath) and caught_up(a, cpath), what="tailers ready")
    with open(jpath, "a") as f:
        for i in range(50):
            f.write(json.dumps({"remote_addr": "10.0.0.1", "request": f"POST /api/{i} HTTP/2.0",
                                "status": 201 if i % 2 else 503, "body_bytes_sent": 10,
                                "request_time": 0.25}) + "\n")
    with open(cpath, "a") as f:
        for i in range(40):
            f.write(f'10.0.0.2 [26/Nov/2026:07:00:00 +0000] "GET /x HTTP/1.1" 502 0 rt=0.120 '
                    f'urt={"0.050, 0.060" if i % 2 else "-"}\n')
    j = wait_for(lambda: (lambda s: s if s["lines"] == 50 else None)(log_status(a, jpath)), what="json lines")
    assert j["status"]["2xx"] == 25 and j["status"]["5xx"] == 25 and j["malformed"] == 0
    c = wait_for(lambda: (lambda s: s if s["lines"] == 40 else None)(log_status(a, cpath)), what="custom lines")
    assert c["status"]["5xx"] == 40 and c["malformed"] == 0
    assert c["upstream_response_time"]["count"] == 20
    assert abs(c["upstream_response_time"]["p50"] - 0.110) < 0.110 / 16
    assert abs(c["request_time"]["p99"] - 0.120) < 0.120 / 16

    def metric_ok():
        m = a.get("/metrics").text
        return (f'onepanel_http_upstream_response_seconds_count{{log="{cpath}"}} 20' in m and
                f'onepanel_http_requests_by_method_total{{log="{jpath}",method="POST"}} 50' in m)
    wait_for(metric_ok, what="histograms and methods in /metrics")


def test_bad_format_refused_with_line(tmp_path):
    from conftest import AGENT_BIN
    cfg = tmp_path / "a.yaml"
    cfg.write_text("onepanel:\n  binary: /bin/true\n  access_logs:\n"
                   "    - { path: /tmp/x.log, format: '$remote_addr$status' }\n")
    r = subprocess.run([AGENT_BIN, "-t", "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert re.search(r"a\.yaml:4: .*format", r.stderr), r.stderr


def test_sim_panic_and_critical_events(tmp_path, sim, agents):
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    wait_for(lambda: caught_up(a, sim.error_log), what="error log followed")
    seq = a.last_seq()
    sim.command("crit upstream database unreachable")
    crit = a.wait_event("ONEPANEL_CRITICAL_ERROR_MESSAGE", after=seq)
    assert "upstream database unreachable" in crit["message"]
    assert crit["fields"]["level"] == "crit" and crit["fields"]["log"] == sim.error_log
    sim.command("panic index out of range [3] with length 3")
    p = a.wait_event("ONEPANEL_PANIC_MESSAGE", after=crit["seq"])
    assert p["message"] == "onepanel panic: index out of range [3] with length 3"
    assert p["level"] == "critical"
    text = p["fields"]["text"]
    assert text.startswith("panic: index out of range") and "goroutine 1 [running]:" in text
    assert "main.go:57" in text
    # the panic also stopped the simulator: exit 2
    stop = a.wait_event("ONEPANEL_STOP_MESSAGE", after=crit["seq"])
    assert stop["exit_code"] == 2
    st = log_status(a, sim.error_log)
    assert st["errors"]["panics"] == 1 and st["errors"]["lines"]["crit"] >= 1


def test_nginx_under_wrk_counts_match(tmp_path, agents):
    if not shutil.which("wrk"):
        pytest.skip("wrk not installed")
    # answers from the config: the workers (nobody) cannot read pytest's tmp dirs
    n = Nginx(tmp_path, workers=2, server_extra='location / { return 200 "hello\\n"; } '
                                               'location /missing { return 404; }')
    # one connection and a script that stops wrk at its Nth response (every
    # 4th request to /missing): wrk sends nothing after it, so its completed
    # count is exact. (wrk's main thread still sleeps out -d.)
    stop_lua = tmp_path / "stop.lua"
    stop_lua.write_text("local n, sent, limit = 0, 0, 0\n"
                        "function init(args) limit = tonumber(args[1]) end\n"
                        "function request()\n"
                        "  sent = sent + 1\n"
                        "  return wrk.format(nil, sent % 4 == 0 and '/missing' or '/')\n"
                        "end\n"
                        "function response(status, headers, body)\n"
                        "  n = n + 1\n"
                        "  if n >= limit then wrk.thread:stop() end\n"
                        "end\n")
    try:
        n.start()
        a = agents(tmp_path, nginx_agent(n))
        a.wait_event("ONEPANEL_FOUND_MESSAGE")
        wait_for(lambda: caught_up(a, n.access_log), what="access log followed")
        out = subprocess.run(["wrk", "-t1", "-c1", "-d8s", "-s", str(stop_lua), f"http://127.0.0.1:{n.port}/",
                              "--", "4000"], capture_output=True, text=True, check=True).stdout
        m = re.search(r"(\d+) requests in", out)
        assert m and int(m.group(1)) == 4000, out
        st = wait_for(lambda: (lambda s: s if s["requests"] >= 4000 else None)(log_status(a, n.access_log)),
                      timeout=60, what="4000 requests counted")
        assert st["requests"] == 4000, st
        assert st["status"]["2xx"] == 3000 and st["status"]["4xx"] == 1000
        base = st
        # Then at full speed: wrk stops after its duration with up to one request in flight per
        # connection, which nginx completes and logs but wrk does not count:
        # the exact reference is nginx's own log, and wrk's count bounds it
        done, conns = {}, 8
        for path, status in (("/", 200), ("/missing", 404)):
            out = subprocess.run(["wrk", "-t1", f"-c{conns}", "-d1s", f"http://127.0.0.1:{n.port}{path}"],
                                 capture_output=True, text=True, check=True).stdout
            m = re.search(r"(\d+) requests in", out)
            assert m, out
            assert "Non-2xx" in out if status == 404 else "Non-2xx" not in out
            assert "Socket errors" not in out, out
            done[status] = int(m.group(1))
        logged = {200: 0, 404: 0}
        with open(n.access_log) as f:
            for l in f:
                logged[int(l.split('"')[2].split()[0])] += 1
        total = sum(logged.values())
        for st_, prev in ((200, 3000), (404, 1000)):
            assert done[st_] <= logged[st_] - prev <= done[st_] + conns, (done, logged)
        st = wait_for(lambda: (lambda s: s if s["requests"] >= total else None)(log_status(a, n.access_log)),
                      timeout=60, what=f"{total} requests counted")
        assert st["requests"] == total
        assert st["status"]["2xx"] == logged[200] and st["status"]["4xx"] == logged[404]
        assert st["malformed"] == 0
        wait_for(lambda: f'onepanel_http_responses_total{{log="{n.access_log}",code="404"}} {logged[404]}'
                 in a.get("/metrics").text, what="code 404 in /metrics")
    finally:
        n.stop()
