#!/usr/bin/env bash
# Wheels that bench/gpu/dpo_gpu.py installs on a GPU host without network.
#
# The GPU image has torch, transformers, accelerate, peft, numpy and pyarrow (and
# their own dependencies: huggingface-hub, filelock, fsspec, jinja2, packaging, psutil,
# pyyaml, tqdm, safetensors) but not trl or datasets. This downloads, with --no-deps,
# exactly the trl and datasets of requirements.lock and the dependencies of theirs that
# such an image may lack, at the locked versions, into bench/gpu/wheels/ (ignored by
# git; it travels to the GPU machine as a carried path). The host's Python is not known
# for sure (3.12.3 when last seen; see bench/RESULTS.md), so the compiled and the
# per-version wheels are fetched for CPython 3.11 and 3.12 on manylinux x86_64. Not 3.10:
# trl 1.16.0 (and pandas 3, python-dateutil 4) require Python >= 3.11.
# Nothing of torch, transformers, numpy, pyarrow, accelerate, peft or nvidia is fetched.
#
#   bash bench/gpu/wheels.sh        # from the repository root; re-running refreshes it
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST="$ROOT/bench/gpu/wheels"
LOCK="$ROOT/requirements.lock"
LIMIT_MIB=40
PYTHONS=(3.11 3.12)
# manylinux tags a glibc 2.28+ host accepts (pandas 3 ships manylinux_2_24/2_28 only)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)

# pure-python wheels: one file serves every Python 3
PURE=(trl datasets dill python-dateutil tzdata)
# compiled (xxhash, pandas) or tagged per Python version (multiprocess: py311, py312)
PER_PYTHON=(xxhash multiprocess pandas)

if [[ -x "$ROOT/.venv/bin/pip" ]]; then
    DOWNLOAD=("$ROOT/.venv/bin/pip" download --quiet)
elif command -v uv >/dev/null; then
    DOWNLOAD=(uv pip download)
else
    echo "wheels.sh: neither .venv/bin/pip nor uv is there: make the venv first" >&2
    exit 1
fi

pinned() {  # the locked requirement of $1: name==version
    local line
    line=$(grep -i -m1 -E "^$1==" "$LOCK" || true)
    if [[ -z "$line" ]]; then
        echo "wheels.sh: $1 is not pinned in requirements.lock" >&2
        exit 1
    fi
    echo "${line%% *}"
}

rm -rf "$DEST"
mkdir -p "$DEST"
specs=()
for name in "${PURE[@]}"; do specs+=("$(pinned "$name")"); done
"${DOWNLOAD[@]}" --no-deps --only-binary=:all: --dest "$DEST" "${specs[@]}"

platform_args=()
for platform in "${PLATFORMS[@]}"; do platform_args+=(--platform "$platform"); done
for python in "${PYTHONS[@]}"; do
    specs=()
    for name in "${PER_PYTHON[@]}"; do specs+=("$(pinned "$name")"); done
    "${DOWNLOAD[@]}" --no-deps --only-binary=:all: --implementation cp \
        --python-version "$python" "${platform_args[@]}" --dest "$DEST" "${specs[@]}"
done

ls -l "$DEST" | tail -n +2 | awk '{printf "%10d  %s\n", $5, $9}'
bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "wheels.sh: $(ls "$DEST"/*.whl | wc -l) wheels, $mib MiB in $DEST"
if ((bytes > LIMIT_MIB * 1048576)); then
    echo "wheels.sh: more than $LIMIT_MIB MiB: too much to carry" >&2
    exit 1
fi
