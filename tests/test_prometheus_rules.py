"""Prometheus rules and Grafana dashboard for the filter's metrics (filters/prometheus,
filters/grafana), checked offline with promtool (Debian package `prometheus`, installed by
`make apt-deps`). A missing promtool fails these tests; it never skips them."""
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROM_DIR = os.path.join(ROOT, "filters", "prometheus")
RULES = os.path.join(PROM_DIR, "rules.yml")
OPERATOR_RULES = os.path.join(PROM_DIR, "prometheus-rules.yaml")
RULES_TEST = os.path.join(PROM_DIR, "rules_test.yml")
PROM_CONFIG = os.path.join(PROM_DIR, "prometheus.yml")
DASHBOARD = os.path.join(ROOT, "filters", "grafana", "ai-gateway-dashboard.json")

TRM = {"tenant", "route", "model_route"}

# What the filter exports (core/src/contract.rs, core/src/metrics/mod.rs) and the labels of each.
COUNTERS = {
    "ai_gateway_requests_total": TRM | {"status"},
    "ai_gateway_tokens_total": {"tenant", "model_route", "type"},
    "ai_gateway_cost_usd_micros_total": {"tenant", "model_route"},
    "ai_gateway_quota_rejections_total": {"tenant", "kind"},
    "ai_gateway_auth_denials_total": {"reason"},
}
# Spend budgets (issue 13): per Envoy, per tenant and period (day | month), micro-USD.
GAUGES = {
    "ai_gateway_budget_remaining_usd_micros": {"tenant", "period"},
    "ai_gateway_budget_limit_usd_micros": {"tenant", "period"},
}
# OpenTelemetry GenAI names (docs/contract.md): gen_ai.* attributes as labels.
GEN_AI = {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"}
HISTOGRAMS = {
    "ai_gateway_request_duration_ms": TRM,
    "ai_gateway_upstream_duration_ms": TRM,
    "ai_gateway_filter_duration_us": {"route"},
    "ai_gateway_ttft_ms": TRM,
    "gen_ai_client_token_usage": GEN_AI | {"gen_ai_token_type"},
    "gen_ai_server_request_duration_ms": GEN_AI,
    "gen_ai_server_time_to_first_token_ms": GEN_AI,
}
# Labels every scraped series also carries.
TARGET_LABELS = {"job", "instance"}

EXPORTED = {**COUNTERS, **GAUGES}
for _base, _labels in HISTOGRAMS.items():
    EXPORTED[_base + "_bucket"] = _labels | {"le"}
    EXPORTED[_base + "_sum"] = _labels
    EXPORTED[_base + "_count"] = _labels

# Every recording rule in rules.yml and the labels of its output (the promtool unit test
# checks the actual outputs). A new rule must be declared here.
RECORDED = {
    "ai_gateway:requests_per_second": TRM,
    "ai_gateway:error_rate": TRM,
    "ai_gateway:p95_latency_ms": TRM,
    "ai_gateway:error_ratio": TRM,
    "ai_gateway:upstream_p95_latency_ms": TRM,
    "ai_gateway:p95_ttft_ms": TRM,
    "ai_gateway:filter_p99_latency_us": {"route"},
    "ai_gateway:tokens_per_second": {"tenant", "model_route", "type"},
    "ai_gateway:cost_usd_per_hour": {"tenant", "model_route"},
    "ai_gateway:quota_rejections_per_second": {"tenant", "kind"},
    "ai_gateway:auth_denials_per_second": {"reason"},
    "ai_gateway:budget_spent_ratio": {"tenant", "period"},
}
KNOWN = {**EXPORTED, **RECORDED}

# The three reference recording rules, kept verbatim (filters/prometheus/README.md).
TUTORIAL_RULES = [
    ("ai_gateway:requests_per_second",
     "sum(rate(ai_gateway_requests_total[5m])) by (tenant, route, model_route)"),
    ("ai_gateway:error_rate",
     'sum(rate(ai_gateway_requests_total{status=~"5.."}[5m])) by (tenant, route, model_route)'),
    ("ai_gateway:p95_latency_ms",
     "histogram_quantile(0.95, sum(rate(ai_gateway_request_duration_ms_bucket[5m])) by (le, tenant, route, model_route))"),
]


# -- helpers ------------------------------------------------------------------------------

def require_promtool():
    """promtool's path; a missing promtool fails the calling test (never a skip)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found on PATH: install the Debian package `prometheus` "
                    "(`make apt-deps`, or `apt-get install -y prometheus`)")
    return path


def run(cmd):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{out}"
    return out


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def rules_groups():
    return load_yaml(RULES)["groups"]


def all_rules():
    return [r for g in rules_groups() for r in g["rules"]]


def load_dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def dashboard_panels(dash):
    """Every panel, including those nested in collapsed rows."""
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_exprs(dash):
    return [(p.get("title", ""), t["expr"]) for p in dashboard_panels(dash)
            for t in p.get("targets", []) if t.get("expr")]


PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and",
                   "or", "unless", "offset", "bool", "inf", "nan"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
GRAFANA_VAR = re.compile(r"\$\{?\w+\}?")


def metric_names(expr):
    """Metric names an expression selects (functions, keywords, labels, numbers and
    Grafana variables removed)."""
    s = STRING.sub('""', expr)
    s = GRAFANA_VAR.sub("", s)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = GROUPING.sub("", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?", s):
        tok, call = m.group(1), m.group(2)
        if call or tok.lower() in PROMQL_KEYWORDS:
            continue
        names.add(tok)
    return names


def matcher_labels(expr):
    """(metric, label) for every label matcher in the expression's vector selectors."""
    out = []
    for m in re.finditer(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr):
        for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*[\"']", m.group(2)):
            out.append((m.group(1), label))
    return out


def grouping_labels(expr):
    return [l.strip() for m in GROUPING.finditer(expr) if m.group(1) in ("by", "without")
            for l in m.group(2).split(",") if l.strip()]


def check_expr(expr, where):
    """The expression only uses known metrics, and only labels those metrics carry."""
    names = metric_names(expr)
    assert names, f"{where}: no metric found in {expr!r}"
    unknown = names - set(KNOWN)
    assert not unknown, (f"{where}: {sorted(unknown)} is neither exported by the filter nor "
                         f"recorded in rules.yml: {expr!r}")
    for metric, label in matcher_labels(expr):
        allowed = KNOWN[metric] | (TARGET_LABELS if metric in EXPORTED else set())
        assert label in allowed, f"{where}: {metric} has no label {label!r}: {expr!r}"
    available = set().union(*(KNOWN[n] for n in names)) | TARGET_LABELS
    for label in grouping_labels(expr):
        assert label in available, f"{where}: grouping by {label!r}, which no selected metric has: {expr!r}"
    return names


def test_metric_name_extraction():
    expr = ('histogram_quantile(0.95, sum by (le) (rate(ai_gateway_ttft_ms_bucket{tenant=~"$tenant"}'
            '[$__rate_interval]))) / 1e6 * 3600 + (ai_gateway:error_rate or vector(0)) offset 5m')
    assert metric_names(expr) == {"ai_gateway_ttft_ms_bucket", "ai_gateway:error_rate"}
    assert matcher_labels(expr) == [("ai_gateway_ttft_ms_bucket", "tenant")]
    assert grouping_labels(expr) == ["le"]


# -- promtool -----------------------------------------------------------------------------

def test_promtool_check_rules():
    promtool = require_promtool()
    out = run([promtool, "check", "rules", RULES])
    assert "SUCCESS" in out, out


def test_promtool_rule_unit_tests():
    promtool = require_promtool()
    out = run([promtool, "test", "rules", RULES_TEST])
    assert "SUCCESS" in out, out


def test_promtool_check_operator_rule_groups(tmp_path):
    promtool = require_promtool()
    # The PrometheusRule's spec is a rules file too; check it on its own.
    spec = load_yaml(OPERATOR_RULES)["spec"]
    path = tmp_path / "operator-rules.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run([promtool, "check", "rules", str(path)])


def test_promtool_check_demo_config():
    promtool = require_promtool()
    out = run([promtool, "check", "config", PROM_CONFIG])
    assert "rules.yml" in out, out


# -- the PrometheusRule and rules.yml -----------------------------------------------------

def test_prometheus_rule_object():
    obj = load_yaml(OPERATOR_RULES)
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert obj["kind"] == "PrometheusRule"
    assert obj["metadata"]["name"] == "ai-gateway-recording-rules"
    assert obj["metadata"]["namespace"] == "ai-gateway"


def test_prometheus_rule_and_rules_file_in_sync():
    operator_groups = load_yaml(OPERATOR_RULES)["spec"]["groups"]
    groups = rules_groups()
    assert [g["name"] for g in operator_groups] == [g["name"] for g in groups]
    for og, g in zip(operator_groups, groups):
        assert og == g, f"group {g['name']} differs between prometheus-rules.yaml and rules.yml"


@pytest.mark.parametrize("path", [RULES, OPERATOR_RULES], ids=["rules.yml", "prometheus-rules.yaml"])
def test_tutorial_rules_verbatim(path):
    doc = load_yaml(path)
    groups = doc["spec"]["groups"] if "spec" in doc else doc["groups"]
    group = next((g for g in groups if g["name"] == "ai-gateway.rules"), None)
    assert group is not None, "group ai-gateway.rules is missing"
    recorded = {r["record"]: r["expr"] for r in group["rules"] if "record" in r}
    with open(path) as f:
        text = f.read()
    for record, expr in TUTORIAL_RULES:
        assert recorded.get(record) == expr, f"{record}: expected {expr!r}, got {recorded.get(record)!r}"
        # Written as a plain one-line scalar, so it can be diffed by eye.
        assert f"- record: {record}\n" in text and f"expr: {expr}\n" in text


def test_recording_rules_declared_and_use_exported_metrics():
    records = [r["record"] for r in all_rules() if "record" in r]
    assert len(records) == len(set(records)), "duplicate recording rule"
    assert set(records) == set(RECORDED), "update RECORDED in this test for new or removed rules"
    for r in all_rules():
        check_expr(r["expr"], r.get("record") or r.get("alert"))


def test_alerts_have_for_severity_and_annotations():
    alerts = [r for r in all_rules() if "alert" in r]
    names = {a["alert"] for a in alerts}
    # error ratio, p95 latency, sustained quota rejections, auth-denial spikes, budgets
    assert {"AIGatewayHighErrorRate", "AIGatewayHighP95Latency",
            "AIGatewayQuotaRejectionsSustained", "AIGatewayAuthDenialSpike",
            "AIGatewayBudgetAbove80Percent"} <= names
    for a in alerts:
        assert re.fullmatch(r"\d+[smh]", str(a.get("for", ""))), f"{a['alert']}: needs `for:`"
        assert a.get("labels", {}).get("severity") in {"critical", "warning", "info"}, a["alert"]
        ann = a.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), f"{a['alert']}: summary and description"
    high_error = next(a for a in alerts if a["alert"] == "AIGatewayHighErrorRate")
    assert "ai_gateway:error_ratio" in high_error["expr"], "the error alert is on the 5xx ratio"
    budget = next(a for a in alerts if a["alert"] == "AIGatewayBudgetAbove80Percent")
    assert budget["expr"] == "ai_gateway:budget_spent_ratio > 0.8", budget["expr"]


