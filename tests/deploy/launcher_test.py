"""helm/moeserve/files/launch-workers.sh, the script worker pods run: one
process per GPU with the right rank, --device and output prefix,
the pod index from POD_INDEX or the pod name, the first exit stopping the
others and deciding the status, SIGTERM passed on. It runs real processes
(sh); the moeserve-worker it normally starts is exercised through it by
prometheus_live_test.py.
"""
import os
import signal
import subprocess
import tempfile
import time
import unittest

from deploy_common import CHART

LAUNCHER = os.path.join(CHART, "files", "launch-workers.sh")


def launch(args, env=None, timeout=30):
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("POD_INDEX", "POD_NAME", "CUDA_VISIBLE_DEVICES")}
    full_env.update(env or {})
    return subprocess.run(["bash", LAUNCHER, *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


# A worker script's GPU: the N of its last argument, --device cuda:N.
GPU_OF_WORKER = 'eval "d=\\${$#}"; g=${d#cuda:}; '


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class LauncherTest(unittest.TestCase):
    def test_ranks_devices_and_output_prefix(self):
        r = launch(["--local-workers", "3", "--pod-index", "2", "--",
                    "sh", "-c", 'echo "gpu=$CUDA_VISIBLE_DEVICES args=$*"; sleep 0.5', "worker",
                    "--model", "/m"])
        self.assertEqual(r.returncode, 0, r.stderr)
        host = os.uname().nodename
        # Every worker sees all the GPUs and is told which one is its own.
        self.assertEqual(sorted(r.stdout.splitlines()), [
            f"[rank 6] gpu= args=--model /m --rank 6 --worker-id {host}/gpu0 --device cuda:0",
            f"[rank 7] gpu= args=--model /m --rank 7 --worker-id {host}/gpu1 --device cuda:1",
            f"[rank 8] gpu= args=--model /m --rank 8 --worker-id {host}/gpu2 --device cuda:2",
        ])
        r = launch(["--local-workers", "2", "--pod-index", "0", "--device", "cpu", "--",
                    "sh", "-c", 'echo "$*"; sleep 0.5', "worker"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("[rank 1] --rank 1 --worker-id " + host + "/gpu1 --device cpu", r.stdout)
        r = launch(["--device", "tpu", "--", "true"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--device must be cuda or cpu", r.stderr)

    def test_pod_index_from_the_environment_or_the_pod_name(self):
        # Each worker prints, then lives on a little: the first to exit stops the others.
        command = ["--", "sh", "-c", 'echo "$*"; sleep 0.5', "worker"]
        r = launch(["--local-workers", "2", *command], env={"POD_INDEX": "3", "POD_NAME": "w-0"})
        self.assertIn("[rank 7] --rank 7 --worker-id w-0/gpu1", r.stdout)
        # An empty POD_INDEX (no pod-index label on an old cluster): the name's ordinal.
        r = launch(["--local-workers", "2", *command], env={"POD_INDEX": "", "POD_NAME": "moeserve-workers-4"})
        self.assertIn("[rank 9] --rank 9 --worker-id moeserve-workers-4/gpu1", r.stdout)
        r = launch(["--local-workers", "2", *command], env={"POD_NAME": "no-ordinal"})
        self.assertEqual(r.returncode, 2)
        self.assertIn("no pod index", r.stderr)

    def test_bad_arguments(self):
        for args in (["--local-workers", "0", "--", "true"], ["--local-workers", "x", "--", "true"],
                     ["--pod-index", "0"], ["--bogus"]):
            with self.subTest(args=args):
                self.assertEqual(launch(args).returncode, 2)

    def test_first_exit_stops_the_others_and_sets_the_status(self):
        with tempfile.TemporaryDirectory() as tmp:
            # GPU 1 fails at once; the other two would run for a minute.
            script = (GPU_OF_WORKER + f'echo $$ > {tmp}/pid.$g; '
                      f'if [ "$g" = 1 ]; then sleep 0.3; exit 3; fi; exec sleep 60')
            start = time.monotonic()
            r = launch(["--local-workers", "3", "--pod-index", "0", "--", "sh", "-c", script, "w"])
            self.assertEqual(r.returncode, 3, r.stderr)
            self.assertLess(time.monotonic() - start, 10)
            self.assertIn("exited with status 3; stopping the others", r.stderr)
            for gpu in (0, 2):
                with open(f"{tmp}/pid.{gpu}") as f:
                    self.assertFalse(alive(int(f.read())), f"worker on GPU {gpu} still runs")

    def test_sigterm_reaches_every_worker(self):
        with tempfile.TemporaryDirectory() as tmp:
            script = (GPU_OF_WORKER + f'trap "echo stopped > {tmp}/term.$g; exit 0" TERM; '
                      f'touch {tmp}/up.$g; while :; do sleep 0.05; done')
            p = subprocess.Popen(["bash", LAUNCHER, "--local-workers", "2", "--pod-index", "0", "--",
                                  "sh", "-c", script, "w"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                deadline = time.monotonic() + 10
                while not all(os.path.exists(f"{tmp}/up.{g}") for g in (0, 1)):
                    self.assertLess(time.monotonic(), deadline, "workers did not start")
                    time.sleep(0.05)
                p.send_signal(signal.SIGTERM)
                _, err = p.communicate(timeout=15)
                self.assertEqual(p.returncode, 0, err)
                self.assertIn("stopping the workers", err)
                for g in (0, 1):
                    with open(f"{tmp}/term.{g}") as f:
                        self.assertEqual(f.read().strip(), "stopped")
            finally:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


if __name__ == "__main__":
    unittest.main(verbosity=2)
