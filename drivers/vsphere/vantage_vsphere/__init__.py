"""Vantage cloud driver for VMware vSphere: SE VMs cloned from a template through vCenter."""
