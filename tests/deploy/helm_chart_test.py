"""The Helm chart (helm/moeserve): `helm lint --strict` and `helm template`
over the value sets operators use, every rendered manifest validated against
the Kubernetes OpenAPI schemas (validate_manifests.mjs), what each value set
must render, values that break the schema or the chart's own checks failing
with a clear message, and the packaged chart carrying its dashboard.
"""
import base64
import glob
import json
import os
import re
import shutil
import tarfile
import tempfile
import unittest

from deploy_common import (CHART, DASHBOARD, HELM, HERE, NODE_MODULES, RULES, SOURCE_DIR, require,
                           run)

RELEASE = "moeserve"
NAMESPACE = "serving"

# name -> values files (none: the chart's defaults).
VALUE_SETS = {
    "defaults": [],
    "ep16-infiniband": [os.path.join(CHART, "examples", "ep16-infiniband.yaml")],
    "leaderworkerset": [os.path.join(CHART, "examples", "leaderworkerset.yaml")],
    "pvc-model": [os.path.join(CHART, "examples", "pvc-model.yaml")],
    "monitoring": [os.path.join(CHART, "examples", "monitoring.yaml")],
    "podmonitor": [os.path.join(HERE, "values", "podmonitor.yaml")],
    "http-api-key": [os.path.join(HERE, "values", "http-api-key.yaml")],
}


def helm(*args):
    return run([HELM, *args])


def template(tmp, name, files):
    out = os.path.join(tmp, f"{name}.yaml")
    args = ["template", RELEASE, CHART, "--namespace", NAMESPACE]
    for f in files:
        args += ["-f", f]
    r = helm(*args)
    if r.returncode != 0:
        raise AssertionError(f"helm template ({name}) failed:\n{r.stderr}")
    with open(out, "w") as f:
        f.write(r.stdout)
    return out


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found


def one(docs, kind, name=None):
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(pod_spec, name):
    for c in pod_spec["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name} in {[c['name'] for c in pod_spec['containers']]}")


def flag(args, name):
    """The value after `name` in an argument list, None when absent."""
    return args[args.index(name) + 1] if name in args else None


