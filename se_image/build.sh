#!/usr/bin/env bash
# Builds the Service Engine image: a qcow2 (Ubuntu or Debian, minimal) whose vantage-se service
# finds its bootstrap at boot (cloud-init user data on OpenStack, guestinfo on vSphere) and
# joins its controller. The vantage wheel is built from this repository.
#
#   se_image/build.sh [-d ubuntu|debian] [-r RELEASE] [-o OUTPUT] [-s SIZE_GB] [-a ARCH]
#                     [-e ELEMENT]...
#
# Needs diskimage-builder (pip install diskimage-builder), debootstrap, qemu-utils and root
# (sudo) for the chroot and loop devices.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

distro=ubuntu
release=
output=$here/vantage-se
size=4
arch=amd64
extra_elements=()

usage() {
    # the header above, on standard error when the options were wrong
    if [ "${1:-0}" -eq 0 ]; then
        sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    else
        sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    fi
    exit "${1:-0}"
}

while getopts "d:r:o:s:a:e:h" opt; do
    case $opt in
        d) distro=$OPTARG ;;
        r) release=$OPTARG ;;
        o) output=${OPTARG%.qcow2} ;;
        s) size=$OPTARG ;;
        a) arch=$OPTARG ;;
        e) extra_elements+=("$OPTARG") ;;
        h) usage 0 ;;
        *) usage 2 ;;
    esac
done

case $distro in
    ubuntu) base_element=ubuntu-minimal ;;   # DIB_RELEASE default: noble
    debian) base_element=debian-minimal ;;   # DIB_RELEASE default: stable
    *) echo "build.sh: -d $distro: choose ubuntu or debian" >&2; exit 2 ;;
esac
if ! [[ $size =~ ^[0-9]+$ ]] || [ "$size" -lt 2 ]; then
    echo "build.sh: -s $size: the image size is a whole number of GB, at least 2" >&2
    exit 2
fi
for tool in disk-image-create:diskimage-builder qemu-img:qemu-utils debootstrap:debootstrap; do
    if ! command -v "${tool%%:*}" > /dev/null; then
        echo "build.sh: ${tool%%:*} not found; install ${tool##*:}" \
             "(pip install diskimage-builder; apt-get install qemu-utils debootstrap)" >&2
        exit 2
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Only the pure-Python vantage wheel is built here; its dependencies are installed inside the
# image by its own pip, for its own Python version.
python3 -m pip wheel --quiet --no-deps --wheel-dir "$work/wheels" "$repo"

export VANTAGE_SE_WHEEL_DIR=$work/wheels
export ELEMENTS_PATH=$here/elements${ELEMENTS_PATH:+:$ELEMENTS_PATH}
if [ -n "$release" ]; then
    export DIB_RELEASE=$release
fi

disk-image-create -a "$arch" -t qcow2 -o "$output" --image-size "$size" \
    "$base_element" vm vantage-se "${extra_elements[@]}"
echo "build.sh: SE image written to $output.qcow2"
