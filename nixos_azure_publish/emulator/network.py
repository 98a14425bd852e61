"""Microsoft.Network: the virtual network, subnet, public IP, NSG and NIC a test VM needs.

Only what a smoke-test VM uses, with the references Azure checks: a NIC's
subnet and public IP must exist, and nothing in use can be deleted
(NicInUse, PublicIPAddressInUse, InUseSubnetCannotBeDeleted).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.emulator import apiversions
from nixos_azure_publish.emulator.armerror import ArmError, invalid_parameter
from nixos_azure_publish.emulator.common import GROUP_PROVIDERS, Envelope, provisioned
from nixos_azure_publish.emulator.context import Response
from nixos_azure_publish.emulator.kinds import Kind
from nixos_azure_publish.emulator.router import Route, table

if TYPE_CHECKING:
    from collections.abc import Callable

    from nixos_azure_publish.emulator.context import Completion, Request
    from nixos_azure_publish.emulator.core import ArmApp
    from nixos_azure_publish.emulator.store import Operation, Resource

VNET: Final = "Microsoft.Network/virtualNetworks"
SUBNET: Final = "Microsoft.Network/virtualNetworks/subnets"
PIP: Final = "Microsoft.Network/publicIPAddresses"
NIC: Final = "Microsoft.Network/networkInterfaces"
NSG: Final = "Microsoft.Network/networkSecurityGroups"
_PARAM: Final = {
    VNET: "virtualNetworkName",
    PIP: "publicIpAddressName",
    NIC: "networkInterfaceName",
    NSG: "networkSecurityGroupName",
}


def _etag(req: Request) -> str:
    return f'W/"{req.app.new_unique_id()}"'


def _missing_reference(ref: str, by: str) -> ArmError:
    return ArmError(
        400,
        "InvalidResourceReference",
        f"Resource {ref} referenced by resource {by} was not found. Please make sure that the "
        "referenced resource exists, and that both resources are in the same region.",
    )


# -- builders: request properties -> stored properties ---------------------------------------


def _vnet_properties(req: Request, rid: str, properties: dict[str, Any]) -> dict[str, Any]:
    prefixes = (properties.get("addressSpace") or {}).get("addressPrefixes") or []
    try:
        networks = [ipaddress.ip_network(p) for p in prefixes]
    except ValueError as error:
        raise invalid_parameter(f"Invalid address prefix: {error}.", "addressSpace") from None
    if not networks:
        raise invalid_parameter(
            "The virtual network needs at least one address prefix.",
            "properties.addressSpace.addressPrefixes",
        )
    subnets = [_subnet(req, rid, raw, networks) for raw in properties.get("subnets") or []]
    return {
        "addressSpace": {"addressPrefixes": list(prefixes)},
        "subnets": subnets,
        "resourceGuid": req.app.new_unique_id(),
        "enableDdosProtection": False,
        "provisioningState": "Updating",
    }


def _subnet(req: Request, vnet_id: str, raw: dict[str, Any], networks: list[Any]) -> dict[str, Any]:
    name = raw.get("name")
    prefix = (raw.get("properties") or {}).get("addressPrefix")
    if not name or not prefix:
        raise invalid_parameter("Every subnet needs a name and an addressPrefix.", "subnets")
    try:
        subnet = ipaddress.ip_network(prefix)
    except ValueError as error:
        raise invalid_parameter(f"Invalid subnet prefix: {error}.", "subnets") from None
    if not any(subnet.subnet_of(net) for net in networks if net.version == subnet.version):
        raise ArmError(
            400,
            "NetcfgSubnetRangeOutsideVnet",
            f"Subnet '{name}' is not valid because its IP address range is outside the IP "
            "address range of virtual network.",
        )
    sid = f"{vnet_id}/subnets/{name}"
    existing = req.app.store.get(sid)
    configs = existing.properties.get("ipConfigurations", []) if existing else []
    body = {
        "id": sid,
        "name": name,
        "type": SUBNET,
        "etag": _etag(req),
        "properties": {
            "addressPrefix": prefix,
            "provisioningState": "Succeeded",
            "privateEndpointNetworkPolicies": "Disabled",
            "privateLinkServiceNetworkPolicies": "Enabled",
        },
    }
    if configs:
        body["properties"]["ipConfigurations"] = configs
    return body


def _pip_properties(req: Request, rid: str, properties: dict[str, Any]) -> dict[str, Any]:
    del rid
    method = properties.get("publicIPAllocationMethod", "Dynamic")
    if method not in {"Static", "Dynamic"}:
        raise invalid_parameter(
            f"The value '{method}' of publicIPAllocationMethod is not valid.",
            "properties.publicIPAllocationMethod",
        )
    count = sum(1 for r in req.app.store.resources.values() if r.type == PIP)
    return {
        "publicIPAllocationMethod": method,
        "publicIPAddressVersion": properties.get("publicIPAddressVersion", "IPv4"),
        "ipAddress": f"203.0.113.{count % 250 + 4}",
        "idleTimeoutInMinutes": 4,
        "resourceGuid": req.app.new_unique_id(),
        "provisioningState": "Updating",
    }


def _nsg_properties(req: Request, rid: str, properties: dict[str, Any]) -> dict[str, Any]:
    rules = []
    for rule in properties.get("securityRules") or []:
        name = rule.get("name")
        if not name:
            raise invalid_parameter("Every security rule needs a name.", "securityRules")
        rules.append(
            {
                "id": f"{rid}/securityRules/{name}",
                "name": name,
                "type": f"{NSG}/securityRules",
                "etag": _etag(req),
                "properties": {**(rule.get("properties") or {}), "provisioningState": "Succeeded"},
            }
        )
    return {
        "securityRules": rules,
        "resourceGuid": req.app.new_unique_id(),
        "provisioningState": "Updating",
    }


def _nic_properties(req: Request, rid: str, properties: dict[str, Any]) -> dict[str, Any]:
    raw_configs = properties.get("ipConfigurations") or []
    if not raw_configs:
        raise invalid_parameter(
            "A network interface needs at least one IP configuration.",
            "properties.ipConfigurations",
        )
    configs = []
    for index, raw in enumerate(raw_configs):
        name = raw.get("name") or f"ipconfig{index + 1}"
        cprops = raw.get("properties") or {}
        subnet_ref = (cprops.get("subnet") or {}).get("id")
        if not subnet_ref or _find_subnet(req, subnet_ref) is None:
            raise _missing_reference(str(subnet_ref), rid)
        out: dict[str, Any] = {
            "privateIPAddress": f"10.0.0.{index + 4}",
            "privateIPAllocationMethod": cprops.get("privateIPAllocationMethod", "Dynamic"),
            "privateIPAddressVersion": "IPv4",
            "subnet": {"id": subnet_ref},
            "primary": bool(cprops.get("primary", index == 0)),
            "provisioningState": "Succeeded",
        }
        pip_ref = (cprops.get("publicIPAddress") or {}).get("id")
        if pip_ref:
            pip = req.app.store.get(pip_ref)
            if pip is None or pip.type != PIP:
                raise _missing_reference(pip_ref, rid)
            other = pip.properties.get("ipConfiguration", {}).get("id", "")
            if other and not other.lower().startswith(rid.lower() + "/"):
                raise ArmError(
                    400,
                    "PublicIPAddressInUse",
                    f"Public IP address {pip_ref} is already in use by {other}.",
                )
            out["publicIPAddress"] = {"id": pip.id}
        configs.append(
            {
                "id": f"{rid}/ipConfigurations/{name}",
                "name": name,
                "type": f"{NIC}/ipConfigurations",
                "etag": _etag(req),
                "properties": out,
            }
        )
    result: dict[str, Any] = {
        "ipConfigurations": configs,
        "enableAcceleratedNetworking": bool(properties.get("enableAcceleratedNetworking", False)),
        "enableIPForwarding": False,
        "nicType": "Standard",
        "resourceGuid": req.app.new_unique_id(),
        "provisioningState": "Updating",
    }
    nsg_ref = (properties.get("networkSecurityGroup") or {}).get("id")
    if nsg_ref:
        if req.app.store.get(nsg_ref) is None:
            raise _missing_reference(nsg_ref, rid)
        result["networkSecurityGroup"] = {"id": nsg_ref}
    return result


def _find_subnet(req: Request, subnet_id: str) -> dict[str, Any] | None:
    vnet_id, _, name = subnet_id.rpartition("/subnets/")
    vnet = req.app.store.get(vnet_id)
    if vnet is None:
        return None
    for subnet in vnet.properties.get("subnets", []):
        if subnet["name"].lower() == name.lower():
            found: dict[str, Any] = subnet
            return found
    return None


_BUILDERS: dict[str, Callable[[Request, str, dict[str, Any]], dict[str, Any]]] = {
    VNET: _vnet_properties,
    PIP: _pip_properties,
    NSG: _nsg_properties,
    NIC: _nic_properties,
}


# -- handlers --------------------------------------------------------------------------------


def _put(type_name: str) -> Callable[[Request], Response]:
    def handler(req: Request) -> Response:
        req.app.require_group(req)
        envelope = Envelope.of(req)
        kind = _KINDS[type_name]
        rid = kind.id(req)
        existing = req.app.store.get(rid)
        if existing is not None and existing.body["location"] != envelope.location:
            raise ArmError(
                400,
                "InvalidResourceLocation",
                f"The resource '{existing.name}' already exists in location "
                f"'{existing.body['location']}'.",
            )
        properties = _BUILDERS[type_name](req, rid, envelope.properties)
        if existing is not None:
            _keep_links(existing.properties, properties)
        resource = kind.new(req, envelope, properties)
        resource.body["etag"] = _etag(req)
        if type_name == PIP:
            resource.body["sku"] = envelope.body.get("sku") or {"name": "Basic", "tier": "Regional"}
        if type_name == NIC:
            _link_nic(req, resource)
        return kind.provisioning(
            req, resource, "network-provision", status=200 if existing else 201
        )

    return handler


def _keep_links(old: dict[str, Any], new: dict[str, Any]) -> None:
    for key in ("virtualMachine", "ipConfiguration"):
        if key in old:
            new[key] = old[key]


def _link_nic(req: Request, nic: Resource) -> None:
    for config in nic.properties["ipConfigurations"]:
        pip_ref = config["properties"].get("publicIPAddress", {}).get("id")
        if pip_ref:
            pip = req.app.store.get(pip_ref)
            if pip is not None:
                pip.properties["ipConfiguration"] = {"id": config["id"]}
        subnet = _find_subnet(req, config["properties"]["subnet"]["id"])
        if subnet is not None:
            links = subnet["properties"].setdefault("ipConfigurations", [])
            if all(link["id"].lower() != config["id"].lower() for link in links):
                links.append({"id": config["id"]})


def _check_not_in_use(req: Request, resource: Resource) -> None:
    if resource.type == NIC and resource.properties.get("virtualMachine"):
        vm = resource.properties["virtualMachine"]["id"]
        raise ArmError(
            400,
            "NicInUse",
            f"Network Interface {resource.id} is used by existing resource {vm}. In order to "
            "delete the network interface, it must be dissociated from the resource.",
        )
    if resource.type == PIP and resource.properties.get("ipConfiguration"):
        raise ArmError(
            400,
            "PublicIPAddressInUse",
            f"Public IP address {resource.id} can not be deleted since it is still allocated to "
            f"resource {resource.properties['ipConfiguration']['id']}.",
        )
    if resource.type == NSG:
        for nic in req.app.store.resources.values():
            ref = (nic.properties.get("networkSecurityGroup") or {}).get("id", "")
            if nic.type == NIC and ref.lower() == resource.id.lower():
                raise ArmError(
                    400,
                    "InUseNetworkSecurityGroupCannotBeDeleted",
                    f"Network security group {resource.id} cannot be deleted because it is in "
                    f"use by the following resources: {nic.id}.",
                )
    if resource.type == VNET:
        for subnet in resource.properties.get("subnets", []):
            if subnet["properties"].get("ipConfigurations"):
                raise ArmError(
                    400,
                    "InUseSubnetCannotBeDeleted",
                    f"Subnet {subnet['name']} is in use by "
                    f"{subnet['properties']['ipConfigurations'][0]['id']} and cannot be deleted.",
                )


def get_subnet(req: Request) -> Response:
    vnet_id = _KINDS[VNET].require(req).id
    subnet = _find_subnet(req, f"{vnet_id}/subnets/{req.params['subnetName']}")
    if subnet is None:
        raise ArmError(
            404,
            "NotFound",
            f"Resource {vnet_id}/subnets/{req.params['subnetName']} not found.",
        )
    return Response(200, subnet)


def unlink_nic(app: ArmApp, nic: Resource) -> None:
    """Forget the links a NIC holds (its public IPs and subnets), before it is deleted."""
    for config in nic.properties.get("ipConfigurations", []):
        pip_ref = config["properties"].get("publicIPAddress", {}).get("id")
        pip = app.store.get(pip_ref) if pip_ref else None
        if pip is not None:
            pip.properties.pop("ipConfiguration", None)
        vnet_id, _, name = config["properties"]["subnet"]["id"].rpartition("/subnets/")
        vnet = app.store.get(vnet_id)
        for subnet in vnet.properties.get("subnets", []) if vnet else []:
            if subnet["name"].lower() == name.lower():
                links = subnet["properties"].get("ipConfigurations", [])
                subnet["properties"]["ipConfigurations"] = [
                    link for link in links if link["id"].lower() != config["id"].lower()
                ]
                if not subnet["properties"]["ipConfigurations"]:
                    subnet["properties"].pop("ipConfigurations")


def _kind(type_name: str, param: str) -> Kind:
    short = type_name.split("/", 1)[1]
    return Kind(
        type_name,
        param,
        short[0].upper() + short[1:],
        apiversions.NETWORK,
        ("List", "ListAll"),
        delete_kind="network-delete",
        delete_monitor="operationResults",
        in_use=_check_not_in_use,
    )


_KINDS: Final = {type_name: _kind(type_name, param) for type_name, param in _PARAM.items()}


def _routes() -> tuple[Route, ...]:
    routes = [route for kind in _KINDS.values() for route in kind.routes(_put(kind.type))]
    subnet = GROUP_PROVIDERS + VNET + "/{virtualNetworkName}/subnets/{subnetName}"
    routes += table(apiversions.NETWORK, SUBNET, ("GET", subnet, get_subnet, "read", "Subnets_Get"))
    return tuple(routes)


def _deleted(app: ArmApp, op: Operation) -> None:
    res = app.store.delete(op.resource_id)
    if res is not None and res.type == NIC:
        unlink_nic(app, res)


ROUTES: Final = _routes()
COMPLETIONS: Final[dict[str, Completion]] = {
    "network-provision": provisioned,
    "network-delete": _deleted,
}
