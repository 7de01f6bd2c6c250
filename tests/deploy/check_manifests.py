#!/usr/bin/env python3
"""Checks deploy/kubernetes/ without a cluster.

Every manifest the kustomization lists is validated strictly (an unknown field is an error)
against the Kubernetes 1.33 schemas; the ClusterSPIFFEID, a CRD those schemas do not hold, is
checked field by field below. Then the pod's shape: native sidecar, iptables init, uids,
capabilities, the Workload API socket, ConfigMap mounts, probes, admin port, Service, SPIRE
registration. Last, the hopgate config and policies are taken out of their ConfigMaps, laid
out as the kubelet lays out a ConfigMap volume (the `..data` link), and given to the real
binary: `hopgate check-config`, `hopgate policy check`, and the `iptables` and `probe`
commands exactly as the pod runs them.

Each check prints `ok` or `FAIL` and its name; the exit status is 1 when any check failed.

    check_manifests.py [--hopgate PATH] [--manifests DIR]
        --hopgate    default: $HOPGATE_BIN, else ${CARGO_TARGET_DIR:-target}/debug/hopgate
        --manifests  default: deploy/kubernetes/
"""

import argparse
import http.server
import os
import posixpath
import re
import subprocess
import sys
import tempfile
import threading

import kubernetes_validate
import yaml

from manifests import (  # tests/deploy/manifests.py, beside this script
    KUBERNETES_VERSION,
    ROOT,
    MANIFESTS,
    EXAMPLE_POLICIES,
    CLUSTER_SPIFFE_ID_FIELDS,
    LABEL_SELECTOR_FIELDS,
    Problem,
    Results,
    expect,
    Manifests,
    flags,
    option,
    port_of,
    host_of,
    seconds,
    is_loopback,
)


# === checks on the manifests ===


