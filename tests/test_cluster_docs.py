"""docs/cluster.md and its manifests in docs/cluster/ (issue 19). They are only parsed here: every YAML loads,
the fields KubeRay and Ray's cluster launcher need are present and spelled as they spell them, no secret value
is written in them, and every file the page names exists. Nothing here talks to Kubernetes, Ray or a cloud."""

import glob
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "cluster.md")
MANIFESTS = sorted(glob.glob(os.path.join(ROOT, "docs", "cluster", "*.yaml"))
                   + glob.glob(os.path.join(ROOT, "docs", "cluster", "*.yml")))
MAX_LINE = 120

# Field names as KubeRay's ray.io/v1 samples and API reference write them: a misspelt field is an error
# the operator may only report when the manifest is applied.
RAYJOB_SPEC = {"entrypoint", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds",
               "runtimeEnvYAML", "suspend", "submissionMode", "submitterPodTemplate", "rayClusterSpec",
               "clusterSelector"}
CLUSTER_SPEC = {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec", "workerGroupSpecs"}
HEAD_GROUP = {"rayStartParams", "template", "serviceType"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template",
                "scaleStrategy"}
# Ray's cluster launcher schema (ray/autoscaler/ray-schema.json, Ray 2.60): top-level and node-type keys.
RAY_UP_TOP = {"cluster_name", "max_workers", "upscaling_speed", "idle_timeout_minutes", "provider", "auth",
              "docker", "head_node_type", "file_mounts", "cluster_synced_files", "file_mounts_sync_continuously",
              "rsync_exclude", "rsync_filter", "metadata", "initialization_commands", "setup_commands",
              "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
              "worker_start_ray_commands", "no_restart", "available_node_types"}
RAY_UP_NODE = {"node_config", "min_workers", "max_workers", "idle_timeout_s", "priority", "resources", "labels",
               "initialization_commands", "worker_setup_commands", "docker"}

SECRET_NAME = re.compile(r"pass(word|wd)?\b|passw|secret|token|private_key|access_key|credential", re.I)
SECRET_TEXT = [re.compile(p, re.I) for p in (
    r"[a-z][a-z0-9+.-]*://[^\s/@:]+:[^\s/@]+@",  # user:password@host in a URI
    r"[?&](access_key|secret_key|session_token)=",  # keys in a storage URI's query
    r"\bAKIA[0-9A-Z]{16}\b",  # an AWS access key id
)]


def documents(path):
    with open(path) as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def yaml_blocks(text):
    return re.findall(r"^```ya?ml[^\n]*\n(.*?)^```", text, re.M | re.S)


def doc_text():
    with open(DOC) as fh:
        return fh.read()


def literal_secrets(node, where="$"):
    """Paths under `node` where a secret's value is written out instead of referenced."""
    out = []
    if isinstance(node, dict):
        if node.get("kind") == "Secret" and (node.get("data") or node.get("stringData")):
            out.append(f"{where}: a Secret with its values written out")
        name = node.get("name")
        if isinstance(name, str) and SECRET_NAME.search(name) and "value" in node:
            out.append(f"{where}: env {name} has a literal value (use valueFrom.secretKeyRef)")
        for k, v in node.items():
            if isinstance(v, (str, int, float)) and not isinstance(v, bool) and SECRET_NAME.search(str(k)) \
                    and str(v).strip():
                out.append(f"{where}.{k}: a literal value under a secret's name")
            out += literal_secrets(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += literal_secrets(v, f"{where}[{i}]")
    elif isinstance(node, str):
        out += [f"{where}: {p.pattern}" for p in SECRET_TEXT if p.search(node)]
    return out


def all_docs():
    return [(os.path.relpath(p, ROOT), d) for p in MANIFESTS for d in documents(p)]


def of_kind(kind):
    return [d for _, d in all_docs() if isinstance(d, dict) and d.get("kind") == kind]


def ray_up_configs():
    return [d for _, d in all_docs() if isinstance(d, dict) and "cluster_name" in d and "provider" in d]


def containers(pod_template):
    return pod_template["spec"]["containers"]


def secret_env_names(container):
    """Env vars this container takes from a Secret; '*' where it takes a whole Secret (envFrom)."""
    names = {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    return names | {"*" for e in container.get("envFrom", []) if "secretRef" in e}


def test_manifests_exist_and_every_document_is_a_known_kind():
    assert MANIFESTS, "docs/cluster/ has no manifests"
    for path, d in all_docs():
        assert isinstance(d, dict), f"{path}: a document that is not a mapping"
        known = d.get("kind") in {"RayJob", "Deployment", "Service"} or ("cluster_name" in d and "provider" in d)
        assert known, f"{path}: a document this test does not check (kind {d.get('kind')!r}); add its checks"
    assert of_kind("RayJob") and ray_up_configs() and of_kind("Deployment") and of_kind("Service")


def test_rayjob_has_the_fields_kuberay_needs():
    for job in of_kind("RayJob"):
        assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
        spec = job["spec"]
        assert set(spec) <= RAYJOB_SPEC, set(spec) - RAYJOB_SPEC
        entry = " ".join(spec["entrypoint"].split())
        for part in ("tuner run", "--storage", "--address auto", "--tracking-uri", "--output"):
            assert part in entry, (part, entry)
        assert spec["shutdownAfterJobFinishes"] is True
        cluster = spec["rayClusterSpec"]
        assert set(cluster) <= CLUSTER_SPEC, set(cluster) - CLUSTER_SPEC
        assert cluster["enableInTreeAutoscaling"] is True
        head = cluster["headGroupSpec"]
        assert set(head) <= HEAD_GROUP, set(head) - HEAD_GROUP
        assert containers(head["template"])[0]["image"]
        assert all(isinstance(v, str) for v in head.get("rayStartParams", {}).values())  # a string map
        assert "PGPASSWORD" in secret_env_names(containers(head["template"])[0])  # the driver opens Optuna's DB
        groups = cluster["workerGroupSpecs"]
        assert groups and len({g["groupName"] for g in groups}) == len(groups)
        for g in groups:
            assert set(g) <= WORKER_GROUP, (g.get("groupName"), set(g) - WORKER_GROUP)
            assert all(isinstance(g[k], int) for k in ("replicas", "minReplicas", "maxReplicas")), g["groupName"]
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
            assert isinstance(g["rayStartParams"], dict)
            assert all(isinstance(v, str) for v in g["rayStartParams"].values())
            c = containers(g["template"])[0]
            assert c["image"] and c["resources"]["limits"], g["groupName"]
            assert secret_env_names(c), f"{g['groupName']}: trials write to the bucket; give them its keys"
        assert any("nvidia.com/gpu" in containers(g["template"])[0]["resources"]["limits"] for g in groups)
        assert any(g["minReplicas"] >= 1 for g in groups), "tuner's start check needs one live worker"


def test_ray_up_config_has_the_fields_the_cluster_launcher_needs():
    for cfg in ray_up_configs():
        assert set(cfg) <= RAY_UP_TOP, set(cfg) - RAY_UP_TOP
        assert isinstance(cfg["cluster_name"], str) and cfg["provider"]["type"]
        if cfg["provider"]["type"] == "aws":
            assert cfg["provider"]["region"]
        assert isinstance(cfg["max_workers"], int)
        types = cfg["available_node_types"]
        assert cfg["head_node_type"] in types
        for name, t in types.items():
            assert set(t) <= RAY_UP_NODE, (name, set(t) - RAY_UP_NODE)
            assert isinstance(t["node_config"], dict), name  # both required by Ray's schema
            assert all(isinstance(v, int) and v >= 0 for v in t["resources"].values()), name
            assert t.get("min_workers", 0) <= t.get("max_workers", cfg["max_workers"]), name
        assert any(t["resources"].get("GPU", 0) > 0 for t in types.values()), "no GPU node type"
        assert cfg.get("setup_commands") or cfg.get("docker"), "nothing installs the project"
        assert all(isinstance(c, str) for c in cfg.get("setup_commands", []))


def test_mlflow_server_uses_postgresql_and_s3_and_matches_the_tracking_uri():
    (deploy,), services = of_kind("Deployment"), of_kind("Service")
    c = containers(deploy["spec"]["template"])[0]
    cmd = c["command"] + c.get("args", [])
    assert cmd[:2] == ["mlflow", "server"]
    store = cmd[cmd.index("--backend-store-uri") + 1]
    assert store.startswith("postgresql+psycopg2://") and not literal_secrets(store)
    assert cmd[cmd.index("--artifacts-destination") + 1].startswith("s3://")
    assert {"PGPASSWORD", "AWS_SECRET_ACCESS_KEY"} <= secret_env_names(c)
    hosts = {f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc:{p['port']}"
             for s in services for p in s["spec"]["ports"]}
    for job in of_kind("RayJob"):  # the sweep logs to this Service, and the server accepts its Host header
        uri = re.search(r"--tracking-uri\s+http://(\S+)", job["spec"]["entrypoint"]).group(1)
        assert uri in hosts, (uri, hosts)
        assert uri in cmd[cmd.index("--allowed-hosts") + 1].split(",")


@pytest.mark.parametrize("bad", [
    {"env": [{"name": "PGPASSWORD", "value": "hunter2"}]},
    {"password": "hunter2"},
    {"kind": "Secret", "stringData": {"PGPASSWORD": "x"}},
    {"uri": "postgresql+psycopg2://tuner:hunter2@db/optuna"},
    {"storage": "s3://b/p?access_key=x"},
])
def test_the_secret_check_catches_literal_secrets(bad):
    assert literal_secrets(bad)


def test_no_secret_values_in_manifests_or_yaml_blocks():
    found = [f"{path} {p}" for path, d in all_docs() for p in literal_secrets(d)]
    found += [f"docs/cluster.md yaml block {i} {p}" for i, block in enumerate(yaml_blocks(doc_text()))
              for d in yaml.safe_load_all(block) for p in literal_secrets(d)]
    assert not found, found


def test_every_yaml_block_in_the_page_parses():
    blocks = yaml_blocks(doc_text())
    assert blocks
    for i, block in enumerate(blocks):
        try:
            list(yaml.safe_load_all(block))
        except yaml.YAMLError as e:
            pytest.fail(f"docs/cluster.md yaml block {i}: {e}")


def test_files_the_page_names_exist_and_every_manifest_is_named():
    text = doc_text()
    named = set(re.findall(r"\b((?:docs/cluster|tests)/[\w./-]+\.(?:ya?ml|py))\b", text))
    assert {p for p in named if p.startswith("docs/cluster/")}, "the page names no manifest"
    missing = sorted(p for p in named if not os.path.isfile(os.path.join(ROOT, p)))
    assert not missing, missing
    unnamed = [os.path.relpath(p, ROOT) for p in MANIFESTS if os.path.relpath(p, ROOT) not in named]
    assert not unnamed, f"manifests docs/cluster.md does not mention: {unnamed}"
    assert "## What was tested here and what was not" in text


def test_lines_stay_short():
    long_lines = []
    for path in [DOC, *MANIFESTS]:
        with open(path) as fh:
            long_lines += [f"{os.path.relpath(path, ROOT)}:{n}" for n, line in enumerate(fh, 1)
                           if len(line.rstrip("\n")) > MAX_LINE]
    assert not long_lines, long_lines
