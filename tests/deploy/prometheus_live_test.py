"""The dashboard and the rules against a real Prometheus scraping a real
coordinator: Debian's prometheus on a loopback port scrapes, every second, a
moeserve-coordinator whose worker (started through the worker pods' launcher
script) serves a tiny DeepSeek-V3-layout model; `moeserve bench` sends
traffic. Then every PromQL expression of deploy/grafana/moeserve.json and
deploy/prometheus/rules.yaml goes through Prometheus's HTTP API: each must
parse, every dashboard query and recording rule must return data, the rules
must evaluate without error, and no alert may fire on this healthy instance.
"""
import json
import math
import os
import re
import shutil
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

from deploy_common import (BINARY_DIR, CHART, DASHBOARD, RULES, Processes, free_port, require, run,
                           wait_for, yaml_to_json)
from metric_names import exported_metrics

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
COORDINATOR = os.path.join(BINARY_DIR, "tools", "coordinator", "moeserve-coordinator")
WORKER = os.path.join(BINARY_DIR, "tools", "worker", "moeserve-worker")
CLI = os.path.join(BINARY_DIR, "tools", "moeserve", "moeserve")
LAUNCHER = os.path.join(CHART, "files", "launch-workers.sh")

# Expressions (as written in the dashboard or the rules) allowed to return no
# series for now: moeserve_worker_up and moeserve_expert_balancedness get
# series only once the coordinator drives several expert-parallel ranks.
# Empty this list when multi-rank serving lands; the test says when an entry
# returns data and is no longer needed.
ALLOWED_EMPTY_UNTIL_MULTI_RANK = []

# Expressions whose value may be NaN for now: a ratio of all-to-all times,
# 0 / 0 while no rank exchanges tokens with another. Empty it with the list above.
NAN_UNTIL_MULTI_RANK = []

# What Grafana substitutes when every namespace, job and coordinator is shown.
GRAFANA_VARIABLES = {"$namespace": ".*", "$job": ".*", "$instance": ".*", "$__rate_interval": "1m"}


def substitute(expr):
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def dashboard_targets():
    with open(DASHBOARD) as f:
        d = json.load(f)
    return [(p["title"], t["refId"], t["expr"], t.get("legendFormat", ""))
            for p in d["panels"] if p["type"] != "row" for t in p["targets"]]


def dashboard_variable_queries():
    with open(DASHBOARD) as f:
        d = json.load(f)
    out = []
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"]["query"])
            assert m, v["query"]["query"]
            out.append((v["name"], m.group(1), m.group(2)))
    return out


class PrometheusLiveTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for path, what in ((PROMETHEUS, "prometheus (Debian package)"), (COORDINATOR, "moeserve-coordinator"),
                           (WORKER, "moeserve-worker"), (CLI, "moeserve")):
            require(path, what)
        cls.started = time.monotonic()
        cls.tmp = tempfile.mkdtemp(prefix="moeserve-prometheus-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.procs = Processes(cls.tmp)
        cls.addClassCleanup(cls.procs.stop)

        model = os.path.join(cls.tmp, "model")
        run([CLI, "make-tiny-model", "--arch", "deepseek_v3", "--dtype", "fp8", "--out", model], check=True)
        grpc_port, internal_port, metrics_port, prom_port = free_port(), free_port(), free_port(), free_port()
        cls.server = f"127.0.0.1:{grpc_port}"
        internal = f"127.0.0.1:{internal_port}"
        token = os.path.join(cls.tmp, "internal.token")
        with open(os.open(token, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        cls.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        cls.prometheus = f"http://127.0.0.1:{prom_port}"

        # Two ranks, so that the expert-parallel panels (all-to-all, overlap,
        # balancedness, per-rank worker state) have data.
        cls.procs.start("coordinator", [COORDINATOR, "--listen", cls.server, "--internal-listen", internal,
                                        "--internal-token-file", token,
                                        "--metrics-port", str(metrics_port), "--ep-size", "2"])
        cls.procs.start("workers", ["bash", LAUNCHER, "--local-workers", "2", "--pod-index", "0",
                                    "--device", "cpu", "--",
                                    WORKER, "--coordinator", internal, "--internal-token-file", token,
                                    "--model", model, "--ep-size", "2",
                                    "--kv-cache-tokens", "8192", "--connect-timeout-seconds", "30"])
        config = os.path.join(cls.tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES}
scrape_configs:
  - job_name: moeserve
    static_configs:
      - targets: ["127.0.0.1:{metrics_port}"]
""")
        cls.procs.start("prometheus", [PROMETHEUS, f"--config.file={config}",
                                       f"--storage.tsdb.path={os.path.join(cls.tmp, 'tsdb')}",
                                       f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"])

        def serving():
            cls.procs.check_running()
            return run([CLI, "generate", "--server", cls.server, "--prompt-ids", "0", "--max-tokens", "1",
                        "--json"], timeout=20).returncode == 0
        if not wait_for(serving, 30):
            raise AssertionError(f"the coordinator did not serve within 30 s\n{cls.procs.logs()}")
        if not wait_for(lambda: cls.http(f"{cls.prometheus}/-/ready")[0] == 200, 30):
            raise AssertionError(f"prometheus did not get ready\n{cls.procs.logs()}")
        # Prometheus hands new targets to its scrapers in batches every 5 s:
        # the traffic must come after the first scrape to show in rates.
        if not wait_for(lambda: cls.query("up").get("data", {}).get("result"), 20):
            raise AssertionError(f"prometheus did not scrape the coordinator\n{cls.procs.logs()}")

        # Traffic for a few seconds (several scrapes), and one bad request.
        bench = run([CLI, "bench", "--server", cls.server, "--request-rate", "40", "--num-requests", "160",
                     "--prompt-tokens", "uniform:4:64", "--output-tokens", "uniform:2:24", "--seed", "7",
                     "--json"], timeout=60)
        if bench.returncode != 0:
            raise AssertionError(f"moeserve bench failed: {bench.stdout}{bench.stderr}\n{cls.procs.logs()}")
        cls.bench = json.loads(bench.stdout)
        bad = run([CLI, "generate", "--server", cls.server, "--prompt-ids", "999999999", "--max-tokens", "1"])
        assert bad.returncode != 0, "a prompt id outside the vocabulary was accepted"

        # Until Prometheus has scraped the final counts and evaluated the rules on them.
        final = re.search(r"^moeserve_generation_tokens_total (\S+)$", cls.http(cls.metrics_url)[1], re.M)
        assert final, "no moeserve_generation_tokens_total on /metrics"

        def caught_up():
            r = cls.query("moeserve_generation_tokens_total").get("data", {}).get("result")
            return r and float(r[0]["value"][1]) == float(final.group(1))
        if not wait_for(caught_up, 15):
            raise AssertionError("prometheus did not scrape the final counters")
        time.sleep(2.5)  # two more rule evaluations over the scraped data
        print(f"\nsetup (model, processes, {cls.bench['completed']} requests, scrapes): "
              f"{time.monotonic() - cls.started:.1f} s")

    @staticmethod
    def http(url):
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    @classmethod
    def query(cls, expr):
        status, body = cls.http(f"{cls.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        try:
            return json.loads(body)
        except ValueError:
            return {"status": "error", "error": f"HTTP {status}: {body}"}

    def values(self, expr):
        """The query's instant vector as [(labels, value)]; fails on a query error."""
        r = self.query(expr)
        self.assertEqual(r["status"], "success", f"{expr}: {r.get('error')}")
        self.assertEqual(r["data"]["resultType"], "vector", expr)
        return [(s["metric"], float(s["value"][1])) for s in r["data"]["result"]]

    def check_returns_data(self, raw_expr, where):
        result = self.values(substitute(raw_expr))
        if raw_expr in ALLOWED_EMPTY_UNTIL_MULTI_RANK:
            if result:
                print(f"note: {where} now returns data: remove it from ALLOWED_EMPTY_UNTIL_MULTI_RANK")
            return result
        self.assertTrue(result, f"{where}: no data for {raw_expr}")
        if raw_expr not in NAN_UNTIL_MULTI_RANK:
            self.assertTrue(any(math.isfinite(v) for _, v in result),
                            f"{where}: only NaN or infinite values for {raw_expr}: {result}")
        return result

    def test_the_coordinator_is_scraped(self):
        status, body = self.http(f"{self.prometheus}/api/v1/targets")
        targets = json.loads(body)["data"]["activeTargets"]
        self.assertEqual([t["health"] for t in targets], ["up"], body)

    def test_every_dashboard_query_returns_data(self):
        targets = dashboard_targets()
        self.assertGreater(len(targets), 30)
        for title, ref, expr, _ in targets:
            with self.subTest(panel=title, ref=ref):
                self.check_returns_data(expr, f"panel {title!r} query {ref}")

    def test_dashboard_variables_find_this_coordinator(self):
        for name, selector, label in dashboard_variable_queries():
            with self.subTest(variable=name):
                series = self.values(substitute(selector))
                self.assertTrue(series, selector)
                if label != "namespace":  # a static scrape config sets no namespace label
                    self.assertTrue(all(label in labels for labels, _ in series), series)

    def test_dashboard_figures_match_the_traffic(self):
        by_panel = {(t, r): e for t, r, e, _ in dashboard_targets()}
        workers = self.values(substitute(by_panel[("Workers up", "A")]))
        self.assertEqual(workers[0][1], 2)  # both ranks
        reasons = {labels.get("finish_reason") for labels, _ in
                   self.values(substitute(by_panel[("Requests finished by reason", "A")]))}
        self.assertIn("length", reasons)
        rejected = {labels.get("reason") for labels, _ in
                    self.values(substitute(by_panel[("Requests rejected by reason", "A")]))}
        self.assertIn("invalid_argument", rejected)
        tokens = self.values(substitute(by_panel[("Generated tokens / s", "A")]))
        self.assertGreater(tokens[0][1], 0)
        ttft = self.values(substitute(by_panel[("Time to first token", "C")]))  # p99
        self.assertGreater(ttft[0][1], 0)
        self.assertLess(ttft[0][1], 120)

    def test_rules_are_loaded_and_evaluate_without_error(self):
        status, body = self.http(f"{self.prometheus}/api/v1/rules")
        groups = json.loads(body)["data"]["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        expected = [r for g in yaml_to_json(RULES)["groups"] for r in g["rules"]]
        self.assertEqual(len(loaded), len(expected))
        for r in loaded:
            with self.subTest(rule=r["name"]):
                self.assertEqual(r["health"], "ok", r.get("lastError"))
                self.assertEqual(r.get("lastError", ""), "")

    def test_every_rule_expression_parses_and_recording_rules_return_data(self):
        for r in (r for g in yaml_to_json(RULES)["groups"] for r in g["rules"]):
            name = r.get("record") or r.get("alert")
            with self.subTest(rule=name):
                if "record" in r:
                    self.check_returns_data(r["expr"], f"recording rule {name}")
                    if r["expr"] not in ALLOWED_EMPTY_UNTIL_MULTI_RANK:
                        self.assertTrue(self.values(r["record"]), f"{name} was not recorded")
                else:
                    self.values(r["expr"])  # parses and evaluates

    def test_no_alert_fires_on_a_healthy_instance(self):
        status, body = self.http(f"{self.prometheus}/api/v1/alerts")
        alerts = json.loads(body)["data"]["alerts"]
        # Two CPU ranks of a tiny model exchange tokens over loopback TCP in
        # far more time than their few microseconds of expert compute, so the
        # overlap cannot hide it: that info alert may be pending (its `for`
        # is 30 minutes), nothing else may even be pending.
        unexpected = [a for a in alerts
                      if a["state"] == "firing" or a["labels"]["alertname"] != "MoeserveAllToAllExposed"]
        self.assertEqual(unexpected, [])

    def test_the_allowed_empty_list_names_only_real_expressions(self):
        used = {e for _, _, e, _ in dashboard_targets()}
        used |= {r["expr"] for g in yaml_to_json(RULES)["groups"] for r in g["rules"]}
        for expr in ALLOWED_EMPTY_UNTIL_MULTI_RANK + NAN_UNTIL_MULTI_RANK:
            self.assertIn(expr, used)

    def test_exported_series_are_the_defined_metrics(self):
        names = self.values('count by (__name__) ({__name__=~"moeserve_.+"})')
        scraped = {labels["__name__"] for labels, _ in names}
        self.assertLessEqual(scraped, exported_metrics())
        self.assertIn("moeserve_time_to_first_token_seconds_bucket", scraped)


if __name__ == "__main__":
    unittest.main(verbosity=2)