def check_kustomization(m):
    listed = set(m.files)
    on_disk = {f for f in os.listdir(m.dir)
               if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml"}
    expect(listed == on_disk, f"listed {sorted(listed)}, in the folder {sorted(on_disk)}")


def check_schemas(m):
    problems = []
    for name, doc in m.resources:
        if doc["kind"] == "ClusterSPIFFEID":
            continue  # a CRD: check_cluster_spiffe_id
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{name}: {e.message}")
    expect(not problems, "\n".join(problems))


def check_native_sidecar(m):
    expect(m.sidecar.get("restartPolicy") == "Always",
           f"`{m.sidecar['name']}` has restartPolicy {m.sidecar.get('restartPolicy')!r}, not Always")
    expect(m.iptables.get("restartPolicy") is None,
           f"`{m.iptables['name']}` must run once and exit: no restartPolicy")
    expect(all(c.get("args", [])[:1] != ["run"] for c in m.apps),
           "hopgate also runs as a regular container")


def check_order(m):
    names = [c["name"] for c in m.pod["initContainers"]]
    expect(names.index(m.iptables["name"]) < names.index(m.sidecar["name"]),
           f"init containers run in the order {names}: the rules must be in place first")


def check_iptables_capabilities(m):
    caps = m.iptables.get("securityContext", {}).get("capabilities", {})
    expect(caps.get("drop") == ["ALL"], f"drops {caps.get('drop')}, not [ALL]")
    expect(sorted(caps.get("add", [])) == ["NET_ADMIN", "NET_RAW"],
           f"adds {caps.get('add')}, not exactly NET_ADMIN and NET_RAW")


def check_iptables_security(m):
    sc = m.iptables.get("securityContext", {})
    expect(sc.get("runAsUser") == 0 and sc.get("runAsNonRoot") is False,
           "must say runAsUser: 0 and runAsNonRoot: false")
    expect(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    expect(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    expect(not sc.get("privileged"), "must not be privileged")


def check_iptables_args(m):
    f, config = m.iptables_flags, m.config
    expect(set(f) <= {"proxy-uid", "outbound-port", "inbound-port", "capture-inbound",
                      "exclude-ports", "exclude-cidrs"}, f"unknown flags in {sorted(f)}")
    expect(f.get("capture-inbound") is True, "--capture-inbound is missing")
    expect(config["outbound"].get("transparent") is True,
           "outbound.transparent must be true: the app's calls arrive by redirect")
    expect(int(f.get("outbound-port", 0)) == port_of(config["outbound"]["listen"]),
           f"--outbound-port {f.get('outbound-port')} is not outbound.listen's port")
    expect(int(f.get("inbound-port", 0)) == port_of(config["inbound"]["listen"]),
           f"--inbound-port {f.get('inbound-port')} is not inbound.listen's port")


def check_sidecar_uid(m):
    uid = m.sidecar.get("securityContext", {}).get("runAsUser")
    expect(uid is not None and str(uid) == str(m.iptables_flags.get("proxy-uid")),
           f"sidecar runAsUser {uid}, --proxy-uid {m.iptables_flags.get('proxy-uid')}")


def check_sidecar_security(m):
    sc = m.sidecar.get("securityContext", {})
    expect(sc.get("runAsNonRoot") is True, "runAsNonRoot must be true")
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], "must drop ALL capabilities")
    expect(not sc.get("capabilities", {}).get("add"), "must add no capability")
    expect(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    expect(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    expect(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
           "seccompProfile must be RuntimeDefault")


def check_app_uid(m):
    proxy_uid = str(m.iptables_flags.get("proxy-uid"))
    pod_uid = m.pod.get("securityContext", {}).get("runAsUser")
    for app in m.apps:
        uid = app.get("securityContext", {}).get("runAsUser", pod_uid)
        expect(uid is not None, f"`{app['name']}` sets no runAsUser: its uid is the image's")
        expect(str(uid) != proxy_uid,
               f"`{app['name']}` runs as the proxy uid {uid}: its calls would skip the redirect")


def check_workload_api_volume(m):
    csi = [(n, v["csi"]) for n, v in m.volumes.items() if "csi" in v]
    expect(len(csi) == 1, f"expected one csi volume, found {len(csi)}")
    name, source = csi[0]
    expect(source.get("driver") == "csi.spiffe.io", f"driver is {source.get('driver')!r}")
    expect(source.get("readOnly") is True, "the csi volume must be readOnly")
    mounts = [mt for mt in m.sidecar.get("volumeMounts", []) if mt["name"] == name]
    expect(len(mounts) == 1 and mounts[0].get("readOnly") is True,
           "the csi volume must be mounted read-only into the sidecar")
    for c in m.apps + [m.iptables]:
        expect(all(mt["name"] != name for mt in c.get("volumeMounts", [])),
               f"`{c['name']}` must not see the Workload API socket")


def check_workload_api_socket(m):
    socket = m.config["identity"].get("workload_api", {}).get("socket") \
        or m.env(m.sidecar, "SPIFFE_ENDPOINT_SOCKET")
    expect(socket, "neither identity.workload_api.socket nor SPIFFE_ENDPOINT_SOCKET is set")
    expect(socket.startswith("unix://"), f"`{socket}` is not a unix:// socket")
    mount, rest = m.mount_of(m.sidecar, socket[len("unix://"):])
    expect("csi" in m.volumes[mount["name"]], f"`{socket}` is not on the csi volume")
    expect(rest and "/" not in rest, f"`{socket}` is not directly in the csi mount")


def check_config_maps(m):
    for mount in (m.config_mount, m.policies_mount):
        expect(mount.get("readOnly") is True, f"mount `{mount['name']}` must be readOnly")
    names = {m.config_mount["name"], m.policies_mount["name"]}
    for c in m.pod.get("initContainers", []) + m.apps:
        for mount in c.get("volumeMounts", []):
            expect(not ({"subPath", "subPathExpr"} & set(mount)) or mount["name"] not in names,
                   f"`{c['name']}` mounts `{mount['name']}` with subPath: it would never update")


def check_probes(m):
    def hopgate_probe(probe, kind):
        expect(probe and "exec" in probe, f"{kind}: an exec probe is needed (not httpGet)")
        command = probe["exec"]["command"]
        expect(posixpath.basename(command[0]) == "hopgate", f"{kind}: runs `{command[0]}`")
        return command[1:3], option(command, "--admin")

    admin = m.config.get("admin", {}).get("listen", "127.0.0.1:15000")
    for field, word in (("readinessProbe", "ready"), ("livenessProbe", "live"),
                        ("startupProbe", "ready")):
        probe = m.sidecar.get(field)
        if field == "startupProbe" and probe is None:
            continue
        words, address = hopgate_probe(probe, field)
        expect(words == ["probe", word], f"{field} runs `hopgate {' '.join(words)}`")
        expect(address in (None, admin), f"{field} asks `{address}`, admin.listen is `{admin}`")
    startup = m.sidecar.get("startupProbe")
    if startup:
        # Past initial_timeout hopgate exits on its own, saying why; the probe must not cut
        # that short.
        timeout = seconds(m.config["identity"].get("workload_api", {}).get("initial_timeout", "30s"))
        window = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        expect(window > timeout, f"startupProbe gives up after {window}s, initial_timeout is {timeout}s")


def check_admin(m):
    admin = m.config.get("admin", {}).get("listen", "127.0.0.1:15000")
    expect(is_loopback(admin), f"admin.listen `{admin}` is not a loopback address")
    for c in m.pod.get("initContainers", []) + m.apps:
        for port in c.get("ports", []):
            expect(port["containerPort"] not in (15000, port_of(admin)),
                   f"`{c['name']}` declares the admin port {port['containerPort']}")


def check_service(m):
    service = m.one("Service")
    labels = m.deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    expect(all(labels.get(k) == v for k, v in selector.items()), "selects no pod of the Deployment")
    inbound = port_of(m.config["inbound"]["listen"])
    named = {p["name"]: p["containerPort"] for p in m.sidecar.get("ports", []) if "name" in p}
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        target = named.get(target, target)
        expect(target == inbound,
               f"port {port['port']} leads to {target}, not hopgate's inbound port {inbound}")
    account = m.pod.get("serviceAccountName")
    expect(any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account
               and d["metadata"]["namespace"] == m.deployment["metadata"]["namespace"]
               for _, d in m.resources), f"ServiceAccount `{account}` is not among the manifests")


def check_routes(m):
    outbound = m.config["outbound"]
    expect("dns_refresh" in outbound, "outbound.dns_refresh is not set")
    for i, route in enumerate(outbound.get("routes", [])):
        for key in ("address", "original_dst"):
            host = host_of(route.get(key, "x:0"))
            expect(host.endswith(".svc.cluster.local"),
                   f"routes[{i}].{key}: `{route.get(key)}` is not a Service's DNS name")


def check_cluster_spiffe_id(m):
    doc = m.one("ClusterSPIFFEID")
    expect(doc.get("apiVersion") == "spire.spiffe.io/v1alpha1", f"apiVersion {doc.get('apiVersion')}")
    expect(set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, f"top-level keys {sorted(doc)}")
    expect("namespace" not in doc["metadata"], "a ClusterSPIFFEID is cluster-scoped: no namespace")
    spec = doc.get("spec", {})
    for key, value in spec.items():
        expect(key in CLUSTER_SPIFFE_ID_FIELDS, f"spec.{key}: unknown field")
        expect(isinstance(value, CLUSTER_SPIFFE_ID_FIELDS[key]), f"spec.{key}: wrong type")
    for key in ("namespaceSelector", "podSelector"):
        expect(set(spec.get(key, {})) <= LABEL_SELECTOR_FIELDS, f"spec.{key}: unknown field")
    expect(isinstance(spec.get("spiffeIDTemplate"), str), "spec.spiffeIDTemplate is required")
    pod_labels = m.deployment["spec"]["template"]["metadata"]["labels"]
    namespace = m.deployment["metadata"]["namespace"]
    pods = spec.get("podSelector", {}).get("matchLabels", {})
    expect(pods and all(pod_labels.get(k) == v for k, v in pods.items()),
           "spec.podSelector does not select the Deployment's pods")
    namespaces = spec.get("namespaceSelector", {}).get("matchLabels", {})
    expect(namespaces == {"kubernetes.io/metadata.name": namespace},
           f"spec.namespaceSelector does not select namespace `{namespace}`")
    expect(f"k8s:container-name:{m.sidecar['name']}" in spec.get("workloadSelectorTemplates", []),
           "the SVID must be for the sidecar's container only (k8s:container-name)")


def check_spiffe_id(m):
    """The ID the ClusterSPIFFEID renders for the pod is the one the mesh's policies name."""
    template = m.one("ClusterSPIFFEID")["spec"]["spiffeIDTemplate"]
    trust_domain = m.config["outbound"]["routes"][0]["identity"].split("/")[2]
    values = {".TrustDomain": trust_domain,
              ".PodMeta.Namespace": m.deployment["metadata"]["namespace"],
              ".PodSpec.ServiceAccountName": m.pod.get("serviceAccountName", "default")}
    rendered = re.sub(r"\{\{\s*(\S+)\s*\}\}", lambda x: values.get(x.group(1), "?"), template)
    account = values[".PodSpec.ServiceAccountName"]
    expect(rendered == f"spiffe://{trust_domain}/ns/{values['.PodMeta.Namespace']}/sa/{account}",
           f"renders `{rendered}`, not spiffe://TD/ns/NS/sa/SA")
    policies = "".join(m.policy_map["data"].values())
    expect(f'Hop::Workload::"{rendered}"' in policies, f"no policy names `{rendered}`")


def check_policies_match_examples(m):
    data = m.policy_map["data"]
    shipped = sorted(os.listdir(EXAMPLE_POLICIES))
    expect(sorted(data) == shipped, f"keys {sorted(data)}, examples/policies/ has {shipped}")
    for name in shipped:
        with open(os.path.join(EXAMPLE_POLICIES, name)) as f:
            expect(data[name] == f.read(), f"`{name}` differs from examples/policies/{name}")


def check_image_tags(m):
    """Every hopgate image tag, in the pod and the kustomization, is the version the workspace
    builds."""
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        version = re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)
    tags = []
    for name in sorted(os.listdir(MANIFESTS)):
        with open(os.path.join(MANIFESTS, name)) as f:
            text = f.read()
        tags += [(name, t) for t in re.findall(r"^\s*image:\s*\S*hopgate\S*:(\S+)\s*$", text, re.M)]
        tags += [(name, t) for t in re.findall(r"^\s*newTag:\s*(\S+)\s*$", text, re.M)]
    expect(tags, "no image tags found")
    for name, tag in tags:
        expect(tag == version, f"{name}: image tag `{tag}`, but Cargo.toml says {version}")


# === the binary ===


def lay_out_config_map(root, mount_path, config_map):
    """A ConfigMap volume as the kubelet writes it: files in a timestamped folder, `..data`
    linking to it, and each key a link through `..data`."""
    folder = os.path.join(root, mount_path.lstrip("/"))
    stamp = "..2026_01_01_00_00_00.000000000"
    os.makedirs(os.path.join(folder, stamp))
    for key, value in config_map["data"].items():
        with open(os.path.join(folder, stamp, key), "w") as f:
            f.write(value)
        os.symlink(os.path.join("..data", key), os.path.join(folder, key))
    os.symlink(stamp, os.path.join(folder, "..data"))


def run(command, env=None):
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    return done.returncode, (done.stdout + done.stderr).strip()


def check_binary_config(m, hopgate, root):
    env = dict(os.environ)
    socket = m.env(m.sidecar, "SPIFFE_ENDPOINT_SOCKET")
    if socket:
        env["SPIFFE_ENDPOINT_SOCKET"] = socket
    code, out = run([hopgate, "check-config", os.path.join(root, m.config_path.lstrip("/"))], env)
    expect(code == 0, f"exit {code}:\n{out}")


def dns_note(problem):
    if "dns_refresh" in problem or "is not a socket address" in problem:
        return ("this build refuses DNS names in addresses and `outbound.dns_refresh`; "
                "the check passes once they land")
    return None


def check_binary_policies(m, hopgate, root):
    code, out = run([hopgate, "policy", "check", os.path.join(root, m.policies_mount["mountPath"].lstrip("/"))])
    expect(code == 0, f"exit {code}:\n{out}")


def check_binary_iptables(m, hopgate):
    args = list(m.iptables["args"])
    args[1] = "print"  # prints the rules `apply` installs, touching nothing
    code, out = run([hopgate] + args)
    expect(code == 0, f"`hopgate {' '.join(args)}`: exit {code}:\n{out}")
    expect("HOPGATE_OUTPUT" in out, f"`hopgate {' '.join(args)}` prints no HOPGATE_OUTPUT chain")


class StubAdmin(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the status the test sets."""
    status = 200

    def do_GET(self):
        self.send_response(StubAdmin.status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def check_binary_probes(m, hopgate):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StubAdmin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        for field in ("startupProbe", "readinessProbe", "livenessProbe"):
            if field not in m.sidecar:
                continue
            command = [hopgate] + [a for a in m.sidecar[field]["exec"]["command"][1:]]
            if "--admin" in command:
                command[command.index("--admin") + 1] = address
            else:
                command += ["--admin", address]
            for status, want_ok in ((200, True), (503, False)):
                StubAdmin.status = status
                code, out = run(command)
                shown = " ".join(["hopgate"] + command[1:])
                expect((code == 0) == want_ok,
                       f"`{shown}` against an admin answering {status}: exit {code}\n{out}")
    finally:
        server.shutdown()


def command_note(name):
    def note(problem):
        if "unrecognized subcommand" in problem:
            return f"this build has no `hopgate {name}`; the check passes once it lands"
        return None
    return note


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    parser.add_argument("--hopgate", default=os.environ.get("HOPGATE_BIN",
                                                            os.path.join(target, "debug", "hopgate")))
    parser.add_argument("--manifests", default=MANIFESTS)
    args = parser.parse_args()
    hopgate = os.path.abspath(args.hopgate)
    print(f"deploy: {os.path.relpath(args.manifests)} with kubernetes-validate "
          f"{kubernetes_validate.__version__}, Kubernetes {KUBERNETES_VERSION} schemas (strict); "
          f"hopgate at {args.hopgate}")
    results = Results()
    try:
        m = Manifests(os.path.abspath(args.manifests))
    except (Problem, KeyError, OSError, yaml.YAMLError) as e:
        print(f"FAIL manifests: the manifests could not be read: {e!r}")
        return 1

    checks = [
        ("kustomization lists every manifest in deploy/kubernetes/", check_kustomization),
        (f"every manifest validates strictly against Kubernetes {KUBERNETES_VERSION}", check_schemas),
        ("hopgate is a native sidecar: an init container with restartPolicy Always", check_native_sidecar),
        ("the iptables init container runs before the sidecar", check_order),
        ("the iptables init drops ALL and adds only NET_ADMIN and NET_RAW", check_iptables_capabilities),
        ("the iptables init is root without escalation, on a read-only root filesystem", check_iptables_security),
        ("the iptables init captures inbound and outbound to the config's listener ports", check_iptables_args),
        ("the sidecar's runAsUser is the --proxy-uid the rules exempt", check_sidecar_uid),
        ("the sidecar is non-root, drops ALL, read-only, no escalation, seccomp RuntimeDefault", check_sidecar_security),
        ("the app runs as a uid other than the proxy uid", check_app_uid),
        ("the csi.spiffe.io volume is read-only and mounted into the sidecar alone", check_workload_api_volume),
        ("the Workload API socket is on the csi volume", check_workload_api_socket),
        ("config and policies come from ConfigMaps mounted read-only without subPath", check_config_maps),
        ("probes exec `hopgate probe ready|live`; startup outlasts initial_timeout", check_probes),
        ("admin.listen is loopback and no container declares the admin port", check_admin),
        ("the Service selects the pods and leads to hopgate's inbound port", check_service),
        ("routes name Services by DNS name, with outbound.dns_refresh", check_routes),
        ("the ClusterSPIFFEID's shape (a CRD: checked field by field, not by schema)", check_cluster_spiffe_id),
        ("the ClusterSPIFFEID renders spiffe://TD/ns/NS/sa/SA, which the policies name", check_spiffe_id),
        ("the policies ConfigMap holds examples/policies/ unchanged", check_policies_match_examples),
        ("hopgate's image tags are the workspace's version", check_image_tags),
    ]
    for name, fn in checks:
        results.check(name, lambda fn=fn: fn(m))

    if not os.access(hopgate, os.X_OK):
        results.check("hopgate binary", lambda: expect(False, f"`{hopgate}` is not an executable"))
        return 1
    with tempfile.TemporaryDirectory() as root:
        lay_out_config_map(root, m.config_mount["mountPath"], m.config_map)
        lay_out_config_map(root, m.policies_mount["mountPath"], m.policy_map)
        results.check("`hopgate policy check` accepts the policies ConfigMap",
                      lambda: check_binary_policies(m, hopgate, root))
        results.check("`hopgate check-config` accepts the config ConfigMap, laid out as the kubelet does",
                      lambda: check_binary_config(m, hopgate, root), note=dns_note)
    results.check("`hopgate iptables print` accepts the init container's flags",
                  lambda: check_binary_iptables(m, hopgate), note=command_note("iptables"))
    results.check("the probes' `hopgate probe` commands exit 0 on 200 and not on 503",
                  lambda: check_binary_probes(m, hopgate), note=command_note("probe"))

    print(f"deploy: {results.failed} check(s) failed" if results.failed else "deploy: ok")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
