#!/usr/bin/env bash
# Idempotent set-up of a delen_ros checkout:
#   Debian packages -> .venv -> pinned wheels -> wheel CMake fix-up -> colcon build.
# Each step is skipped when its inputs are unchanged, so a re-run costs about a second.
# Long output goes to log/setup/*.log; only its tail is printed on failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
log_dir="$repo/log/setup"
mkdir -p "$log_dir"
start_s=$SECONDS
# Several people share one checkout: one set-up (and colcon build) at a time.
exec 9>"$log_dir/.lock"
if ! flock -n 9; then
    echo "[setup] waiting for another tools/setup.sh in this checkout to finish"
    flock 9
fi

say() { printf '[setup %3ds] %s\n' "$((SECONDS - start_s))" "$*"; }

# Run a command with its output in a log file; on failure show the log's tail.
run_logged() {
    local log_file="$log_dir/$1.log"
    shift
    if ! "$@" >"$log_file" 2>&1; then
        say "FAILED: $* (last lines of $log_file follow)" >&2
        tail -n 40 "$log_file" >&2
        exit 1
    fi
}

hash_of() { sha256sum | cut -c1-64; }

# --- 1. Debian packages ---------------------------------------------------
apt_packages=()
# Fashion-MNIST for training and evaluation (Debian ships it; no download at run time).
[ -d /usr/share/datasets/fashion-mnist ] || apt_packages+=(dataset-fashion-mnist)
# ament_xmllint with its local copy of the package.xml schemas (test/test_xmllint.py).
[ -d /usr/share/ament_xmllint/xml-catalog ] && command -v xmllint >/dev/null \
    || apt_packages+=(python3-ament-xmllint libxml2-utils)
command -v cmake >/dev/null || apt_packages+=(cmake)
command -v g++ >/dev/null || apt_packages+=(g++)
command -v git >/dev/null || apt_packages+=(git)
if [ ${#apt_packages[@]} -gt 0 ]; then
    apt_prefix=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { say "need root to apt-get install ${apt_packages[*]}"; exit 1; }
        apt_prefix=(sudo -n)
    fi
    say "apt-get install ${apt_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    run_logged apt-update "${apt_prefix[@]}" apt-get update
    run_logged apt-install "${apt_prefix[@]}" apt-get install -y --no-install-recommends \
        "${apt_packages[@]}" </dev/null
fi

# --- 2. virtual environment -----------------------------------------------
# The ROS 2 wheels are built for CPython 3.11 only.
if [ ! -x "$venv/bin/python" ]; then
    python_bin="${DELEN_PYTHON:-$(command -v python3.11 || true)}"
    if [ -z "$python_bin" ]; then
        say "python3.11 not found (set DELEN_PYTHON=/path/to/python3.11)"
        exit 1
    fi
    say "creating .venv with $python_bin"
    run_logged venv "$python_bin" -m venv "$venv"
fi
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
python_version="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$python_version" != 3.11 ]; then
    say ".venv has Python $python_version; the ROS 2 wheels need 3.11 (rm -rf .venv and re-run)"
    exit 1
fi

# --- 3. pinned wheels ------------------------------------------------------
pip_stamp="$venv/.delen-requirements.sha256"
pip_hash="$(cat "$repo/requirements.txt" | hash_of)"
if [ "$(cat "$pip_stamp" 2>/dev/null)" != "$pip_hash" ]; then
    say "pip install -r requirements.txt (log: log/setup/pip.log)"
    run_logged pip "$venv/bin/python" -m pip install --disable-pip-version-check \
        --progress-bar off -r "$repo/requirements.txt"
    echo "$pip_hash" >"$pip_stamp"
else
    say "wheels up to date"
fi

# --- 4. fix the wheels' CMake export files ---------------------------------
# They name the include directories of the machine that built them; CMake rejects
# missing include directories at generate time, so point them at this venv.
built_python_include=/opt/python/cp311-cp311/include/python3.11
built_numpy_include=/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
mapfile -t stale_exports < <(grep -rlF --include='*.cmake' /opt/python/cp311-cp311/ \
    "$venv/share" 2>/dev/null || true)
if [ ${#stale_exports[@]} -gt 0 ]; then
    python_include="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    numpy_include="$("$venv/bin/python" -c 'import numpy; print(numpy.get_include())')"
    say "pointing ${#stale_exports[@]} wheel CMake files at this venv's include directories"
    sed -i -e "s#$built_python_include#$python_include#g" \
        -e "s#$built_numpy_include#$numpy_include#g" "${stale_exports[@]}"
fi

# --- 5. colcon build ----------------------------------------------------------
# The repository root is the package; build/ install/ log/ sit beside it, as in a
# ROS workspace. Skipped when no file that goes into the package has changed.
cd "$repo"
build_stamp="$repo/build/.delen-source.sha256"
source_hash() {
    {
        echo "$pip_hash $venv"
        if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
            git -C "$repo" ls-files -co --exclude-standard -z \
                | grep -zvE '^(docs|bench|test)/|^README' \
                | sort -z \
                | while IFS= read -r -d '' path; do
                    [ -f "$path" ] && printf '%s\0' "$path"
                done \
                | xargs -0 -r sha256sum
        else
            date +%s%N  # not a git checkout: always rebuild
        fi
    } | hash_of
}
current_hash="$(source_hash)"
if [ -f "$repo/install/setup.bash" ] && [ "$(cat "$build_stamp" 2>/dev/null)" = "$current_hash" ]; then
    say "package up to date (install/)"
else
    say "colcon build (log: log/setup/colcon.log)"
    export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
    run_logged colcon colcon build --base-paths . \
        --event-handlers console_direct- console_cohesion+ \
        --cmake-args -DPython3_EXECUTABLE="$venv/bin/python" -DCMAKE_BUILD_TYPE=Release
    # An install step only adds files: drop what a source change removed (a deleted
    # module or script), so the tests never pass on a stale copy.
    "$venv/bin/python" - "$repo" <<'EOF'
import os, sys
repo = sys.argv[1]
prefix = os.path.join(repo, 'install', 'delen_ros')
with open(os.path.join(repo, 'build', 'delen_ros', 'install_manifest.txt')) as manifest:
    installed = set(manifest.read().split('\n'))
mirrors = [os.path.join(prefix, 'lib', 'delen_ros')] + [
    os.path.join(prefix, 'share', 'delen_ros', name)
    for name in ('launch', 'config', 'models', 'platforms')]
for root, _dirs, _files in os.walk(os.path.join(prefix, 'lib')):
    if root.endswith(os.sep + 'site-packages'):
        mirrors.append(os.path.join(root, 'delen_ros'))
for mirror in mirrors:
    for root, dirs, files in os.walk(mirror):
        dirs[:] = [name for name in dirs if name != '__pycache__']
        for name in files:
            path = os.path.join(root, name)
            if path not in installed:
                print('[setup] removing stale %s' % os.path.relpath(path, repo))
                os.remove(path)
EOF
    echo "$current_hash" >"$build_stamp"
fi
say "ready: source tools/env.sh"
