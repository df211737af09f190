#!/usr/bin/env bash
# The kubernetes backend's first real run: a recipe, NEVER run on the
# development machines (no kind, kubelet or CNI can run there; see
# plugins/kubernetes/README.md, "Verified where"). Run it from the repository
# root on a Linux machine with Docker, kind >= 0.24, kubectl and gVisor's
# runsc + containerd-shim-runsc-v1 installed, after `uv sync`.
#
#   plugins/kubernetes/real-cluster.sh            # cluster, escape suite, provider e2e
#   KIND_NO_POLICY=/path/to/kind-v0.23.0 plugins/kubernetes/real-cluster.sh
#                                                 # plus the negative control
#
# What it does:
#   1. a kind cluster (kindnetd enforces NetworkPolicy from kind 0.24) with
#      gVisor registered as RuntimeClass "gvisor" and the agent's Localhost
#      seccomp profile in the node's kubelet seccomp directory;
#   2. the bottle images built by the Docker backend and loaded into the node;
#   3. a smoke run, then the sandbox-escape suite and the provider end-to-end
#      tests with the kubernetes backend (BOT_BOTTLE_TEST_BACKEND, read by
#      tests/bottle_kit.py);
#   4. the negative control: a cluster whose CNI does not enforce
#      NetworkPolicy (kind < 0.24), where a launch must be refused by the
#      fence probe and leave nothing behind.
# Record its output in plugins/kubernetes/README.md when it ran.
set -euo pipefail

CLUSTER=${CLUSTER:-bb-real}
KIND=${KIND:-kind}
KIND_NO_POLICY=${KIND_NO_POLICY:-}
PY=${PY:-.venv/bin/python}
BB=("$PY" -m bot_bottle)
NAMESPACE=${BOT_BOTTLE_K8S_NAMESPACE:-bot-bottle}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

die() { echo "real-cluster: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is not installed"; }

for tool in docker kubectl "$KIND" runsc containerd-shim-runsc-v1; do need "$tool"; done
kind_minor=$("$KIND" version | sed -n 's/^kind v0\.\([0-9]*\)\..*/\1/p')
[ -n "$kind_minor" ] && [ "$kind_minor" -ge 24 ] ||
    die "kind >= 0.24 is needed (older kindnetd does not enforce NetworkPolicy)"
[ -x "$PY" ] || die "$PY missing: run 'uv sync' first"

make_cluster() { # name kind-binary
    local name=$1 kind=$2 seccomp="$WORK/seccomp"
    mkdir -p "$seccomp"
    "$PY" -m bot_bottle_kubernetes.seccomp "$seccomp" >/dev/null
    # kind's own defaults for the ranges, spelled out: the backend is told
    # them (BOT_BOTTLE_K8S_POD_CIDRS / _SERVICE_CIDRS) and closes them.
    cat >"$WORK/$name.yaml" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/16
nodes:
  - role: control-plane
    extraMounts:
      - {hostPath: $seccomp, containerPath: /var/lib/kubelet/seccomp, readOnly: true}
      - {hostPath: $(command -v runsc), containerPath: /usr/local/bin/runsc, readOnly: true}
      - {hostPath: $(command -v containerd-shim-runsc-v1), containerPath: /usr/local/bin/containerd-shim-runsc-v1, readOnly: true}
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
      runtime_type = "io.containerd.runsc.v1"
EOF
    "$kind" create cluster --name "$name" --config "$WORK/$name.yaml" --wait 180s
    kubectl --context "kind-$name" apply -f - <<EOF
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: gvisor}
handler: runsc
---
apiVersion: v1
kind: Namespace
metadata: {name: $NAMESPACE}
EOF
    # The images: built by the Docker backend (a docker run of the demo
    # builds the bundle and the shell agent; the provider tests build
    # theirs), then copied into the node. Pods reference them by tag with
    # imagePullPolicy IfNotPresent.
    "${BB[@]}" init >/dev/null || true
    "${BB[@]}" run demo --backend docker -- true
    docker images --format '{{.Repository}}:{{.Tag}}' | grep '^bot-bottle/' |
        xargs -r "$kind" load docker-image --name "$name"
}

export BOT_BOTTLE_K8S_NAMESPACE=$NAMESPACE
export BOT_BOTTLE_K8S_POD_CIDRS=10.244.0.0/16
export BOT_BOTTLE_K8S_SERVICE_CIDRS=10.96.0.0/16

echo "== 1-2. cluster $CLUSTER with gVisor, seccomp profile and images"
make_cluster "$CLUSTER" "$KIND"
kubectl config use-context "kind-$CLUSTER"
"${BB[@]}" doctor || true # the kube context's lines: version, policy enforcement, runsc

echo "== 3. smoke, escape suite, provider end-to-end (--backend kubernetes)"
"${BB[@]}" run demo --backend kubernetes -- sh -c 'echo inside; ! getent hosts example.com'
export BOT_BOTTLE_TEST_BACKEND=kubernetes
"$PY" -m pytest -q tests/escape -p no:cacheprovider
"$PY" -m pytest -q tests/test_provider_bottles.py -p no:cacheprovider
unset BOT_BOTTLE_TEST_BACKEND
left=$(kubectl -n "$NAMESPACE" get all,configmaps,secrets,leases,networkpolicies \
    -l bot-bottle/backend=kubernetes -o name)
[ -z "$left" ] || die "objects left behind: $left"

if [ -n "$KIND_NO_POLICY" ]; then
    echo "== 4. negative control: a CNI without NetworkPolicy enforcement"
    make_cluster "$CLUSTER-nopolicy" "$KIND_NO_POLICY"
    kubectl config use-context "kind-$CLUSTER-nopolicy"
    if "${BB[@]}" run demo --backend kubernetes -- true 2>"$WORK/refusal"; then
        die "the launch succeeded on a cluster that does not enforce NetworkPolicy"
    fi
    grep -q "fence" "$WORK/refusal" || die "refused, but not by the fence probe: $(cat "$WORK/refusal")"
    left=$(kubectl -n "$NAMESPACE" get pods,configmaps,secrets,leases \
        -l bot-bottle/backend=kubernetes -o name)
    [ -z "$left" ] || die "the refused launch left: $left"
    "$KIND_NO_POLICY" delete cluster --name "$CLUSTER-nopolicy"
else
    echo "== 4. negative control skipped: set KIND_NO_POLICY to a kind < 0.24 binary"
fi
"$KIND" delete cluster --name "$CLUSTER"
echo "real-cluster: all steps passed"
