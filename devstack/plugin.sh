#!/usr/bin/env bash
# shellcheck shell=bash
#
# devstack plugin for Vantage: the controller, the OpenStack resources its Service Engines
# need, and a CLOUD_OPENSTACK cloud pointing at this devstack.
#
#   [[local|localrc]]
#   enable_plugin vantage <git URL of this repository> [branch]

# Save trace setting
_XTRACE_VANTAGE_PLUGIN=$(set +o | grep xtrace)
set -o xtrace

# shellcheck source=devstack/lib/vantage
source "$VANTAGE_DIR/devstack/lib/vantage"

if is_service_enabled vantage; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing Vantage"
        install_vantage

    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring Vantage"
        configure_vantage

    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        # Keystone, Nova, Glance and Neutron run from here on
        echo_summary "Initializing Vantage"
        init_vantage
        echo_summary "Starting Vantage"
        start_vantage
        create_vantage_cloud
    fi

    if [[ "$1" == "unstack" ]]; then
        echo_summary "Stopping Vantage"
        stop_vantage
    fi

    if [[ "$1" == "clean" ]]; then
        # clean.sh runs unstack.sh first
        echo_summary "Cleaning up Vantage"
        cleanup_vantage
    fi
fi

# Restore xtrace
$_XTRACE_VANTAGE_PLUGIN
