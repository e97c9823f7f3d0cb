"""deploy/prometheus/rules.yaml without a running Prometheus: promtool's own
checks and unit tests (rules_test.yaml), every alert fired by a unit test,
each alert with a severity and runbook-style annotations that point to its
section of docs/operations.md, and only metrics the coordinator exports.
"""
import os
import re
import shutil
import unittest

from deploy_common import HERE, RULES, SOURCE_DIR, run, yaml_to_json
from metric_names import exported_metrics, metric_names_in

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
OPERATIONS = os.path.join(SOURCE_DIR, "docs", "operations.md")


def rules():
    return [r for g in yaml_to_json(RULES)["groups"] for r in g["rules"]]


def markdown_anchors(path):
    """GitHub's anchors of the headings of a Markdown file."""
    with open(path) as f:
        headings = re.findall(r"^#+ (.+)$", f.read(), re.M)
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-") for h in headings}


class PrometheusRulesTest(unittest.TestCase):
    def test_promtool_check_rules(self):
        r = run([PROMTOOL, "check", "rules", RULES])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS", r.stdout)

    def test_promtool_unit_tests(self):
        r = run([PROMTOOL, "test", "rules", os.path.join(HERE, "rules_test.yaml")])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_every_alert_fires_in_a_unit_test(self):
        fired = set()
        for t in yaml_to_json(os.path.join(HERE, "rules_test.yaml"))["tests"]:
            for a in t.get("alert_rule_test", []):
                if a.get("exp_alerts"):
                    fired.add(a["alertname"])
        alerts = {r["alert"] for r in rules() if "alert" in r}
        self.assertEqual(alerts - fired, set(), "alerts no unit test fires")
        self.assertGreaterEqual(len(alerts), 5)

    def test_alerts_say_how_bad_and_what_to_do(self):
        anchors = markdown_anchors(OPERATIONS)
        for r in rules():
            if "alert" not in r:
                continue
            with self.subTest(alert=r["alert"]):
                self.assertIn(r["labels"]["severity"], ("critical", "warning", "info"))
                notes = r["annotations"]
                self.assertEqual(set(notes), {"summary", "description", "runbook"})
                anchor = r["alert"].lower()
                self.assertTrue(notes["runbook"].startswith(f"docs/operations.md#{anchor}."),
                                notes["runbook"])
                self.assertIn(anchor, anchors, f"docs/operations.md has no section {r['alert']}")

    def test_recording_rules_are_named_level_metric_operations(self):
        for r in rules():
            if "record" in r:
                self.assertRegex(r["record"], r"^(job|instance):moeserve_[a-z0-9_]+:[a-z0-9_]+$")

    def test_rules_use_only_exported_metrics(self):
        exported = exported_metrics()
        recorded = {r["record"] for r in rules() if "record" in r}
        for r in rules():
            for name in metric_names_in(r["expr"]):
                if name in recorded:
                    continue
                self.assertIn(name, exported, f"{r.get('alert') or r.get('record')}: {name}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
