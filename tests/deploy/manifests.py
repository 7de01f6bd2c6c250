"""What tests/deploy/check_manifests.py reads the manifests with: the loaded resources and the
pod they describe, the way checks report, and small parsers of hopgate's flags and values."""

import ipaddress
import os
import posixpath
import re

import yaml

KUBERNETES_VERSION = "1.33"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFESTS = os.path.join(ROOT, "deploy", "kubernetes")
EXAMPLE_POLICIES = os.path.join(ROOT, "examples", "policies")

# The ClusterSPIFFEID spec fields spire-controller-manager (spire.spiffe.io/v1alpha1) defines.
CLUSTER_SPIFFE_ID_FIELDS = {
    "spiffeIDTemplate": str, "ttl": str, "jwtTtl": str, "dnsNameTemplates": list,
    "workloadSelectorTemplates": list, "federatesWith": list, "namespaceSelector": dict,
    "podSelector": dict, "admin": bool, "downstream": bool, "autoPopulateDNSNames": bool,
    "className": str, "fallback": bool, "hint": str,
}
LABEL_SELECTOR_FIELDS = {"matchLabels", "matchExpressions"}


class Problem(Exception):
    """A check's finding; the message says what is wrong."""


class Results:
    """Runs named checks and remembers whether one failed."""

    def __init__(self):
        self.failed = 0

    def check(self, name, fn, note=None):
        """Runs `fn`; it returns nothing or raises Problem. `note(problem)` may add a hint."""
        try:
            try:
                fn()
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
                raise Problem(f"the manifests lack what this check reads: {e!r}") from e
        except Problem as problem:
            self.failed += 1
            print(f"FAIL {name}")
            for line in str(problem).splitlines():
                print(f"       {line}")
            hint = note(str(problem)) if note else None
            if hint:
                print(f"       note: {hint}")
            return
        print(f"ok   {name}")


def expect(condition, message):
    if not condition:
        raise Problem(message)


# === the manifests ===


class Manifests:
    """The resources the kustomization lists, and the pod they describe."""

    def __init__(self, directory):
        self.dir = directory
        with open(os.path.join(directory, "kustomization.yaml")) as f:
            self.kustomization = yaml.safe_load(f)
        self.files = list(self.kustomization.get("resources", []))
        self.resources = []  # (file, document)
        for name in self.files:
            with open(os.path.join(directory, name)) as f:
                for doc in yaml.safe_load_all(f):
                    if doc:
                        self.resources.append((name, doc))
        self.deployment = self.one("Deployment")
        self.pod = self.deployment["spec"]["template"]["spec"]
        inits = self.pod.get("initContainers", [])
        self.sidecar = next((c for c in inits if c.get("args", [])[:1] == ["run"]), None)
        self.iptables = next((c for c in inits if c.get("args", [])[:2] == ["iptables", "apply"]), None)
        expect(self.sidecar is not None, "no init container runs `hopgate run`")
        expect(self.iptables is not None, "no init container runs `hopgate iptables apply`")
        self.apps = self.pod.get("containers", [])
        self.volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        self.iptables_flags = flags(self.iptables["args"][2:])
        config_path = option(self.sidecar["args"], "-c", "--config")
        expect(config_path, "the sidecar's `hopgate run` has no `-c FILE`")
        self.config_path = config_path
        self.config_mount, key = self.mount_of(self.sidecar, config_path)
        self.config_map = self.config_map_of(self.config_mount)
        self.config = yaml.safe_load(self.config_map["data"][key])
        policy_dir = posixpath.normpath(posixpath.join(
            posixpath.dirname(config_path), self.config["policy"]["dir"]))
        self.policies_mount, rest = self.mount_of(self.sidecar, policy_dir + "/")
        expect(rest == "", f"policy.dir `{policy_dir}` is not a mounted folder")
        self.policy_map = self.config_map_of(self.policies_mount)

    def one(self, kind):
        found = [doc for _, doc in self.resources if doc.get("kind") == kind]
        expect(len(found) == 1, f"expected one {kind}, found {len(found)}")
        return found[0]

    def mount_of(self, container, path):
        """The volume mount holding `path`, and the path's rest inside it."""
        for mount in container.get("volumeMounts", []):
            prefix = mount["mountPath"].rstrip("/") + "/"
            if path.startswith(prefix):
                return mount, path[len(prefix):]
        raise Problem(f"`{path}` is on no volume mounted into `{container['name']}`")

    def config_map_of(self, mount):
        volume = self.volumes.get(mount["name"], {})
        expect("configMap" in volume, f"volume `{mount['name']}` is not a configMap")
        name = volume["configMap"]["name"]
        maps = [d for _, d in self.resources
                if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == name]
        expect(len(maps) == 1, f"ConfigMap `{name}` is not among the manifests")
        return maps[0]

    def env(self, container, name):
        return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


def flags(args):
    """`--name value` / `--name=value` / `--switch` into a dict (a switch maps to True)."""
    out, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise Problem(f"unexpected argument `{arg}`")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, value = arg[2:], args[i + 1]
            i += 1
        else:
            key, value = arg[2:], True
        out[key] = value
        i += 1
    return out


def option(args, *names):
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            return args[i + 1]
        for name in names:
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def port_of(address):
    return int(str(address).rsplit(":", 1)[1])


def host_of(address):
    return str(address).rsplit(":", 1)[0].strip("[]")


def seconds(duration):
    """A hopgate duration (`500ms`, `30s`, `5m`, `1h`) in seconds."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", duration).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def is_loopback(address):
    try:
        return ipaddress.ip_address(host_of(address)).is_loopback
    except ValueError:
        return False
