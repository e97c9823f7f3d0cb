"""deploy/grafana/moeserve.json without Grafana: a well-formed dashboard with a
data source variable that every query uses, panels laid out without overlap,
every query filtered by the namespace/job/instance variables, only metrics the
coordinator exports, every exported metric on some panel, and every panel
explained in docs/operations.md. (tests/deploy/prometheus_live_test.py runs
the queries against a real Prometheus.)
"""
import json
import os
import re
import unittest

from deploy_common import DASHBOARD, SOURCE_DIR
from metric_names import exported_metrics, metric_families, metric_names_in

SELECTOR = '{namespace=~"$namespace", job=~"$job", instance=~"$instance"}'


def load():
    with open(DASHBOARD) as f:
        return json.load(f)


def panels(dashboard):
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def exprs(dashboard):
    return [(p["title"], t["expr"]) for p in panels(dashboard) for t in p["targets"]]


class GrafanaDashboardTest(unittest.TestCase):
    def test_identity_and_data_source_variable(self):
        d = load()
        self.assertEqual(d["uid"], "moeserve")
        self.assertEqual(d["title"], "moeserve")
        self.assertGreaterEqual(d["schemaVersion"], 36)
        variables = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        for name in ("namespace", "job", "instance"):
            v = variables[name]
            self.assertEqual(v["datasource"]["uid"], "${datasource}")
            self.assertTrue(v["includeAll"])
            self.assertEqual(v["allValue"], ".*")

    def test_every_query_uses_the_data_source_variable(self):
        for p in panels(load()):
            with self.subTest(panel=p["title"]):
                self.assertEqual(p["datasource"], {"type": "prometheus", "uid": "${datasource}"})
                self.assertTrue(p["targets"])
                for t in p["targets"]:
                    self.assertEqual(t["datasource"]["uid"], "${datasource}")

    def test_panels_are_unique_described_and_do_not_overlap(self):
        d = load()
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        cells = {}
        for p in d["panels"]:
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    self.assertNotIn((x, y), cells, f"{p['title']} overlaps {cells.get((x, y))}")
                    cells[(x, y)] = p["title"]
            if p["type"] != "row":
                self.assertGreater(len(p.get("description", "")), 20, p["title"])
            refs = [t["refId"] for t in p.get("targets", [])]
            self.assertEqual(len(refs), len(set(refs)), p["title"])

    def test_every_selector_is_filtered_by_the_variables(self):
        for title, expr in exprs(load()):
            for m in re.finditer(r"(moeserve_[a-z0-9_]+)", expr):
                with self.subTest(panel=title, metric=m.group(1)):
                    self.assertTrue(expr[m.end():].startswith(SELECTOR), expr)

    def test_only_exported_metrics(self):
        exported = exported_metrics()
        for title, expr in exprs(load()):
            for name in metric_names_in(expr):
                self.assertIn(name, exported, f"{title}: {expr}")

    def test_every_exported_metric_is_on_the_dashboard(self):
        used = set()
        for _, expr in exprs(load()):
            used |= {re.sub(r"_(bucket|sum|count)$", "", n) for n in metric_names_in(expr)}
        self.assertEqual(metric_families() - used, set(),
                         "metrics in scheduler/server/metrics.cc with no panel")

    def test_every_panel_is_explained_in_the_operations_guide(self):
        with open(os.path.join(SOURCE_DIR, "docs", "operations.md")) as f:
            guide = f.read()
        for p in panels(load()):
            self.assertIn(f"**{p['title']}**", guide, p["title"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