def test_budget_ratio_is_taken_per_envoy_then_the_largest_kept():
    """Per-process spend: each Envoy's own budget; global spend: every Envoy the same
    figure. Only a per-series ratio aggregated with max is right in both (README)."""
    [rule] = [r for r in all_rules() if r.get("record") == "ai_gateway:budget_spent_ratio"]
    expr = re.sub(r"\s+", " ", rule["expr"])
    assert expr.startswith("max by (tenant, period) ("), expr
    assert "ai_gateway_budget_remaining_usd_micros / (ai_gateway_budget_limit_usd_micros > 0)" in expr
    # Both storage modes are exercised by the promtool cases.
    tests = load_yaml(RULES_TEST)["tests"]
    budget_cases = [c for c in tests
                    if any("ai_gateway_budget_" in s["series"] for s in c["input_series"])]
    instances = [{re.search(r'instance="([^"]+)"', s["series"]).group(1)
                  for s in c["input_series"] if 'tenant="tenant-a",period="day"' in s["series"]}
                 for c in budget_cases]
    assert len(budget_cases) == 2 and all(len(i) >= 2 for i in instances), instances


def test_unit_tests_cover_every_rule():
    tests = load_yaml(RULES_TEST)["tests"]
    exprs = " ".join(t["expr"] for case in tests for t in case.get("promql_expr_test", []))
    alert_tests = [t for case in tests for t in case.get("alert_rule_test", [])]
    for r in all_rules():
        if "record" in r:
            assert re.search(re.escape(r["record"]) + r"(?![\w:])", exprs), f"no promtool test for {r['record']}"
        else:
            cases = [t for t in alert_tests if t["alertname"] == r["alert"]]
            assert any(t.get("exp_alerts") for t in cases), f"{r['alert']}: no test where it fires"
            assert any(not t.get("exp_alerts") for t in cases), f"{r['alert']}: no test where it does not"
    # Both tenants, both canary versions, 200 and 503, histogram buckets.
    series = " ".join(s["series"] for case in tests for s in case["input_series"])
    for needle in ('tenant="tenant-a"', 'tenant="tenant-b"', 'model_route="chat-llama3-8b-v1"',
                   'model_route="chat-llama3-8b-v2"', 'status="200"', 'status="503"',
                   "ai_gateway_request_duration_ms_bucket", 'le="+Inf"'):
        assert needle in series, needle


