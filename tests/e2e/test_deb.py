"""The Debian package (make deb): contents and metadata, the systemd unit,
and install / upgrade / remove / purge.

dpkg runs with --root=TMP --force-script-chrootless: the maintainer scripts
run on this machine with DPKG_ROOT=TMP (they honour it, as deb-systemd-helper
does), systemd is not running there, and nothing is written outside TMP --
test_lifecycle checks that this machine's own paths are untouched. The
throwaway root has no other packages, so Depends is not enforced there
(--force-depends); instead every Depends is checked against this machine's
installed packages, which the binaries were linked against.

The package is built from the build the suite tests (AGENT_BIN's directory)
with "make BUILD=<that dir> deb", and once more with a higher DEB_VERSION
for the upgrade."""
import gzip
import os
import re
import signal
import stat
import subprocess

import pytest
import requests
import yaml

from conftest import (AGENT_BIN, ROOT, LogFile, Sim, agent_yaml, anonymous, free_port, have, register_config_token,
                      register_token, sim_onepanel, wait_for)

BUILD_DIR = os.path.dirname(os.path.abspath(AGENT_BIN))
PKG = "oneshield-agent"
UNIT = f"{PKG}.service"
CONFFILE = f"/etc/{PKG}/agent.yaml"
UNIT_SRC = os.path.join(ROOT, "packaging", UNIT)

# every file of the package -> its mode (all root:root)
FILES = {
    f"/usr/sbin/{PKG}": 0o755,
    f"/usr/lib/{PKG}/{PKG}-grpc.so": 0o644,
    CONFFILE: 0o640,
    f"/lib/systemd/system/{UNIT}": 0o644,
    f"/usr/share/man/man8/{PKG}.8.gz": 0o644,
    f"/usr/share/doc/{PKG}/copyright": 0o644,
    f"/usr/share/doc/{PKG}/changelog.gz": 0o644,
    f"/usr/share/doc/{PKG}/README.md.gz": 0o644,
    f"/usr/share/lintian/overrides/{PKG}": 0o644,
}

# Paths of this machine that installing into a throwaway root must not
# create or change (they may exist when the package is really installed).
HOST_PATHS = [
    f"/etc/{PKG}", f"/var/lib/{PKG}", f"/usr/sbin/{PKG}", f"/usr/lib/{PKG}",
    f"/lib/systemd/system/{UNIT}", f"/etc/systemd/system/{UNIT}",
    f"/etc/systemd/system/multi-user.target.wants/{UNIT}",
    f"/var/lib/systemd/deb-systemd-helper-enabled/{UNIT}.dsh-also",
    f"/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/{UNIT}",
    f"/var/lib/systemd/deb-systemd-helper-masked/{UNIT}",
]

# System calls the agent and its validators make, from strace -f of the
# agent in eBPF and procfs mode through start, REST, SSE, gRPC, config
# applies (good, refused, new file), a syscall investigation, SIGHUP, a log
# rotation, onepanel restarts and SIGTERM; plus calls of paths that run
# did not take (fchown of a file owned by another user, the spool's
# fdatasync/flock, classic tracepoints and perf buffers on older kernels).
AGENT_SYSCALLS = """
accept4 access arch_prctl bind bpf brk chdir clone clone3 close close_range connect dup2 dup3
epoll_create1 epoll_ctl epoll_wait eventfd2 execve faccessat2 fchmod fcntl fsync futex getdents64
getegid geteuid getpid getppid getrandom getsockname getsockopt inotify_add_watch inotify_init1 kill
listen lseek madvise mmap mprotect munmap newfstatat openat pidfd_open pidfd_send_signal pipe2 prctl
pread64 prlimit64 read readlink recvfrom recvmsg renameat rseq rt_sigaction rt_sigprocmask sendmsg
sendto set_robust_list set_tid_address setpgid setsockopt shutdown signalfd4 socket statfs statx
sysinfo timerfd_create timerfd_settime uname utimensat wait4 waitid write
fchown fdatasync flock ioctl perf_event_open unlinkat mkdir ftruncate setrlimit capget capset
""".split()


def run(cmd, **kw):
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def deb_field(deb, field):
    return run(["dpkg-deb", "-f", deb, field]).stdout.strip()


