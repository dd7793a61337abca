"""Drives trimtab's fake LINSTOR controller with python-linstor (pinned) and prints what it read back as JSON.

Usage: linstor_conformance.py linstor://HOST:PORT [linstor://HOST:PORT TOKEN]
The optional second controller enforces a bearer token; the script checks it refuses a client without one.
"""

import json
import sys

import linstor
from linstor import consts

GIB_KIB = 1024 * 1024


def codes(replies):
    return [
        {
            "ret_code": r.ret_code,
            "is_error": r.is_error(),
            "is_warning": r.is_warning(),
            "is_success": r.is_success(),
            "message": r.message,
        }
        for r in replies
    ]


def main():
    url = sys.argv[1]
    out = {}
    with linstor.Linstor(url) as lin:
        version = lin.controller_version()
        out["rest_api_version"] = version.rest_api_version

        nodes = lin.node_list_raise().nodes
        out["nodes"] = sorted(
            ({"name": n.name, "zone": n.props.get("Aux/zone"), "status": n.connection_status} for n in nodes),
            key=lambda n: n["name"],
        )

        pools = lin.storage_pool_list_raise().storage_pools
        out["pools"] = sorted(
            (
                {
                    "node": p.node_name,
                    "pool": p.name,
                    "kind": p.provider_kind,
                    "free_kib": p.free_space.free_capacity if p.free_space else None,
                    "total_kib": p.free_space.total_capacity if p.free_space else None,
                }
                for p in pools
            ),
            key=lambda p: (p["node"], p["pool"]),
        )

        out["rd_create"] = codes(lin.resource_dfn_create("pvc-py"))
        rd_again = lin.resource_dfn_create("pvc-py")
        out["rd_exists"] = codes(rd_again)
        out["rd_exists_is_fail_exists_rsc_dfn"] = rd_again[0].is_error(consts.FAIL_EXISTS_RSC_DFN)
        out["vd_create"] = codes(lin.volume_dfn_create("pvc-py", GIB_KIB))
        out["autoplace"] = codes(
            lin.resource_auto_place("pvc-py", 2, storage_pool=["pool-ssd"], replicas_on_different=["Aux/zone"])
        )
        out["autoplace_again"] = codes(
            lin.resource_auto_place("pvc-py", 2, storage_pool=["pool-ssd"], replicas_on_different=["Aux/zone"])
        )

        def placed():
            resources = lin.resource_list_raise(filter_by_resources=["pvc-py"]).resources
            return sorted(
                (
                    {
                        "node": r.node_name,
                        "flags": sorted(r.flags),
                        "pool": r.volumes[0].storage_pool_name if r.volumes else None,
                        "disk_state": r.volumes[0].state.disk_state if r.volumes else None,
                        "in_use": r.data_v1.get("state", {}).get("in_use"),
                    }
                    for r in resources
                ),
                key=lambda r: r["node"],
            )

        out["resources"] = placed()

        out["snapshot"] = codes(lin.snapshot_create(None, "pvc-py", "snap1"))
        snapshots = lin.snapshot_dfn_list_raise().snapshots
        out["snapshots"] = [{"name": s.name, "resource": s.resource_name, "nodes": sorted(s.nodes)} for s in snapshots]

        out["attach"] = codes(lin.resource_create([linstor.ResourceData("n4", "pvc-py", diskless=True)]))
        out["resources_attached"] = placed()
        out["detach"] = codes(lin.resource_delete("n4", "pvc-py"))
        out["resources_detached"] = placed()

        lin.resource_dfn_create("pvc-big")
        lin.volume_dfn_create("pvc-big", GIB_KIB)
        too_many = lin.resource_auto_place("pvc-big", 4, storage_pool=["pool-ssd"], replicas_on_different=["Aux/zone"])
        out["not_enough_nodes"] = codes(too_many)
        out["not_enough_nodes_is_fail_not_enough_nodes"] = too_many[0].is_error(consts.FAIL_NOT_ENOUGH_NODES)
        out["not_enough_nodes_details"] = too_many[0].details

        pools_after = lin.storage_pool_list_raise(filter_by_stor_pools=["pool-ssd"]).storage_pools
        out["ssd_free_after"] = {p.node_name: p.free_space.free_capacity for p in pools_after}

    if len(sys.argv) > 3:
        secured_url, token = sys.argv[2], sys.argv[3]
        try:
            with linstor.Linstor(secured_url) as lin:
                lin.node_list_raise()
            out["no_token"] = "accepted"
        except linstor.LinstorApiCallError as e:
            out["no_token"] = {"ret_code": e.main_error.ret_code, "is_error": e.main_error.is_error()}
        lin = linstor.Linstor(secured_url, auth_token=token)
        lin.allow_insecure = True
        with lin:
            out["with_token_nodes"] = len(lin.node_list_raise().nodes)

    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
