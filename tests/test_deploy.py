"""The fleet manifest (deploy/kubernetes/daemonset.yaml) runs what tcpfast accepts,
with the least privilege it claims."""

from pathlib import Path

import pytest

from tcpfast.cli import parse_args

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install --group test)")

MANIFEST = Path(__file__).parents[1] / "deploy" / "kubernetes" / "daemonset.yaml"


@pytest.fixture(scope="module")
def template() -> dict:
    if not MANIFEST.exists():
        pytest.skip(f"{MANIFEST} is not in this tree")
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    daemonset = next(doc for doc in documents if doc["kind"] == "DaemonSet")
    return daemonset["spec"]["template"]


def test_container_args_are_accepted_by_tcpfast(template):
    container = template["spec"]["containers"][0]
    try:
        parsed = parse_args(container["args"])      # options that rule each other out too
    except SystemExit as error:  # argparse's usage error
        pytest.fail(f"tcpfast rejects the manifest's arguments {container['args']} "
                    f"(exit {error.code})")
    assert parsed.proc_root == "/proc/1" and parsed.json and not parsed.once
    assert parsed.all_netns and parsed.pod_logs == "/var/log/pods"
    assert not parsed.block
    # The port Prometheus is told to scrape is the one tcpfast serves.
    port = int(template["metadata"]["annotations"]["prometheus.io/port"])
    assert parsed.metrics == ("0.0.0.0", port)
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]


def test_least_privilege(template):
    pod = template["spec"]
    container = pod["containers"][0]
    # The node's tables through pid 1 of the host's pid namespace, not its network.
    assert pod["hostPID"] is True and pod.get("hostNetwork", False) is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    # One volume: the kubelet's pod log directory, read-only, for pod names.
    [mount] = container["volumeMounts"]
    assert mount["readOnly"] is True and mount["mountPath"] == "/var/log/pods"
    [volume] = pod["volumes"]
    assert volume["name"] == mount["name"] and volume["hostPath"]["path"] == "/var/log/pods"