def make_deb(version=None):
    cmd = ["make", "-s", "--no-print-directory", f"BUILD={BUILD_DIR}", "deb"]
    if version:
        cmd.append(f"DEB_VERSION={version}")
    r = run(cmd, cwd=ROOT, timeout=900)
    assert r.returncode == 0, f"make deb failed:\n{r.stdout}\n{r.stderr}"
    path = r.stdout.strip().splitlines()[-1]
    path = path if os.path.isabs(path) else os.path.join(ROOT, path)
    assert os.path.isfile(path), r.stdout
    return path


@pytest.fixture(scope="module")
def pkgs():
    """(first .deb, its version, a second .deb with a higher version)."""
    if not have("dpkg-shlibdeps"):
        pytest.skip("dpkg-shlibdeps missing (scripts/deps.sh installs dpkg-dev)")
    deb1 = make_deb()
    v1 = deb_field(deb1, "Version")
    v2 = v1 + ".1"
    assert run(["dpkg", "--compare-versions", v2, "gt", v1]).returncode == 0
    deb2 = make_deb(v2)
    yield deb1, v1, deb2
    os.unlink(deb2)


def new_root(path):
    os.makedirs(os.path.join(path, "var/lib/dpkg/info"))
    os.makedirs(os.path.join(path, "var/lib/dpkg/updates"))
    open(os.path.join(path, "var/lib/dpkg/status"), "w").close()
    return str(path)


def dpkg(root, *args):
    r = run(["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends",
             f"--log={root}/dpkg.log", *args])
    # --force-depends turns the (expected) missing dependencies into warnings
    errors = [ln for ln in r.stderr.splitlines() if re.search(r"error|fail|not found", ln, re.I)]
    assert r.returncode == 0 and not errors, f"dpkg {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r


def pkg_status(root):
    r = run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", "${Status}|${Version}|${Conffiles}", PKG])
    return r.stdout if r.returncode == 0 else ""


def host_snapshot():
    snap = {}
    for p in HOST_PATHS:
        try:
            st = os.lstat(p)
            snap[p] = (stat.S_IFMT(st.st_mode), st.st_mtime_ns)
        except FileNotFoundError:
            snap[p] = None
    q = run(["dpkg-query", "-W", "-f", "${Status} ${Version}", PKG])
    snap["dpkg"] = q.stdout if q.returncode == 0 else None
    return snap


def uncomment(text):
    """The installed conffile with the package's note removed and its
    onepanel section uncommented, as the note tells the operator to."""
    out, inside, note = [], False, False
    for ln in text.splitlines(keepends=True):
        if ln.startswith("# ---- oneshield-agent package"):
            note = True
        if note:
            note = not ln.startswith("# ---- end of package note")
            continue
        if ln.startswith("#onepanel:"):
            inside = True
        elif inside and re.match(r"[A-Za-z]", ln):
            inside = False
        if inside and re.match(r"#(onepanel:|  )", ln):
            ln = ln[1:]
        out.append(ln)
    return "".join(out)


@pytest.fixture(scope="module")
def installed(pkgs, tmp_path_factory):
    root = new_root(tmp_path_factory.mktemp("debroot"))
    dpkg(root, "-i", pkgs[0])
    return root


# ---- the package -----------------------------------------------------------

