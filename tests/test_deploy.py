"""The fleet manifest (deploy/kubernetes/daemonset.yaml) runs what tcpfast accepts,
with the least privilege it claims."""

from pathlib import Path

import pytest

from tcpfast.cli import build_parser

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install '.[test]')")

MANIFEST = Path(__file__).parents[1] / "deploy" / "kubernetes" / "daemonset.yaml"

# Options the manifest uses before tcpfast has them, and where they come from:
# their test skips, saying so, until the option lands; then it must parse.
PENDING = {"--metrics": "issue 9 (Prometheus metrics)"}


@pytest.fixture(scope="module")
def pod() -> dict:
    if not MANIFEST.exists():
        pytest.skip(f"{MANIFEST} is not in this tree")
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    daemonset = next(doc for doc in documents if doc["kind"] == "DaemonSet")
    return daemonset["spec"]["template"]["spec"]


def option(arg: str) -> str:
    return arg.split("=", 1)[0]


def parse(args: list[str]):
    try:
        return build_parser().parse_args(args)
    except SystemExit as error:      # argparse's usage error
        pytest.fail(f"tcpfast rejects the manifest's arguments {args} (exit {error.code})")


def known_options() -> set[str]:
    return {name for action in build_parser()._actions for name in action.option_strings}


def test_container_args_are_accepted_by_tcpfast(pod):
    args = [arg for arg in pod["containers"][0]["args"] if option(arg) not in PENDING]
    parsed = parse(args)
    assert parsed.proc_root == "/proc/1" and parsed.json and not parsed.once


@pytest.mark.parametrize("name", sorted(PENDING))
def test_pending_options_in_the_manifest_are_accepted_once_they_land(pod, name):
    args = pod["containers"][0]["args"]
    assert name in map(option, args), f"{name} is no longer in the manifest: drop it from PENDING"
    if name not in known_options():
        pytest.skip(f"tcpfast does not accept {name} yet: {PENDING[name]}")
    parse(args)


def test_least_privilege(pod):
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
    assert not container.get("volumeMounts")
