#!/usr/bin/env bash
# Installs what the test suite needs (Debian packages, the project with its test extra) and
# runs it. Needs root for apt-get and for the tests that create network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    varnish            # varnishtest: raw-wire HTTP conformance cases (tests/vtc)
    postgresql         # the controller's store tested against a real server
    iproute2 nftables  # network namespaces, veth, bridges, VIP plumbing
    procps
    golang-go golang-github-vmware-govmomi-dev  # vcsim, the vCenter simulator (tests/integration/test_vsphere.py)
    openssh-server     # a real sshd for the Linux server cloud (tests/integration/test_linuxserver.py)
    shellcheck         # the devstack plugin's and the SE image's shell (tests/unit/devstack, tests/unit/se_image)
    qemu-utils         # qemu-img makes the test OVA's disk (tests/integration/test_vsphere_ova.py)
    libjemalloc2       # vantage-se's default allocator when installed (tests/unit/proxy/test_process.py)
)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# the OpenStack test stack (tests/integration/openstack/README.md) is installed and brought up
# in the background while the rest of the suite runs; its tests wait for it, and it is stopped
# when the run ends. VANTAGE_OS_BRINGUP=0 leaves it out (those tests then start one themselves).
if [ "${VANTAGE_OS_BRINGUP:-1}" != 0 ]; then
    nice -n 10 tests/integration/openstack/up.sh --install --background
    trap 'tests/integration/openstack/down.sh >/dev/null' EXIT
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]' -e drivers/vsphere -e drivers/linuxserver -e drivers/openstack
python3 -m pytest -p no:cacheprovider "$@"