def test_demo_scrape_config():
    cfg = load_yaml(PROM_CONFIG)
    assert cfg["rule_files"] == ["rules.yml"]
    jobs = cfg["scrape_configs"]
    assert len(jobs) == 1 and jobs[0]["metrics_path"] == "/stats/prometheus"
    assert jobs[0]["static_configs"][0]["targets"] == ["127.0.0.1:9901"]


# -- the Grafana dashboard ----------------------------------------------------------------

def test_dashboard_is_importable():
    dash = load_dashboard()
    assert isinstance(dash.get("schemaVersion"), int) and dash["schemaVersion"] >= 36
    assert dash.get("title") and dash.get("uid")
    assert dash.get("id") is None, "an exported dashboard has no instance id"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds_inputs = [i for i in dash.get("__inputs", []) if i.get("pluginId") == "prometheus"]
    ds_var = [v for v in variables.values() if v["type"] == "datasource" and v.get("query") == "prometheus"]
    assert ds_inputs or ds_var, "needs a ${DS_PROMETHEUS} input or a Prometheus datasource variable"
    ds_refs = {"${%s}" % i["name"] for i in ds_inputs} | {"${%s}" % v["name"] for v in ds_var}
    for name in ("tenant", "model_route"):
        assert name in variables and variables[name]["type"] == "query", f"template variable {name}"
    panels = dashboard_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        if p["type"] == "row":
            continue
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        for obj in [p] + p["targets"]:
            uid = (obj.get("datasource") or {}).get("uid")
            assert uid in ds_refs, f"panel {p['title']!r}: datasource {uid!r} is not the templated one"
    # Queries filter on the variables (where the metric has the label).
    assert any('$tenant' in e and '$model_route' in e for _, e in dashboard_exprs(dash))


