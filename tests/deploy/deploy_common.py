"""Shared helpers of the tests in tests/deploy: where things are, the tools,
child processes that are always cleaned up, free ports and YAML as JSON.

The tests run under ctest, which sets MOESERVE_SOURCE_DIR, MOESERVE_BINARY_DIR
and MOESERVE_CACHE_DIR (the cache tools/setup.sh fills with the npm packages,
helm and kubectl).
"""
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time

SOURCE_DIR = os.environ.get("MOESERVE_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY_DIR = os.environ.get("MOESERVE_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))
CACHE_DIR = os.environ.get("MOESERVE_CACHE_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "moeserve")
NODE_MODULES = os.path.join(CACHE_DIR, "npm", "node_modules")
HELM = os.path.join(CACHE_DIR, "bin", "helm")
CHART = os.path.join(SOURCE_DIR, "helm", "moeserve")
DASHBOARD = os.path.join(SOURCE_DIR, "deploy", "grafana", "moeserve.json")
RULES = os.path.join(SOURCE_DIR, "deploy", "prometheus", "rules.yaml")
HERE = os.path.dirname(os.path.abspath(__file__))


def require(path, what):
    """Fails (not skips) when a tool is missing: tools/setup.sh installs them all."""
    if not os.path.exists(path):
        sys.exit(f"{what} is missing at {path}; run `bash tools/setup.sh` "
                 f"(MOESERVE_CACHE_DIR={CACHE_DIR})")


def run(args, timeout=120, check=False, **kwargs):
    """Runs a command; its CompletedProcess with text stdout and stderr."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def yaml_to_json(path):
    """Parses a YAML file (one document) with the pinned npm `yaml` package."""
    script = ("const fs=require('fs');const Y=require(process.argv[2]+'/yaml');"
              "process.stdout.write(JSON.stringify(Y.parse(fs.readFileSync(process.argv[1],'utf8'),"
              "{uniqueKeys:true})))")
    out = run(["node", "-e", script, path, NODE_MODULES], check=True).stdout
    return json.loads(out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """In the child before exec: SIGTERM when the test process dies, even by
    SIGKILL (a ctest timeout), so that no server outlives its test."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    """Child processes, each in its own process group, stopped together:
    SIGTERM to each group, then SIGKILL to what is left. Use as a context
    manager so that they are stopped however the test ends."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.children = []  # (name, Popen, log path)

    def start(self, name, args, env=None):
        log = os.path.join(self.log_dir, f"{name}.log")
        with open(log, "wb") as out:
            p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=env, preexec_fn=_die_with_parent)
        self.children.append((name, p, log))
        return p

    def log(self, name):
        for n, _, path in self.children:
            if n == name:
                with open(path, errors="replace") as f:
                    return f.read()
        return ""

    def logs(self):
        return "\n".join(f"--- {n} ({path}):\n{self.log(n)[-4000:]}" for n, _, path in self.children)

    def check_running(self):
        for name, p, _ in self.children:
            if p.poll() is not None:
                raise AssertionError(f"{name} exited with {p.returncode}\n{self.logs()}")

    def stop(self, seconds=5.0):
        for _, p, _ in self.children:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + seconds
        for _, p, _ in self.children:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group: also children the process left behind
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def wait_for(condition, seconds, interval=0.2):
    """Polls condition() until it is truthy or `seconds` pass; its last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
