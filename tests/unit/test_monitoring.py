"""Prometheus rules, scrape configuration and the Grafana dashboard use only real metrics.

Every metric named in deploy/prometheus/alerts.yml and deploy/grafana/dashboards/*.json
must be one the services export (shared/metrics.py, served by every service's
/metrics), one of the RabbitMQ prometheus plugin's per-object metrics (listed below,
from its source), or Prometheus' own ``up``; every label they filter or group on must
be one the metric carries; ``rate``/``increase`` only on counters, ``deriv`` only on
gauges, ``histogram_quantile`` only on a histogram's buckets.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from shared import metrics
from shared.settings import ServiceSettings
from shared.topology import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"

# rabbitmq_prometheus, /metrics/per-object (prefix rabbitmq_), queue_coarse_metrics and
# queue_consumer_count groups, labelled {vhost, queue}: rabbitmq-server
# deps/rabbitmq_prometheus/src/collectors/prometheus_rabbitmq_core_metrics_collector.erl
# (3.8 and later). The aggregated /metrics endpoint has no queue label.
RABBITMQ_QUEUE_LABELS = frozenset({"vhost", "queue"})
RABBITMQ_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "rabbitmq_queue_messages_ready": ("gauge", RABBITMQ_QUEUE_LABELS),
    "rabbitmq_queue_messages_unacked": ("gauge", RABBITMQ_QUEUE_LABELS),
    "rabbitmq_queue_messages": ("gauge", RABBITMQ_QUEUE_LABELS),
    "rabbitmq_queue_consumers": ("gauge", RABBITMQ_QUEUE_LABELS),
    "rabbitmq_queue_process_reductions_total": ("counter", RABBITMQ_QUEUE_LABELS),
}
# Labels Prometheus adds to every scraped series (prometheus.yml: job, instance; the
# holdspace job's targets also carry service, honoured from the metric when present).
TARGET_LABELS = frozenset({"job", "instance", "service"})
BUILTINS: dict[str, tuple[str, frozenset[str]]] = {"up": ("gauge", frozenset())}

# Defined in shared/metrics.py and on the dashboard, but not yet set by any code: the
# notifications service (in progress) sets them. Nothing else may be unset.
PENDING_IN_CODE = {"DELIVERIES", "DELIVERIES_FAILED"}

PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)


def exported() -> dict[str, tuple[str, frozenset[str], str]]:
    """Sample name -> (kind, labels, attribute) for every metric of shared/metrics.py."""
    out: dict[str, tuple[str, frozenset[str], str]] = {}
    for attr, value in vars(metrics).items():
        if not isinstance(value, Counter | Gauge | Histogram):
            continue
        name, labels = value._name, frozenset(value._labelnames)
        if isinstance(value, Counter):
            out[f"{name}_total"] = ("counter", labels, attr)
        elif isinstance(value, Gauge):
            out[name] = ("gauge", labels, attr)
        else:
            out[f"{name}_bucket"] = ("bucket", labels | {"le"}, attr)
            out[f"{name}_sum"] = ("counter", labels, attr)
            out[f"{name}_count"] = ("counter", labels, attr)
    return out


KNOWN = {
    **{sample: (kind, labels) for sample, (kind, labels, _) in exported().items()},
    **RABBITMQ_METRICS,
    **BUILTINS,
}

STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
MATCHERS = re.compile(r"\{([^}]*)\}")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_uses(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, labels it is filtered on) for each selector, and the grouping labels."""
    uses: list[tuple[str, set[str]]] = []
    text = STRING.sub('""', expr)
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", text):
        labels = {m.split("=")[0].strip(" !~") for m in match.group(2).split(",") if m.strip()}
        uses.append((match.group(1), labels))
    bare = MATCHERS.sub(" ", text)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    bare = GROUPING.sub(" ", bare)
    for match in IDENT.finditer(bare):
        word = match.group(0)
        rest = bare[match.end() :].lstrip()
        if word.lower() in PROMQL_WORDS or rest.startswith("("):
            continue  # an operator or a function/aggregation
        if not any(word == m for m, _ in uses):
            uses.append((word, set()))
    return uses


def grouping_labels(expr: str) -> set[str]:
    text = STRING.sub('""', expr)
    return {
        label.strip()
        for group in GROUPING.findall(text)
        for label in group.split(",")
        if label.strip()
    }


def function_arguments(expr: str, function: str) -> list[str]:
    text = STRING.sub('""', expr)
    return re.findall(rf"\b{function}\s*\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", text)


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']}", target["expr"]))
        for variable in dashboard.get("templating", {}).get("list", []):
            query = variable.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query or "")
            assert m, f"unexpected variable query {query!r}"
            found.append((f"{path.name}: ${variable['name']}", f"sum by ({m[2]}) ({m[1]})"))
    return found


def all_exprs() -> list[tuple[str, str]]:
    return [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()] + dashboard_exprs()