def env_of(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def volumes(pod_spec):
    return {v["name"]: v for v in pod_spec.get("volumes", [])}


def mounts(c):
    return {m["name"]: m for m in c.get("volumeMounts", [])}


class HelmChartTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require(HELM, "helm")
        require(os.path.join(NODE_MODULES, "kubernetes-models"), "the npm package kubernetes-models")
        cls.tmp = tempfile.mkdtemp(prefix="moeserve-helm-")
        cls.rendered = {name: template(cls.tmp, name, files) for name, files in VALUE_SETS.items()}
        out_json = os.path.join(cls.tmp, "docs.json")
        cls.validation = run(["node", os.path.join(HERE, "validate_manifests.mjs"),
                              "--node-modules", NODE_MODULES, "--out-json", out_json,
                              *cls.rendered.values()])
        with open(out_json) as f:
            by_file = json.load(f)
        cls.docs = {name: by_file[path] for name, path in cls.rendered.items()}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_lint_strict_passes_for_every_value_set(self):
        for name, files in VALUE_SETS.items():
            with self.subTest(values=name):
                args = ["lint", "--strict", CHART]
                for f in files:
                    args += ["-f", f]
                r = helm(*args)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertNotRegex(r.stdout, r"\[(WARNING|ERROR)\]", r.stdout)

    def test_rendered_manifests_match_the_kubernetes_schemas(self):
        print(self.validation.stdout, end="")
        self.assertEqual(self.validation.returncode, 0,
                         self.validation.stdout + self.validation.stderr)

    def test_defaults_one_node_of_eight_gpus(self):
        docs = self.docs["defaults"]
        self.assertEqual(sorted(d["kind"] for d in docs),
                         ["ConfigMap", "ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget",
                          "PodDisruptionBudget", "Secret", "Service", "Service", "Service", "Service",
                          "ServiceAccount", "StatefulSet"])
        deploy = one(docs, "Deployment", "moeserve-coordinator")
        self.assertEqual(deploy["spec"]["replicas"], 1)
        self.assertEqual(deploy["spec"]["strategy"]["type"], "Recreate")
        coord = container(deploy["spec"]["template"]["spec"], "coordinator")
        self.assertEqual(flag(coord["args"], "--ep-size"), "8")
        self.assertEqual(flag(coord["args"], "--listen"), "0.0.0.0:50051")
        self.assertEqual(flag(coord["args"], "--metrics-port"), "9400")
        self.assertNotIn("--redundant-experts", coord["args"])
        # Native gRPC probes against grpc.health.v1; liveness only the port.
        self.assertEqual(coord["startupProbe"]["grpc"]["port"], 50051)
        self.assertGreaterEqual(
            coord["startupProbe"]["periodSeconds"] * coord["startupProbe"]["failureThreshold"], 1800)
        self.assertEqual(coord["readinessProbe"]["grpc"]["port"], 50051)
        self.assertEqual(coord["livenessProbe"]["tcpSocket"]["port"], "grpc")

        sts = one(docs, "StatefulSet", "moeserve-workers")
        self.assertEqual(sts["spec"]["replicas"], 1)
        self.assertEqual(sts["spec"]["podManagementPolicy"], "Parallel")
        pod = sts["spec"]["template"]["spec"]
        w = container(pod, "workers")
        self.assertEqual(w["command"], ["bash", "/opt/moeserve/launcher/launch-workers.sh"])
        self.assertEqual(flag(w["args"], "--local-workers"), "8")
        worker_args = w["args"][w["args"].index("--") + 1:]
        self.assertEqual(worker_args[0], "moeserve-worker")
        self.assertEqual(flag(worker_args, "--ep-size"), "8")
        self.assertEqual(flag(worker_args, "--model"), "/models/DeepSeek-V3")
        self.assertEqual(flag(worker_args, "--coordinator"), "moeserve-internal:50052")
        self.assertEqual(w["resources"]["limits"]["nvidia.com/gpu"], "8")
        self.assertEqual(w["resources"]["requests"]["nvidia.com/gpu"], "8")
        env = env_of(w)
        self.assertEqual(env["POD_INDEX"]["fieldRef"]["fieldPath"],
                         "metadata.labels['apps.kubernetes.io/pod-index']")
        self.assertEqual(env["NCCL_IB_DISABLE"], "1")
        vols = volumes(pod)
        self.assertEqual(vols["dshm"]["emptyDir"]["medium"], "Memory")
        self.assertEqual(mounts(w)["dshm"]["mountPath"], "/dev/shm")
        self.assertEqual(vols["model"]["hostPath"]["path"], "/mnt/models")
        self.assertEqual(vols["launcher"]["configMap"]["name"], "moeserve-launcher")
        self.assertNotIn("hostIPC", pod)
        anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        self.assertEqual(anti[0]["topologyKey"], "kubernetes.io/hostname")

        # Workers reach the coordinator before it is ready: headless, not-ready addresses published.
        headless = one(docs, "Service", "moeserve-internal")
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        self.assertEqual(headless["spec"]["type"], "ClusterIP")
        self.assertTrue(headless["spec"]["publishNotReadyAddresses"])
        self.assertEqual([(p["port"], p["targetPort"]) for p in headless["spec"]["ports"]],
                         [(50052, "internal")])
        client = one(docs, "Service", "moeserve")
        self.assertEqual([(p["port"], p["targetPort"]) for p in client["spec"]["ports"]],
                         [(50051, "grpc"), (8000, "http")])
        # The OpenAI-compatible HTTP API beside gRPC, on the same Service, no key by default.
        self.assertEqual(flag(coord["args"], "--http-listen"), "0.0.0.0:8000")
        self.assertNotIn("--api-key-file", coord["args"])
        self.assertIn({"name": "http", "containerPort": 8000, "protocol": "TCP"}, coord["ports"])
        self.assertNotIn("publishNotReadyAddresses", client["spec"])
        # Only the internal Service carries the internal port.
        for svc in find(docs, "Service"):
            if svc["metadata"]["name"] != "moeserve-internal":
                self.assertNotIn(50052, [p["port"] for p in svc["spec"].get("ports", [])],
                                 svc["metadata"]["name"])
        ports = {p["name"]: p["containerPort"] for p in coord["ports"]}
        self.assertEqual(ports, {"grpc": 50051, "http": 8000, "internal": 50052, "metrics": 9400})
        self.assertEqual(flag(coord["args"], "--internal-listen"), "0.0.0.0:50052")
        self.check_internal_plane(docs, deploy["spec"]["template"]["spec"], pod, worker_args)
        coordinator_labels = deploy["spec"]["template"]["metadata"]["labels"]
        for svc in (client, headless, one(docs, "Service", "moeserve-metrics")):
            self.assertLessEqual(svc["spec"]["selector"].items(), coordinator_labels.items(), svc)
        worker_labels = sts["spec"]["template"]["metadata"]["labels"]
        for pdb, labels in ((one(docs, "PodDisruptionBudget", "moeserve-coordinator"), coordinator_labels),
                            (one(docs, "PodDisruptionBudget", "moeserve-workers"), worker_labels)):
            self.assertEqual(pdb["spec"]["maxUnavailable"], 0)
            self.assertLessEqual(pdb["spec"]["selector"]["matchLabels"].items(), labels.items())

        # The dashboard ConfigMap holds deploy/grafana/moeserve.json.
        cm = one(docs, "ConfigMap", "moeserve-dashboard")
        self.assertEqual(cm["metadata"]["labels"]["grafana_dashboard"], "1")
        with open(DASHBOARD) as f:
            self.assertEqual(json.loads(cm["data"]["moeserve.json"]), json.load(f))
        launcher = one(docs, "ConfigMap", "moeserve-launcher")
        with open(os.path.join(CHART, "files", "launch-workers.sh")) as f:
            self.assertEqual(launcher["data"]["launch-workers.sh"], f.read().rstrip("\n"))

    def check_internal_plane(self, docs, coordinator_pod, worker_pod, worker_args):
        """The tokens' Secret, who mounts which key, and the NetworkPolicy."""
        secret = one(docs, "Secret", "moeserve-internal")
        tokens = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        self.assertEqual(sorted(tokens), ["admin-token", "token"])
        for t in tokens.values():
            self.assertRegex(t, r"^[A-Za-z0-9]{48}$")
        self.assertNotEqual(tokens["token"], tokens["admin-token"])

        coord = container(coordinator_pod, "coordinator")
        self.assertEqual(flag(coord["args"], "--internal-token-file"), "/etc/moeserve/internal/token")
        self.assertEqual(flag(coord["args"], "--admin-token-file"), "/etc/moeserve/internal/admin-token")
        self.assertEqual(mounts(coord)["coordinator-secrets"]["mountPath"], "/etc/moeserve/internal")
        cvol = volumes(coordinator_pod)["coordinator-secrets"]["secret"]
        self.assertEqual(cvol["secretName"], "moeserve-internal")
        self.assertEqual(sorted(i["key"] for i in cvol["items"]), ["admin-token", "token"])
        # Workers get the internal token and never Admin's.
        self.assertEqual(flag(worker_args, "--internal-token-file"), "/etc/moeserve/worker-token/token")
        w = container(worker_pod, "workers")
        self.assertEqual(mounts(w)["worker-token"]["mountPath"], "/etc/moeserve/worker-token")
        wvol = volumes(worker_pod)["worker-token"]["secret"]
        self.assertEqual(wvol["secretName"], "moeserve-internal")
        self.assertEqual([i["key"] for i in wvol["items"]], ["token"])

        # Anyone reaches the client and metrics ports; only worker pods the rest.
        policy = one(docs, "NetworkPolicy", "moeserve-coordinator")
        self.assertEqual(policy["spec"]["policyTypes"], ["Ingress"])
        open_rule, worker_rule = policy["spec"]["ingress"]
        self.assertNotIn("from", open_rule)
        self.assertEqual(sorted(p["port"] for p in open_rule["ports"]), [8000, 9400, 50051])
        self.assertNotIn("ports", worker_rule)
        peer = worker_rule["from"][0]["podSelector"]
        self.assertEqual(peer["matchLabels"], {"app.kubernetes.io/name": "moeserve",
                                               "app.kubernetes.io/instance": RELEASE})
        self.assertEqual(peer["matchExpressions"],
                         [{"key": "app.kubernetes.io/component", "operator": "In",
                           "values": ["worker", "leader"]}])
        self.assertEqual(len(worker_rule["from"]), 1)

    def test_ep16_infiniband_two_nodes_with_redundant_experts(self):
        docs = self.docs["ep16-infiniband"]
        coord = container(one(docs, "Deployment")["spec"]["template"]["spec"], "coordinator")
        self.assertEqual(flag(coord["args"], "--ep-size"), "16")
        self.assertEqual(flag(coord["args"], "--redundant-experts"), "32")
        self.assertEqual(flag(coord["args"], "--max-batch-tokens"), "8192")
        sts = one(docs, "StatefulSet")
        self.assertEqual(sts["spec"]["replicas"], 2)
        pod = sts["spec"]["template"]["spec"]
        self.assertTrue(pod["hostIPC"])
        self.assertEqual(pod["nodeSelector"], {"nvidia.com/gpu.product": "NVIDIA-H200"})
        w = container(pod, "workers")
        worker_args = w["args"][w["args"].index("--") + 1:]
        self.assertEqual(flag(worker_args, "--ep-size"), "16")
        self.assertEqual(flag(worker_args, "--kv-cache-tokens"), "262144")
        for side in ("requests", "limits"):
            self.assertEqual(w["resources"][side]["rdma/rdma_shared_device_a"], "1")
            self.assertEqual(w["resources"][side]["nvidia.com/gpu"], "8")
        env = env_of(w)
        self.assertEqual(env["NCCL_IB_HCA"], "=mlx5_0,mlx5_1,mlx5_2,mlx5_3,mlx5_4,mlx5_5,mlx5_6,mlx5_7")
        self.assertEqual(env["NCCL_IB_GID_INDEX"], "3")
        self.assertEqual(env["NCCL_SOCKET_IFNAME"], "eth0")
        self.assertEqual(env["NCCL_IB_QPS_PER_CONNECTION"], "2")
        self.assertEqual(env["NCCL_DEBUG"], "INFO")
        self.assertNotIn("NCCL_IB_DISABLE", env)
        self.assertEqual(volumes(pod)["model"]["persistentVolumeClaim"],
                         {"claimName": "models", "readOnly": True})
        self.assertEqual(volumes(pod)["dshm"]["emptyDir"]["sizeLimit"], "128Gi")

    def test_leaderworkerset_groups(self):
        docs = self.docs["leaderworkerset"]
        self.assertEqual(find(docs, "Deployment") + find(docs, "StatefulSet"), [])
        lws = one(docs, "LeaderWorkerSet", "moeserve")
        self.assertEqual(lws["spec"]["replicas"], 2)
        t = lws["spec"]["leaderWorkerTemplate"]
        self.assertEqual(t["size"], 2)
        self.assertEqual(t["restartPolicy"], "RecreateGroupOnPodRestart")
        self.assertEqual(lws["metadata"]["annotations"]["leaderworkerset.sigs.k8s.io/exclusive-topology"],
                         "topology.kubernetes.io/zone")
        leader = t["leaderTemplate"]["spec"]
        self.assertEqual([c["name"] for c in leader["containers"]], ["coordinator", "workers"])
        self.assertEqual(flag(container(leader, "coordinator")["args"], "--ep-size"), "16")
        leader_workers = container(leader, "workers")["args"]
        self.assertEqual(flag(leader_workers, "--coordinator"), "127.0.0.1:50052")
        w = container(t["workerTemplate"]["spec"], "workers")
        self.assertEqual(flag(w["args"], "--coordinator"), "$(LWS_LEADER_ADDRESS):50052")
        self.check_internal_plane(docs, leader, t["workerTemplate"]["spec"], w["args"])
        self.assertNotIn("coordinator-secrets", volumes(t["workerTemplate"]["spec"]))
        # The policy guards the leaders, where the coordinators run.
        policy = one(docs, "NetworkPolicy")
        self.assertLessEqual(policy["spec"]["podSelector"]["matchLabels"].items(),
                             t["leaderTemplate"]["metadata"]["labels"].items())
        self.assertEqual(env_of(w)["POD_INDEX"]["fieldRef"]["fieldPath"],
                         "metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']")
        self.assertEqual(w["resources"]["limits"]["nvidia.com/hostdev"], "8")
        # Clients and Prometheus reach the leaders, where the coordinators run.
        leader_labels = t["leaderTemplate"]["metadata"]["labels"]
        for name in ("moeserve", "moeserve-metrics"):
            svc = one(docs, "Service", name)
            self.assertLessEqual(svc["spec"]["selector"].items(), leader_labels.items())
        self.assertEqual(find(docs, "Service", "moeserve-internal"), [])
        self.assertEqual(one(docs, "PodDisruptionBudget")["spec"]["minAvailable"], 4)

    def test_http_api_behind_api_keys(self):
        docs = self.docs["http-api-key"]
        leader = one(docs, "LeaderWorkerSet", "moeserve")["spec"]["leaderWorkerTemplate"][
            "leaderTemplate"]["spec"]
        coord = container(leader, "coordinator")
        self.assertEqual(flag(coord["args"], "--http-listen"), "0.0.0.0:8080")
        self.assertEqual(flag(coord["args"], "--api-key-file"), "/etc/moeserve/api-keys/keys.txt")
        self.assertEqual(mounts(coord)["api-keys"]["mountPath"], "/etc/moeserve/api-keys")
        self.assertEqual(volumes(leader)["api-keys"]["secret"]["secretName"], "moeserve-api-keys")
        http = [p for p in one(docs, "Service", "moeserve")["spec"]["ports"] if p["name"] == "http"]
        self.assertEqual([(p["port"], p["targetPort"]) for p in http], [(80, "http")])

    def test_model_on_a_pvc(self):
        docs = self.docs["pvc-model"]
        pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
        w = container(pod, "workers")
        self.assertEqual(volumes(pod)["model"]["persistentVolumeClaim"]["claimName"], "hf-checkpoints")
        self.assertEqual(mounts(w)["model"], {"name": "model", "mountPath": "/models", "readOnly": True,
                                              "subPath": "qwen"})
        self.assertEqual(flag(w["args"], "--local-workers"), "4")
        self.assertEqual(flag(w["args"], "--ep-size"), "4")
        self.assertEqual(flag(w["args"], "--model"), "/models/Qwen3-235B-A22B")
        coord_pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        self.assertIn("model", mounts(container(coord_pod, "coordinator")))
        self.assertIn("model", volumes(coord_pod))

    def test_service_monitor_and_rules(self):
        docs = self.docs["monitoring"]
        sm = one(docs, "ServiceMonitor", "moeserve")
        self.assertEqual(sm["metadata"]["labels"]["release"], "kube-prometheus-stack")
        metrics = one(docs, "Service", "moeserve-metrics")
        self.assertLessEqual(sm["spec"]["selector"]["matchLabels"].items(),
                             metrics["metadata"]["labels"].items())
        self.assertEqual(sm["spec"]["endpoints"][0]["port"], metrics["spec"]["ports"][0]["name"])
        self.assertEqual(sm["spec"]["namespaceSelector"]["matchNames"], [NAMESPACE])
        rule = one(docs, "PrometheusRule", "moeserve")
        with open(RULES) as f:
            source = f.read()
        rendered = [r.get("alert") or r.get("record") for g in rule["spec"]["groups"] for r in g["rules"]]
        self.assertEqual(rendered, re.findall(r"^\s*- (?:alert|record): (\S+)", source, re.M))
        dashboard = one(docs, "ConfigMap", "moeserve-dashboard")
        self.assertEqual(dashboard["metadata"]["namespace"], "monitoring")
        self.assertEqual(dashboard["metadata"]["annotations"], {"grafana_folder": "moeserve"})

    def test_pod_monitor(self):
        docs = self.docs["podmonitor"]
        pm = one(docs, "PodMonitor", "moeserve")
        pod = one(docs, "Deployment")["spec"]["template"]
        self.assertLessEqual(pm["spec"]["selector"]["matchLabels"].items(), pod["metadata"]["labels"].items())
        ports = [p["name"] for p in container(pod["spec"], "coordinator")["ports"]]
        self.assertIn(pm["spec"]["podMetricsEndpoints"][0]["port"], ports)
        self.assertEqual(find(docs, "ServiceMonitor"), [])

    def test_internal_plane_options(self):
        """An existing Secret replaces the chart's; Admin and the policy can be turned off;
        extraFrom adds peers."""
        r = helm("template", RELEASE, CHART, "--set", "internalPlane.existingSecret=my-tokens",
                 "--set", "internalPlane.admin=false",
                 "--set", "internalPlane.networkPolicy.extraFrom[0].namespaceSelector.matchLabels.team=ops")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("kind: Secret", r.stdout)
        self.assertNotIn("--admin-token-file", r.stdout)
        self.assertNotIn("admin-token", r.stdout)
        self.assertEqual(r.stdout.count("secretName: my-tokens"), 2)
        self.assertRegex(r.stdout, r"- namespaceSelector:\n\s+matchLabels:\n\s+team: ops")
        r = helm("template", RELEASE, CHART, "--set", "internalPlane.networkPolicy.enabled=false")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("kind: NetworkPolicy", r.stdout)
        self.assertIn("--internal-token-file", r.stdout, "the token stays without the policy")

    def test_ipc_lock_for_rdma_as_root(self):
        r = helm("template", RELEASE, CHART, "--show-only", "templates/worker-statefulset.yaml",
                 "--set", "rdma.enabled=true", "--set", "rdma.ipcLock=true",
                 "--set", "workers.podSecurityContext.runAsUser=0",
                 "--set", "workers.podSecurityContext.runAsNonRoot=false")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"capabilities:\n\s+add:\n\s+- IPC_LOCK\n\s+drop:\n\s+- ALL")
        self.assertNotIn("NCCL_IB_DISABLE", r.stdout)

    def test_values_that_break_the_schema_or_the_chart_checks_fail(self):
        """Each file in invalid-values/ says the message it must fail with
        (`# expect: ...`). Schema violations fail `helm lint --strict` and
        `helm template`; the chart's own checks (`# by: the chart`) are `fail`
        calls, which `helm lint` runs in lint mode (logged, exit status 0), so
        there lint must report the message and `helm template` must fail."""
        cases = sorted(glob.glob(os.path.join(HERE, "invalid-values", "*.yaml")))
        self.assertGreaterEqual(len(cases), 6)
        for path in cases:
            with open(path) as f:
                text = f.read()
            expected = re.search(r"^# expect: (.*)$", text, re.M)
            self.assertIsNotNone(expected, f"{path} has no '# expect: MESSAGE' line")
            by_chart = re.search(r"^# by: the chart", text, re.M) is not None
            for command in (["lint", "--strict", CHART, "-f", path],
                            ["template", RELEASE, CHART, "-f", path]):
                with self.subTest(values=os.path.basename(path), command=command[0]):
                    r = helm(*command)
                    if not (by_chart and command[0] == "lint"):
                        self.assertNotEqual(r.returncode, 0, f"{path} was accepted:\n{r.stdout[:2000]}")
                    self.assertIn(expected.group(1), r.stdout + r.stderr)

    def test_chart_copies_of_the_dashboard_and_rules_are_current(self):
        for copy, source in ((os.path.join(CHART, "files", "moeserve-dashboard.json"), DASHBOARD),
                             (os.path.join(CHART, "files", "prometheus-rules.yaml"), RULES)):
            with open(copy, "rb") as a, open(source, "rb") as b:
                self.assertEqual(a.read(), b.read(),
                                 f"{copy} differs from {source}: cp {os.path.relpath(source, SOURCE_DIR)} "
                                 f"{os.path.relpath(copy, SOURCE_DIR)}")

    def test_packaged_chart_renders_its_dashboard(self):
        r = helm("package", CHART, "--destination", self.tmp)
        self.assertEqual(r.returncode, 0, r.stderr)
        packages = glob.glob(os.path.join(self.tmp, "moeserve-*.tgz"))
        self.assertEqual(len(packages), 1)
        with tarfile.open(packages[0]) as tar:
            names = set(tar.getnames())
            symlinks = [m.name for m in tar.getmembers() if m.issym() or m.islnk()]
        for f in ("moeserve/values.schema.json", "moeserve/files/moeserve-dashboard.json",
                  "moeserve/files/prometheus-rules.yaml", "moeserve/files/launch-workers.sh"):
            self.assertIn(f, names)
        self.assertEqual(symlinks, [])
        r = helm("template", RELEASE, packages[0], "--set", "metrics.prometheusRule.enabled=true",
                 "--show-only", "templates/grafana-dashboard.yaml")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(DASHBOARD) as f:
            self.assertIn(json.load(f)["panels"][1]["title"], r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
