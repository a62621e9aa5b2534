#!/usr/bin/env bash
# Prove what a new user runs first, as they would run it, in a fresh venv with runtime dependencies only:
#   1. the README's first command (bash scripts/demo.sh) exits 0 and resolves all three incidents;
#   2. `incident-bot sandbox up` prints a kubeconfig that the real kubectl uses without flags.
# A runtime dependency moved to a dev extra makes one of them fail, and so this script.
# Usage: bash scripts/first-contact.sh   (called by .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d /tmp/incident-bot-first-contact.XXXXXX)"
venv="$work/venv"
sandbox_pid=""
cleanup() { [[ -n "$sandbox_pid" ]] && kill "$sandbox_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "first-contact: FAILED: $*" >&2; exit 1; }

echo "first-contact: bash scripts/demo.sh in a fresh venv ($venv), runtime dependencies only"
started=$SECONDS
set +e
INCIDENT_BOT_VENV="$venv" bash scripts/demo.sh >"$work/demo.log" 2>&1
rc=$?
set -e
if ((rc != 0)); then
  tail -n 60 "$work/demo.log" >&2
  fail "the demo exited $rc"
fi
if "$venv/bin/python" -c "import pytest" 2>/dev/null; then
  fail "the runtime venv has pytest: it is not runtime-only, so it proves nothing"
fi
resolved=$(grep -cE '^\[ *[0-9.]+s\] (errors stopped; )?INC-[0-9]+ resolved$' "$work/demo.log" || true)
((resolved == 3)) || { tail -n 60 "$work/demo.log" >&2; fail "the demo resolved $resolved of 3 incidents"; }
grep -E '^\[ *[0-9.]+s\] (INC-[0-9]+ (opened|resolved)|PagerDuty (paged|alert resolved))' "$work/demo.log"
echo "first-contact: demo OK in $((SECONDS - started)) s (install + run), all three incidents resolved"

kubectl_bin="$(command -v kubectl || true)"
[[ -n "$kubectl_bin" ]] || fail "kubectl is not installed (needed to prove the sandbox's kubeconfig)"
"$venv/bin/incident-bot" sandbox up --workdir "$work/sandbox" --duration 120 >"$work/sandbox.log" 2>&1 &
sandbox_pid=$!
for _ in $(seq 150); do
  grep -q '^VLLM_ENDPOINTS=' "$work/sandbox.log" 2>/dev/null && break
  kill -0 "$sandbox_pid" 2>/dev/null || { cat "$work/sandbox.log" >&2; fail "sandbox up exited early"; }
  sleep 0.2
done
kubeconfig="$(sed -n 's/^KUBECONFIG=//p' "$work/sandbox.log")"
[[ -n "$kubeconfig" ]] || { cat "$work/sandbox.log" >&2; fail "sandbox up printed no KUBECONFIG"; }
grep -q '^sandbox: Kubernetes API at https://' "$work/sandbox.log" || fail "sandbox up did not serve TLS by default"
out="$(KUBECONFIG="$kubeconfig" HOME="$work" "$kubectl_bin" get deploy -A 2>&1)" \
  || { echo "$out" >&2; fail "kubectl get deploy -A with the printed kubeconfig"; }
echo "$out"
grep -q 'vllm-decode' <<<"$out" || fail "kubectl listed no vllm-decode Deployment"
echo "first-contact: sandbox up + kubectl get deploy -A OK"
