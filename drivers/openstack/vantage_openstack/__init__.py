"""Vantage cloud driver for OpenStack (Nova, Neutron, Glance through openstacksdk)."""