def test_dashboard_queries_use_known_metrics():
    dash = load_dashboard()
    used = set()
    for title, expr in dashboard_exprs(dash):
        used |= check_expr(expr, f"panel {title!r}")
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
        assert m, f"variable {v['name']}: unexpected query {q!r}"
        names = check_expr(m.group(1), f"variable {v['name']}")
        assert all(m.group(2) in KNOWN[n] for n in names), q
    # The panels the dashboard must have.
    for needed in ("ai_gateway:requests_per_second", "ai_gateway:error_rate",
                   "ai_gateway:p95_latency_ms", "ai_gateway:p95_ttft_ms",
                   "ai_gateway:tokens_per_second", "ai_gateway:cost_usd_per_hour",
                   "ai_gateway:quota_rejections_per_second", "ai_gateway:auth_denials_per_second",
                   "ai_gateway_filter_duration_us_bucket", "ai_gateway_upstream_duration_ms_bucket"):
        assert needed in used, f"no panel uses {needed}"
    exprs = " ".join(e for _, e in dashboard_exprs(dash))
    assert re.search(r"by \([^)]*\btype\b", exprs), "tokens per second by type"
    assert re.search(r"by \(tenant\) \(ai_gateway:cost_usd_per_hour", exprs), "cost per hour by tenant"