def test_control_fields_and_depends(pkgs):
    deb, version, _ = pkgs
    assert deb_field(deb, "Package") == PKG
    assert deb_field(deb, "Architecture") == run(["dpkg", "--print-architecture"]).stdout.strip()
    assert os.path.basename(deb) == f"{PKG}_{version}_{deb_field(deb, 'Architecture')}.deb"
    assert deb_field(deb, "Maintainer") and deb_field(deb, "Description")
    # The version says which build it is: the agent's git describe, made a Debian version.
    # v1.2.3-4-gabc1234 -> 1.2.3+git4.gabc1234; abc1234 (no tag) -> 0~git<commits>.gabc1234,
    # which sorts before any tagged version; v1.2.3 -> 1.2.3; -dirty -> +dirty
    agent_version = run([AGENT_BIN, "--version"]).stdout.split()[-1]
    base = agent_version.removesuffix("-dirty")
    if m := re.fullmatch(r"v?(.+)-(\d+)-g([0-9a-f]+)", base):
        want = rf"{re.escape(m.group(1).replace('-', '~'))}\+git{m.group(2)}\.g{m.group(3)}"
    elif re.fullmatch(r"[0-9a-f]{7,40}", base):
        want = rf"0~git\d+\.g{base}"
    else:
        want = re.escape(base.removeprefix("v").replace("-", "~"))
    assert re.fullmatch(want + (r"\+dirty" if base != agent_version else ""), version), (agent_version, version)

    depends = deb_field(deb, "Depends")
    names = {alt.split()[0] for dep in depends.split(",") for alt in dep.split("|")}
    # the agent's libraries, and the gRPC plugin's as Depends: the shipped
    # configuration enables gRPC, and the agent refuses to start without it
    for lib in ("libc6", "libbpf1", "libmicrohttpd12", "libcjson1", "libyaml-0-2", "libgrpc29", "libprotobuf-c1"):
        assert lib in names, depends
    for dep in depends.split(","):
        ok = False
        for alt in dep.split("|"):
            m = re.match(r"\s*([a-z0-9.+-]+)(?::\S+)?\s*(?:\((<<|<=|=|>=|>>)\s*(\S+)\))?\s*$", alt)
            assert m, alt
            q = run(["dpkg-query", "-W", "-f", "${Status}|${Version}", m.group(1)])
            if q.returncode or not q.stdout.startswith("install ok installed"):
                continue
            have_v = q.stdout.split("|")[1]
            ops = {"<<": "lt", "<=": "le", "=": "eq", ">=": "ge", ">>": "gt"}
            if not m.group(2) or run(["dpkg", "--compare-versions", have_v, ops[m.group(2)], m.group(3)]).returncode == 0:
                ok = True
        assert ok, f"Depends {dep.strip()} is not satisfied by this machine's packages"


def test_contents_modes_conffiles_and_scripts(pkgs, tmp_path):
    deb = pkgs[0]
    listing = {}
    for ln in run(["dpkg-deb", "-c", deb]).stdout.splitlines():
        perms, owner, _size, _date, _time, path = ln.split(None, 5)
        assert owner == "root/root", ln
        if not perms.startswith("d"):
            listing[path.removeprefix(".")] = perms
    expected = {p: stat.filemode(stat.S_IFREG | m) for p, m in FILES.items()}
    assert listing == expected

    ctl = tmp_path / "DEBIAN"
    assert run(["dpkg-deb", "-e", deb, str(ctl)]).returncode == 0
    assert (ctl / "conffiles").read_text().split() == [CONFFILE]
    summed = {"/" + ln.split(None, 1)[1] for ln in (ctl / "md5sums").read_text().splitlines()}
    assert summed == set(FILES) - {CONFFILE}   # dpkg tracks the conffile's sum itself
    for s in ("postinst", "prerm", "postrm"):
        mode = os.stat(ctl / s).st_mode
        assert mode & 0o777 == 0o755, s
        assert run(["sh", "-n", str(ctl / s)]).returncode == 0, s


def test_conffile_is_the_example_with_onepanel_commented_out(installed):
    text = open(installed + CONFFILE).read()
    doc = yaml.safe_load(text)
    assert "onepanel" not in doc, "a fresh install must not manage any files"
    assert doc["api"]["rest_listen"].startswith("127.0.0.1:") and doc["api"]["grpc_listen"].startswith("127.0.0.1:")
    with open(os.path.join(ROOT, "etc", "agent.yaml")) as f:
        assert uncomment(text) == f.read()