# --- the parser itself ------------------------------------------------------------------


def test_the_expression_parser_finds_metrics_labels_and_functions() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (service, le) (rate(a_bucket{service=~"x|y"}[5m])))'
        ' and on (service) b_total > 0 or max without (type) (c{queue="q{1}"})'
    )
    assert metric_uses(expr) == [("a_bucket", {"service"}), ("c", {"queue"}), ("b_total", set())]
    assert grouping_labels(expr) == {"service", "le", "type"}
    assert function_arguments(expr, "rate") == ["a_bucket"]


# --- alert rules --------------------------------------------------------------------------


def test_alert_rules_cover_what_the_issue_asks_for() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    used = {name: {m for m, _ in metric_uses(r["expr"])} for name, r in rules.items()}
    wanted = {
        "HoldspaceDeadLetters": "rabbitmq_queue_messages",
        "HoldspaceEventsDeadLettered": "holdspace_events_dead_lettered_total",
        "HoldspaceOutboxLag": "holdspace_outbox_lag_seconds",
        "HoldspaceQueueDepthGrowing": "rabbitmq_queue_messages",
        "HoldspaceNoConsumer": "rabbitmq_queue_consumers",
        "HoldspacePaymentMismatch": "holdspace_payment_mismatches_total",
    }
    for alert, metric in wanted.items():
        assert metric in used[alert], alert
    assert ".dlq" in rules["HoldspaceDeadLetters"]["expr"]
    assert "deriv(" in rules["HoldspaceQueueDepthGrowing"]["expr"]
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"page", "warn"}
        assert rule["annotations"]["summary"]


@pytest.mark.parametrize("where,expr", all_exprs())
def test_every_metric_and_label_used_is_exported(where: str, expr: str) -> None:
    for metric, labels in metric_uses(expr):
        assert metric in KNOWN, f"{where}: {metric} is not exported by anything we scrape"
        kind, carried = KNOWN[metric]
        unknown = labels - carried - TARGET_LABELS
        assert not unknown, f"{where}: {metric} has no label(s) {sorted(unknown)}"
    used = [m for m, _ in metric_uses(expr)]
    carried = set().union(*(KNOWN[m][1] for m in used)) | TARGET_LABELS
    assert grouping_labels(expr) <= carried, f"{where}: grouping on a label no metric has"
    for function in ("rate", "increase"):
        for metric in function_arguments(expr, function):
            assert KNOWN[metric][0] in ("counter", "bucket"), f"{where}: {function}({metric})"
    for metric in function_arguments(expr, "deriv"):
        assert KNOWN[metric][0] == "gauge", f"{where}: deriv({metric})"
    if "histogram_quantile" in expr:
        assert any(KNOWN[m][0] == "bucket" for m in used), where


def test_every_holdspace_metric_on_the_dashboard_is_set_by_code() -> None:
    sources = "\n".join(
        p.read_text() for folder in ("shared", "services") for p in (ROOT / folder).rglob("*.py")
    )
    by_sample = {sample: attr for sample, (_, _, attr) in exported().items()}
    used = {m for _, e in all_exprs() for m, _ in metric_uses(e) if m.startswith("holdspace_")}
    unset = {by_sample[m] for m in used if f"metrics.{by_sample[m]}" not in sources}
    assert unset <= PENDING_IN_CODE, f"on the dashboard or in alerts but never set: {unset}"


# --- scrape configuration and Grafana provisioning ---------------------------------------


def test_prometheus_scrapes_every_service_and_loads_the_rules() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert [Path(f).name for f in config["rule_files"]] == [ALERTS.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    holdspace = jobs["holdspace"]
    # The metrics carry their own "service" label; the target's must not rename it.
    assert holdspace.get("honor_labels") is True
    targets = {t for sc in holdspace["static_configs"] for t in sc["targets"]}
    expected = set()
    for service in (*SERVICES, "web"):  # the pages serve /metrics too
        module = importlib.import_module(f"{service}.settings")
        cls = next(
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, ServiceSettings) and v is not ServiceSettings
        )
        expected.add(f"{service}:{cls.model_fields['http_port'].default}")
    assert targets == expected
    assert holdspace.get("metrics_path", "/metrics") == "/metrics"
    rabbit = jobs["rabbitmq"]
    assert rabbit["metrics_path"] == "/metrics/per-object"  # per-queue series
    assert [t for sc in rabbit["static_configs"] for t in sc["targets"]] == ["rabbitmq:15692"]


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    assert DASHBOARDS, "no dashboard JSON"
    sources = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (prometheus,) = sources["datasources"]
    assert prometheus["type"] == "prometheus" and prometheus["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "holdspace.yml").read_text())
    assert providers["providers"][0]["type"] == "file"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == prometheus["uid"], panel["title"]
            assert panel["targets"], panel["title"]
            assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