def test_dashboard_queries_parse(tmp_path):
    """Every panel query is valid PromQL (Grafana variables replaced by typical values)."""
    promtool = require_promtool()
    dash = load_dashboard()
    subst = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
    rules = []
    for i, (_, expr) in enumerate(dashboard_exprs(dash)):
        for k, v in subst.items():
            expr = expr.replace(k, v)
        expr = GRAFANA_VAR.sub(".*", expr)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run([promtool, "check", "rules", str(path)])


def test_readme_stats_tags_match_the_bootstrap():
    """The README's stats_tags snippets (Istio, Envoy Gateway) are the demo bootstrap's."""
    from harness import render

    with open(os.path.join(PROM_DIR, "README.md")) as f:
        text = f.read()
    snippets = re.findall(r'tag_name: (\w+),\s+regex: "([^"]+)"', text)
    assert snippets, "README lost its stats_tags snippet"
    expected = {label: "(\\\\." + label + "=\\\\.=(.*?);\\\\.;)" for label in render.METRIC_LABELS}
    assert {label for label, _ in snippets} == set(expected)
    for label, regex in snippets:
        assert regex == expected[label], (label, regex)
    # Every exported metric's labels have a tag.
    for labels in list(COUNTERS.values()) + list(GAUGES.values()) + list(HISTOGRAMS.values()):
        assert labels <= set(render.METRIC_LABELS)


# -- runbooks -----------------------------------------------------------------------------

RUNBOOKS = os.path.join(ROOT, "docs", "runbooks.md")


def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading: lower case, punctuation other than
    `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_sections():
    """{anchor: section text} for every `## ` section of docs/runbooks.md."""
    with open(RUNBOOKS) as f:
        text = f.read()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {github_anchor(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def test_github_anchor():
    assert github_anchor("AIGatewayHighErrorRate") == "aigatewayhigherrorrate"
    assert github_anchor("The audit record (`wasm.ai.audit`)") == "the-audit-record-wasmaiaudit"


@pytest.mark.parametrize("path", [RULES, OPERATOR_RULES], ids=["rules.yml", "prometheus-rules.yaml"])
def test_every_alert_has_a_runbook_section(path):
    doc = load_yaml(path)
    groups = doc["spec"]["groups"] if "spec" in doc else doc["groups"]
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    assert alerts
    sections = runbook_sections()
    for a in alerts:
        url = a["annotations"].get("runbook_url", "")
        m = re.fullmatch(r"docs/runbooks\.md#([\w-]+)", url)
        assert m, f"{a['alert']}: runbook_url {url!r} is not docs/runbooks.md#<anchor>"
        assert m.group(1) == a["alert"].lower(), f"{a['alert']}: the anchor is the alert's name"
        section = sections.get(m.group(1))
        assert section is not None, f"{a['alert']}: docs/runbooks.md has no section #{m.group(1)}"
        for part in ("**What it means.**", "**How to check.**", "**What to do.**"):
            assert part in section, f"{a['alert']}: its runbook lacks {part}"
    # No runbook for an alert that no longer exists.
    assert set(sections) == {a["alert"].lower() for a in alerts}


# -- the dashboard as a ConfigMap for Grafana's sidecar -------------------------------------

DASHBOARD_CONFIGMAP = os.path.join(ROOT, "filters", "grafana", "ai-gateway-dashboard-configmap.yaml")


def test_dashboard_configmap_embeds_the_dashboard_file():
    proc = subprocess.run(["python3", os.path.join(ROOT, "filters", "grafana", "configmap.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cm = load_yaml(DASHBOARD_CONFIGMAP)
    assert (cm["apiVersion"], cm["kind"]) == ("v1", "ConfigMap")
    assert set(cm) == {"apiVersion", "kind", "metadata", "data"}
    # The label Grafana's dashboard sidecar selects by default (Grafana Helm chart,
    # kube-prometheus-stack): grafana_dashboard, value "1" (a string).
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", cm["metadata"]["namespace"])
    with open(DASHBOARD) as f:
        text = f.read()
    assert cm["data"] == {"ai-gateway-dashboard.json": text}
    # Provisioned dashboards are not imported: no ${DS_...} inputs are substituted, so
    # the data source must come from a variable (test_dashboard_is_importable).
    assert "__inputs" not in json.loads(cm["data"]["ai-gateway-dashboard.json"])
    # Below what a client-side `kubectl apply` can store in its last-applied annotation.
    assert len(text.encode()) < 256 * 1024