def test_installed_agent_runs_and_loads_the_packaged_plugin(installed, tmp_path):
    agent = installed + f"/usr/sbin/{PKG}"
    plugin = installed + f"/usr/lib/{PKG}/{PKG}-grpc.so"
    assert run([agent, "--version"]).stdout == run([AGENT_BIN, "--version"]).stdout
    r = run([agent, "-t", "-c", installed + CONFFILE])
    assert r.returncode == 0 and "is valid" in r.stdout, r.stderr
    assert run([agent, "-h"]).returncode == 0 and run([agent, "--bogus"]).returncode == 2

    # The installed configuration on free ports, with the installed (stripped,
    # 0644 root-owned) plugin: it must pass the trust check and serve.
    rp, gp = free_port(), free_port()
    text = open(installed + CONFFILE).read().replace(":9440", f":{rp}").replace(":9441", f":{gp}")
    assert f"token_file: /etc/{PKG}/token" in text
    text = text.replace(f"/etc/{PKG}/token", installed + f"/etc/{PKG}/token")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(text)
    env = dict(os.environ, ONESHIELD_GRPC_PLUGIN=plugin)
    p = subprocess.Popen([agent, "-v", "-c", str(cfg)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = LogFile(p.stderr)
    try:
        log.wait_line(re.escape(f"grpc: plugin {plugin} loaded"))
        log.wait_line(rf"gRPC API listening on 127\.0\.0\.1:{gp}")
        register_token(f"127.0.0.1:{rp}", installed + f"/etc/{PKG}/token")
        register_token(f"127.0.0.1:{gp}", installed + f"/etc/{PKG}/token")
        with anonymous():
            assert requests.get(f"http://127.0.0.1:{rp}/v1/status", timeout=10).status_code == 401
        st = requests.get(f"http://127.0.0.1:{rp}/v1/status", timeout=10).json()
        assert st["version"] == run([AGENT_BIN, "--version"]).stdout.split()[-1]
        assert st["onepanel"]["configured"] is False
        import grpc
        with grpc.insecure_channel(f"127.0.0.1:{gp}") as ch:
            assert ch.unary_unary("/oneshield.agent.v1.Agent/GetStatus")(b"", timeout=10)
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
        print(log.text())
    assert rc == 0


def test_lifecycle_install_upgrade_remove_purge(pkgs, tmp_path):
    deb1, v1, deb2 = pkgs
    v2 = deb_field(deb2, "Version")
    before = host_snapshot()
    root = new_root(tmp_path / "root")

    # install: files, modes, the state directory, the conffile registered,
    # the unit enabled by deb-systemd-helper although systemd is not running
    dpkg(root, "-i", deb1)
    assert pkg_status(root).startswith(f"install ok installed|{v1}|")
    assert re.search(rf"^ {re.escape(CONFFILE)} [0-9a-f]{{32}}$", pkg_status(root).split("|", 2)[2], re.M)
    for path, mode in FILES.items():
        st = os.lstat(root + path)
        assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o7777 == mode and st.st_uid == 0 and st.st_gid == 0, path
    st = os.stat(f"{root}/var/lib/{PKG}")
    assert stat.S_ISDIR(st.st_mode) and st.st_mode & 0o7777 == 0o750 and st.st_uid == 0
    wants = f"{root}/etc/systemd/system/multi-user.target.wants/{UNIT}"
    assert os.readlink(wants) == f"/lib/systemd/system/{UNIT}"
    # the API token, made by postinst (the unit's /etc is read-only for the agent)
    token = f"{root}/etc/{PKG}/token"
    st = os.lstat(token)
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o7777 == 0o600 and st.st_uid == 0
    tok = open(token).read()
    assert re.fullmatch(r"[0-9a-f]{64}\n", tok), tok

    # upgrade: a locally modified conffile is kept as it is
    with open(root + CONFFILE, "a") as f:
        f.write("# changed by the operator\n")
    open(f"{root}/var/lib/{PKG}/spool-marker", "w").close()
    dpkg(root, "-i", deb2)
    assert pkg_status(root).startswith(f"install ok installed|{v2}|")
    assert open(root + CONFFILE).read().endswith("# changed by the operator\n")
    assert not [n for n in os.listdir(f"{root}/etc/{PKG}") if n not in ("agent.yaml", "token")]   # no .dpkg-dist/.dpkg-new
    assert open(token).read() == tok   # an upgrade keeps the token
    assert os.path.exists(f"{root}/var/lib/{PKG}/spool-marker")
    assert os.path.islink(wants)

    # remove: the program goes, the configuration and the state stay, the unit is masked
    dpkg(root, "-r", PKG)
    assert pkg_status(root).startswith("deinstall ok config-files|")
    assert not os.path.exists(root + f"/usr/sbin/{PKG}") and not os.path.exists(root + f"/lib/systemd/system/{UNIT}")
    assert open(root + CONFFILE).read().endswith("# changed by the operator\n")
    assert open(token).read() == tok
    assert os.path.isdir(f"{root}/var/lib/{PKG}")
    assert os.readlink(f"{root}/etc/systemd/system/{UNIT}") == "/dev/null"

    # purge: nothing of the package is left anywhere in the root
    dpkg(root, "-P", PKG)
    assert pkg_status(root) == "" or pkg_status(root).startswith("unknown ok not-installed")
    left = []
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            if PKG in n:
                left.append(os.path.join(d, n))
    assert not left, left

    assert host_snapshot() == before, "installing into the throwaway root changed this machine"


# ---- the unit --------------------------------------------------------------

def unit_values(key):
    vals = []
    for ln in open(UNIT_SRC):
        if ln.startswith(key + "="):
            vals += ln.split("=", 1)[1].split()
    return vals


@pytest.mark.skipif(not have("systemd-analyze"), reason="systemd-analyze missing (package systemd)")
def test_unit_verifies_and_is_hardened(installed, tmp_path):
    """systemd-analyze verify on the installed unit, its program paths
    pointed into the throwaway root (verify checks that they exist) and the
    man page of Documentation= looked up there."""
    text = open(f"{installed}/lib/systemd/system/{UNIT}").read()
    assert text == open(UNIT_SRC).read()
    unit = tmp_path / UNIT
    unit.write_text(text.replace(f"/usr/sbin/{PKG}", f"{installed}/usr/sbin/{PKG}"))
    env = dict(os.environ, MANPATH=f"{installed}/usr/share/man")
    r = run(["systemd-analyze", "verify", str(unit)], env=env)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
    r = run(["systemd-analyze", "security", "--offline=true", str(unit)])
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    print(m.group(0))
    assert float(m.group(1)) < 5.0, "hardening dropped? " + r.stdout


def syscall_set(names):
    """The system calls of names, with @groups expanded by systemd-analyze."""
    out, todo, seen = set(), list(names), set()
    while todo:
        name = todo.pop()
        if not name.startswith("@"):
            out.add(name)
            continue
        if name in seen:
            continue
        seen.add(name)
        r = run(["systemd-analyze", "syscall-filter", name])
        assert r.returncode == 0, r.stderr
        todo += [ln.strip() for ln in r.stdout.splitlines()[1:] if ln.strip() and not ln.strip().startswith("#")]
    return out


@pytest.mark.skipif(not have("systemd-analyze"), reason="systemd-analyze missing (package systemd)")
def test_syscall_filter_allows_what_the_agent_calls():
    """The first SystemCallFilter= line is the allow list; later "~" lines
    take calls out of it."""
    lines = [ln.split("=", 1)[1].split() for ln in open(UNIT_SRC) if ln.startswith("SystemCallFilter=")]
    assert lines and lines[0][0] == "@system-service"
    allowed = syscall_set(lines[0])
    for extra in lines[1:]:
        if extra[0].startswith("~"):
            allowed -= syscall_set([extra[0][1:]] + extra[1:])
        else:
            allowed |= syscall_set(extra)
    assert set(AGENT_SYSCALLS) - allowed == set()
    assert "ptrace" not in allowed and "process_vm_writev" not in allowed


def test_every_capability_is_explained():
    caps = unit_values("CapabilityBoundingSet")
    assert caps and "CAP_SYS_ADMIN" not in caps
    text = open(UNIT_SRC).read()
    for c in caps:
        assert re.search(rf"^#\s+{c}\s", text, re.M), f"{c} has no comment in the unit"
    man = open(os.path.join(ROOT, "man", f"{PKG}.8")).read()
    assert set(re.findall(r"CAP_[A-Z_]+", man.split(".SH SYSTEMD", 1)[1].split(".SH", 1)[0])) == set(caps)


@pytest.mark.skipif(not (have("setpriv") and have("unshare")), reason="setpriv/unshare missing (package util-linux)")
@pytest.mark.parametrize("procfs", [False, True], ids=["default", "procfs"])
def test_unit_capabilities_are_enough(tmp_path, procfs):
    """The agent with only the unit's bounding set, no_new_privs and a
    read-only /proc (ReadOnlyPaths=/proc), as systemd starts it, reaches the
    same mode and tracking as with full root, and a config apply (whose
    validator inherits all that) succeeds."""
    assert "/proc" in unit_values("ReadOnlyPaths")
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in unit_values("CapabilityBoundingSet"))
    bounded = ["unshare", "--mount", "--propagation=private", "sh", "-c",
               'mount -o remount,bind,ro /proc && exec "$@"', "sh",
               "setpriv", f"--bounding-set=-all,{caps}", "--inh-caps=-all", "--no-new-privs", AGENT_BIN]
    env = dict(os.environ)
    if procfs:
        env["ONESHIELD_FORCE_PROCFS"] = "1"
    sim = Sim(tmp_path, access_rate=20)
    sim.start()
    procs = []
    try:
        def start(cmd, name):
            cfg = tmp_path / f"{name}.yaml"
            text = agent_yaml(sim_onepanel(sim))
            cfg.write_text(text)
            p = subprocess.Popen(cmd + ["-c", str(cfg)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            p.log = LogFile(p.stderr)
            procs.append(p)
            m = p.log.wait_line(r"REST API listening on http://([0-9.]+:\d+)")
            register_config_token(m.group(1), text)
            base = "http://" + m.group(1)

            def tracking():
                st = requests.get(base + "/v1/status", timeout=10).json()
                return st if st["onepanel"]["state"] == "running" else None
            return base, wait_for(tracking, what=f"{name} agent tracking onepanel")

        _, full = start([AGENT_BIN], "full")
        base, st = start(bounded, "bounded")
        with open(f"/proc/{procs[1].pid}/status") as f:
            capeff = int(re.search(r"^CapEff:\s*([0-9a-f]+)", f.read(), re.M).group(1), 16)
        assert capeff and not capeff & (1 << 21), "CAP_SYS_ADMIN must not be in the bounded set"
        assert st["mode"] == full["mode"]
        for key in ("process_events", "process_events_transport", "scheduler_delay"):
            assert st["ebpf"].get(key) == full["ebpf"].get(key), (key, full["ebpf"], st["ebpf"])
        assert st["onepanel"]["tracking"] == full["onepanel"]["tracking"]
        assert st["onepanel"]["pid"] == sim.proc.pid

        conf = open(sim.conf).read() + 'message "applied under the bounded set";\n'
        r = requests.post(base + "/v1/config/apply", json={"files": [{"path": sim.conf, "content": conf}]}, timeout=60)
        assert r.status_code == 200 and r.json()["status"] == "applied", r.text
        if st["mode"] == "ebpf":
            r = requests.post(base + "/v1/probes/syscalls", json={"duration_s": 1}, timeout=10)
            assert r.status_code == 202, r.text

            def finished():
                j = requests.get(base + "/v1/probes/syscalls", timeout=10).json()
                return j if j["state"] == "finished" else None
            j = wait_for(finished, what="the investigation to finish")
            assert j["targets"] >= 1 and sum(s["count"] for s in j["syscalls"]) > 0, j
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            print(p.log.text())
        sim.stop()
    assert all(p.returncode == 0 for p in procs)


# ---- man page, lintian -------------------------------------------------------

@pytest.mark.skipif(not have("man"), reason="man missing (package man-db)")
def test_man_page_renders_and_covers_flags_and_environment(installed):
    page = f"{installed}/usr/share/man/man8/{PKG}.8.gz"
    r = run(["man", "--warnings", "-E", "UTF-8", "-l", page], env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    text = r.stdout
    for word in ("-c, --config", "-t, --test", "-v, --verbose", "--version", "-h, --help",
                 "ONESHIELD_FORCE_PROCFS", "ONESHIELD_NO_PROC_CONNECTOR", "ONESHIELD_GRPC_PLUGIN",
                 "ONESHIELD_TEST_EVENTS", "SIGHUP", "SIGTERM", "EXIT STATUS", CONFFILE,
                 f"/usr/lib/{PKG}/{PKG}-grpc.so", f"/var/lib/{PKG}"):
        assert word in text, word
    src = gzip.decompress(open(page, "rb").read()).decode()
    assert "@VERSION@" not in src and "@DATE@" not in src


@pytest.mark.skipif(not have("lintian"), reason="lintian missing")
def test_lintian(pkgs):
    r = run(["lintian", "--pedantic", "--no-tag-display-limit", pkgs[0]], timeout=300)
    tags = [ln for ln in r.stdout.splitlines() if re.match(r"[EWIPX]: ", ln)]
    print("lintian:", *(tags or ["no tags"]), sep="\n  ")
    assert not [t for t in tags if t.startswith("E: ")], tags
