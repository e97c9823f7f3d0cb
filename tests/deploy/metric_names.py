"""The metrics the coordinator exports, read from their one definition
(scheduler/server/metrics.cc), and the moeserve metric names a PromQL
expression uses."""
import os
import re

from deploy_common import SOURCE_DIR

METRICS_CC = os.path.join(SOURCE_DIR, "scheduler", "server", "metrics.cc")


def exported_metrics():
    """Series names Prometheus sees: histograms as their _bucket, _sum and _count."""
    with open(METRICS_CC) as f:
        source = f.read()
    names = set(re.findall(r'"(moeserve_[a-z0-9_]+)"', source))
    histograms = set(re.findall(r'Hist\(\s*\*registry_,\s*"(moeserve_[a-z0-9_]+)"', source))
    assert names and histograms, f"no metrics found in {METRICS_CC}"
    series = names - histograms
    for h in histograms:
        series |= {f"{h}_bucket", f"{h}_sum", f"{h}_count"}
    return series


def metric_families():
    """Metric names as defined (a histogram once, without suffixes)."""
    with open(METRICS_CC) as f:
        return set(re.findall(r'"(moeserve_[a-z0-9_]+)"', f.read()))


def metric_names_in(expr):
    """moeserve_* names an expression selects (not recording rules' level:name:op)."""
    return set(re.findall(r"(?<![:\w])(moeserve_[a-z0-9_]+)(?![:\w])", expr))
