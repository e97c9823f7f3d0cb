"""deploy/Dockerfile, read rather than built (no container registry can be
reached here, so base images cannot be pulled): a CUDA devel build stage that
installs the packages with tools/setup.sh and builds the real CMake targets,
a CUDA runtime stage with a non-root user that matches the Helm chart, the
chart's ports, copies only of files that exist and that .dockerignore keeps.
deploy/runtime-packages.sh, which picks the runtime stage's packages, runs
for real on the binaries of this build.
"""
import fnmatch
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from deploy_common import BINARY_DIR, CHART, SOURCE_DIR, run, yaml_to_json

DOCKERFILE = os.path.join(SOURCE_DIR, "deploy", "Dockerfile")
BINARIES = {
    "moeserve-coordinator": "tools/coordinator/moeserve-coordinator",
    "moeserve-worker": "tools/worker/moeserve-worker",
    "moeserve": "tools/moeserve/moeserve",
}


def instructions():
    """(keyword, arguments) of each instruction, continuation lines joined."""
    with open(DOCKERFILE) as f:
        text = re.sub(r"\\\n", " ", f.read())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), re.sub(r"\s+", " ", rest.strip())))
    return out


def stages():
    """[(name, base image, [instructions])]."""
    out = []
    for keyword, args in instructions():
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+) AS (\S+)", args, re.I)
            assert m, f"every stage is named: FROM {args}"
            out.append((m.group(2), m.group(1), []))
        elif out:
            out[-1][2].append((keyword, args))
    return out


def dockerignore_patterns():
    with open(os.path.join(SOURCE_DIR, ".dockerignore")) as f:
        return [l.strip() for l in f if l.strip() and not l.startswith("#")]


def ignored(path, patterns):
    parts = path.split("/")
    return any(fnmatch.fnmatch("/".join(parts[:i]), p.lstrip("/")) or
               (p.startswith("**/") and fnmatch.fnmatch(parts[i - 1], p[3:]))
               for p in patterns for i in range(1, len(parts) + 1))


class DockerfileTest(unittest.TestCase):
    def test_build_and_runtime_stages_on_the_same_cuda(self):
        (build_name, build_base, build), (runtime_name, runtime_base, runtime) = stages()
        self.assertEqual((build_name, runtime_name), ("build", "runtime"))
        self.assertEqual(build_base, "nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION}")
        self.assertEqual(runtime_base, "nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}")
        runs = " && ".join(a for k, a in build if k == "RUN")
        self.assertIn("bash tools/setup.sh", runs)
        self.assertIn("-DMOESERVE_CUDA=ON", runs)
        targets = re.search(r"--target ((?:[\w-]+ ?)+)", runs).group(1).split()
        self.assertEqual(sorted(targets), sorted(BINARIES))
        for target, path in BINARIES.items():
            self.assertIn(f"build/{path}", runs)
            # A real target of this tree, built where the Dockerfile looks for it.
            self.assertTrue(os.access(os.path.join(BINARY_DIR, path), os.X_OK), path)
            cmake = os.path.join(SOURCE_DIR, os.path.dirname(path), "CMakeLists.txt")
            with open(cmake) as f:
                self.assertRegex(f.read(), rf"add_executable\({re.escape(target)}\b")

    def test_runtime_stage_runs_as_the_charts_non_root_user_on_its_ports(self):
        _, _, runtime = stages()[1]
        values = yaml_to_json(os.path.join(CHART, "values.yaml"))
        users = [a for k, a in runtime if k == "USER"]
        self.assertEqual(len(users), 1)
        uid, gid = users[0].split(":")
        for part in ("coordinator", "workers"):
            ctx = values[part]["podSecurityContext"]
            self.assertEqual((int(uid), int(gid)), (ctx["runAsUser"], ctx["runAsGroup"]))
        self.assertNotEqual(int(uid), 0)
        exposed = sorted(int(p) for k, a in runtime if k == "EXPOSE" for p in a.split())
        self.assertEqual(exposed, sorted([values["coordinator"]["grpcPort"], values["coordinator"]["internalPort"],
                                          values["coordinator"]["metricsPort"]]))
        copied = [a for k, a in runtime if k == "COPY"]
        self.assertTrue(all(a.startswith("--from=build ") for a in copied), copied)
        self.assertTrue(any("/usr/local/bin/" in a for a in copied))
        # The chart's commands are on PATH there.
        cmd = [a for k, a in runtime if k == "CMD"][-1]
        self.assertIn('"moeserve-coordinator"', cmd)

    def test_copied_sources_exist_and_are_not_ignored(self):
        patterns = dockerignore_patterns()
        for p in ("build", "build-ops", "build-sanitize", ".git", "tools/npm/node_modules"):
            self.assertTrue(ignored(p, patterns), f".dockerignore lets {p} into the context")
        for p in ("tools/setup.sh", "scheduler/server/metrics.cc", "deploy/runtime-packages.sh"):
            self.assertFalse(ignored(p, patterns), p)
        build = stages()[0][2]
        for _, args in (i for i in build if i[0] == "COPY"):
            for src in args.split()[:-1]:
                if src != ".":
                    self.assertTrue(os.path.exists(os.path.join(SOURCE_DIR, src)), src)
                    self.assertFalse(ignored(src.rstrip("/"), patterns), src)

    def test_runtime_packages_cover_the_binaries(self):
        binaries = [os.path.join(BINARY_DIR, p) for p in BINARIES.values()]
        r = run(["bash", os.path.join(SOURCE_DIR, "deploy", "runtime-packages.sh"), *binaries])
        self.assertEqual(r.returncode, 0, r.stderr)
        packages = r.stdout.split()
        self.assertEqual(packages, sorted(set(packages)))
        self.assertTrue(any(p.startswith("libgrpc++") for p in packages), packages)
        self.assertTrue(any(p.startswith("libopenblas") for p in packages), packages)
        for p in packages:
            status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
            self.assertEqual(status.stdout, "install ok installed", p)

    def test_runtime_packages_refuses_libraries_no_package_owns(self):
        script = os.path.join(SOURCE_DIR, "deploy", "runtime-packages.sh")
        coordinator = os.path.join(BINARY_DIR, BINARIES["moeserve-coordinator"])
        with tempfile.TemporaryDirectory() as tmp:
            # A copy of one of its libraries, found first through LD_LIBRARY_PATH.
            ldd = run(["ldd", coordinator], check=True).stdout
            lib = re.search(r"(libgrpc\+\+\.so\S*) => (\S+)", ldd)
            shutil.copy(lib.group(2), os.path.join(tmp, lib.group(1)))
            r = run(["bash", script, coordinator], env={**os.environ, "LD_LIBRARY_PATH": tmp})
            self.assertEqual(r.returncode, 1)
            self.assertIn(f"no Debian package owns {lib.group(1)}", r.stderr)
        r = run(["bash", script, "/nonexistent"])
        self.assertNotEqual(r.returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
