"""Process helpers shared by loom's bench scripts: start a server pinned to a CPU, wait
for its port, stop it (its whole process group, by PID); the loom binary to measure; a
process's RSS."""
import os, re, signal, socket, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_dir():
    """The loom host of LOOM_BUILD (default build/) and its CMake build type; exits when it
    is missing or instrumented (sanitizer figures say nothing about RSS or speed)."""
    d = os.environ.get("LOOM_BUILD", os.path.join(ROOT, "build"))
    loom = os.path.join(d, "loom")
    if not os.access(loom, os.X_OK):
        sys.exit("soak: %s is missing (make build, or LOOM_BUILD=dir)" % loom)
    kind = "?"
    try:
        cache = open(os.path.join(d, "CMakeCache.txt")).read()
        if re.search(r"^LOOM_(SANITIZE|FUZZ):BOOL=ON", cache, re.M):
            sys.exit("soak: %s is a sanitizer build; RSS figures need a normal one (LOOM_BUILD=dir)" % d)
        m = re.search(r"^CMAKE_BUILD_TYPE:STRING=(.*)$", cache, re.M)
        kind = m.group(1) if m else "?"
    except OSError:
        pass
    return loom, kind


def rss_kb(pid):
    """VmRSS of pid in KB, or None once it is gone."""
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def wait_port(port, secs=10):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def start(cmd, port, cpu="0"):
    """Runs cmd pinned to `cpu` in a session of its own; None if `port` never accepts."""
    p = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    if not wait_port(port):
        stop(p)
        return None
    return p


def stop(p):
    if p and p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
