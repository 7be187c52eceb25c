"""An ML2 mechanism driver for a Neutron without agents: every port binds, on any host.

Neutron's in-tree `test` driver refuses to bind, so nova-compute (fake virt driver) would fail
servers with PortBindingFailed. This one binds the first segment offered with vif_type `ovs`
and marks the port ACTIVE, which is all the control plane needs; no packet ever flows.
"""
from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api


class BindAllMechanismDriver(api.MechanismDriver):
    def initialize(self) -> None:
        pass

    def bind_port(self, context) -> None:
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OVS,
                                {portbindings.CAP_PORT_FILTER: True,
                                 portbindings.OVS_HYBRID_PLUG: False},
                                status=constants.PORT_STATUS_ACTIVE)
            return
