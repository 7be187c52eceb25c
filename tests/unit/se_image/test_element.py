"""Tests for the SE image (se_image/): the diskimage-builder element checked by
diskimage-builder's own tools (dependency resolution, dib-lint), its shell by shellcheck, its
systemd unit by systemd-analyze, and build.sh's refusal of bad options. Building a whole image
needs root, loop and device-mapper devices and the distributions' mirrors: se_image/README.md
says how to do it by hand."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sysconfig

import diskimage_builder
import pytest
import yaml
from diskimage_builder.element_dependencies import get_elements

REPO = pathlib.Path(__file__).resolve().parents[3]
IMAGE = REPO / "se_image"
ELEMENT = IMAGE / "elements" / "vantage-se"
UNIT = ELEMENT / "static" / "etc" / "systemd" / "system" / "vantage-se.service"
BIN = pathlib.Path(sysconfig.get_path("scripts"))
DIB_ELEMENTS = pathlib.Path(diskimage_builder.__file__).parent / "elements"

SHELL = [IMAGE / "build.sh", *sorted(
    p for d in ("extra-data.d", "install.d", "post-install.d", "environment.d")
    for p in (ELEMENT / d).iterdir())]


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False,
                          **kwargs)


def test_shell_passes_shellcheck():
    done = run("shellcheck", "--external-sources", *map(str, SHELL), cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def test_phase_scripts_are_executable():
    for script in SHELL:
        if script.parent.name != "environment.d":  # sourced, not run
            assert os.access(script, os.X_OK), f"{script} is not executable"


def test_element_passes_dib_lint(tmp_path):
    # dib-lint checks every element under ELEMENTS_DIR: set -eu/pipefail, indents, sudo, YAML
    dib_lint = shutil.which("dib-lint", path=str(BIN)) or shutil.which("dib-lint")
    assert dib_lint, "dib-lint comes with diskimage-builder (the test extra)"
    (tmp_path / "lib").mkdir()
    done = run(dib_lint, cwd=REPO, env=os.environ | {
        "ELEMENTS_DIR": "se_image/elements", "LIB_DIR": str(tmp_path / "lib")})
    assert done.returncode == 0 and "PASS" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("distro", ["ubuntu-minimal", "debian-minimal"])
def test_element_dependencies_resolve(distro):
    # what disk-image-create resolves for build.sh's element list (base and a block device
    # element are added by disk-image-create itself)
    elements = dict(get_elements(["base", distro, "vm", "vantage-se", "block-device-mbr"],
                                 f"{IMAGE / 'elements'}:{DIB_ELEMENTS}"))
    assert {"package-installs", "install-static", "cloud-init-datasources",
            "growroot"} <= set(elements)
    assert elements["vantage-se"] == str(ELEMENT)


def test_the_image_gets_what_the_se_and_its_bootstrap_need():
    packages = yaml.safe_load((ELEMENT / "package-installs.yaml").read_text())
    assert {"python3-venv", "nftables", "iproute2", "cloud-init", "open-vm-tools"} <= \
        set(packages)


def _unit_for_this_host(tmp_path) -> pathlib.Path:
    """The unit with the virtualenv's commands pointing at this environment's console
    scripts, so that systemd-analyze also checks that they exist."""
    for command in ("vantage-se", "vantage-se-bootstrap"):
        assert (BIN / command).exists(), f"{command} is not installed (setup.cfg)"
    unit = tmp_path / "vantage-se.service"
    unit.write_text(UNIT.read_text().replace("/opt/vantage-se/bin/", f"{BIN}/"))
    return unit


def test_unit_verifies(tmp_path):
    done = run("systemd-analyze", "verify", str(_unit_for_this_host(tmp_path)))
    # unknown or misspelt keys are only warnings: none is allowed
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_unit_hardening_keeps_exposure_low(tmp_path):
    # systemd's own scale, 0 (locked down) to 10 (unrestricted); the unit scores 2.4
    done = run("systemd-analyze", "security", "--offline=true", "--threshold=30",
               str(_unit_for_this_host(tmp_path)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    text = UNIT.read_text()
    assert "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE" in text
    assert "\nUser=vantage-se\n" in text and "DynamicUser" not in text


@pytest.mark.parametrize("args, message", [
    (["-d", "centos"], "-d centos: choose ubuntu or debian"),
    (["-s", "1"], "-s 1: the image size is a whole number of GB, at least 2"),
    (["-x"], "se_image/build.sh [-d ubuntu|debian] [-r RELEASE]"),
])
def test_build_sh_refuses_bad_options(args, message):
    done = run(str(IMAGE / "build.sh"), *args)
    assert done.returncode == 2
    assert message in done.stderr
