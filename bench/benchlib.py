"""Process helpers shared by loom's bench scripts: start a server pinned to a CPU, wait
for its port, stop it (its whole process group, by PID)."""
import os, signal, socket, subprocess, time


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
