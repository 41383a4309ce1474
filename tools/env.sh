# Source me (bash): `source tools/env.sh` after tools/setup.sh.
# Gives the venv's ROS 2 (Kilted wheels) plus this package's install/ tree, like
# `source /opt/ros/<distro>/setup.bash && source install/setup.bash` on a robot.

_delen_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ ! -f "$_delen_repo/.venv/bin/activate" ]; then
    echo "tools/env.sh: no .venv yet; run tools/setup.sh first" >&2
    return 1
fi
# shellcheck disable=SC1091
source "$_delen_repo/.venv/bin/activate"

# Prepend $1 to the path list variable named $2 unless it is already there.
_delen_prepend() {
    local value="${!2:-}"
    case ":$value:" in
        *":$1:"*) ;;
        *) export "$2=$1${value:+:$value}" ;;
    esac
}
# The venv is the ROS 2 underlay: install/setup.bash only adds this package.
_delen_prepend "$VIRTUAL_ENV" AMENT_PREFIX_PATH
_delen_prepend "$VIRTUAL_ENV" CMAKE_PREFIX_PATH

if [ -f "$_delen_repo/install/setup.bash" ]; then
    # colcon's scripts are not written for `set -u`.
    _delen_nounset="$(set +o | grep nounset)"
    set +u
    # shellcheck disable=SC1091
    source "$_delen_repo/install/setup.bash"
    eval "$_delen_nounset"
    unset _delen_nounset
else
    echo "tools/env.sh: no install/ yet; run tools/setup.sh to build the package" >&2
fi

export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
# Keep DDS discovery on this machine (loopback only, no multicast on the LAN)
# unless the caller chose otherwise (Jazzy and newer; Humble uses ROS_LOCALHOST_ONLY=1).
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# Fast DDS transports for camera-size images (config/fastdds.xml, docs/large_images.md),
# unless the caller already set either variable (set empty: Fast DDS's own defaults).
if [ -z "${FASTDDS_DEFAULT_PROFILES_FILE+set}" ] && [ -z "${FASTRTPS_DEFAULT_PROFILES_FILE+set}" ]; then
    _delen_profile="$_delen_repo/install/delen_ros/share/delen_ros/config/fastdds.xml"
    [ -f "$_delen_profile" ] || _delen_profile="$_delen_repo/config/fastdds.xml"
    export FASTDDS_DEFAULT_PROFILES_FILE="$_delen_profile"
    unset _delen_profile
fi
unset -f _delen_prepend
unset _delen_repo
