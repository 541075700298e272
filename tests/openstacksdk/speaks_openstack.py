"""Drives the OpenStack simulator with the official client library, openstacksdk.

Usage: python speaks_openstack.py AUTH_URL

If openstacksdk can log in (password and application credential), list images, flavors and
networks, create a server, wait for it to be ACTIVE, read its metadata and addresses, give it a
floating IP, delete it, see a refusal over quota and a failed build's fault, and log in again when its token expires, the
simulator broker's tests run against speaks OpenStack. Prints "openstacksdk OK" and exits 0, or
fails with an assertion.
"""

import sys

import openstack
from openstack import exceptions


def password_cloud(auth_url):
    return openstack.connect(
        auth_url=auth_url,
        username="alice",
        password="alice-password",
        project_name="demo",
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
        identity_api_version="3",
    )


def main(auth_url):
    conn = password_cloud(auth_url)
    images = {i.name: i for i in conn.image.images()}
    assert sorted(images) == ["fedora-41", "rhel-9.4", "rhel-9.4-minimal"], sorted(images)
    flavors = {f.name: f for f in conn.compute.flavors()}
    assert flavors["m1.small"].vcpus == 1 and flavors["m1.small"].ram == 2048, flavors
    networks = {n.name: n for n in conn.network.networks()}
    assert sorted(networks) == ["private", "public"], sorted(networks)
    assert conn.network.find_network("private").id == networks["private"].id

    # Nova refuses the first create over quota (the test injects it).
    try:
        conn.compute.create_server(
            name="sdk-quota",
            image_id=images["fedora-41"].id,
            flavor_id=flavors["m1.medium"].id,
            networks=[{"uuid": networks["private"].id}],
        )
        raise AssertionError("the create over quota was accepted")
    except exceptions.ForbiddenException as e:
        assert "Quota exceeded for instances" in str(e), e

    # A build that ends in ERROR shows Nova's fault (the test injects it into the next create),
    # and its token expires at the first poll (the test injects that too): keystoneauth logs in again.
    failing = conn.compute.create_server(
        name="sdk-error",
        image_id=images["fedora-41"].id,
        flavor_id=flavors["m1.medium"].id,
        networks=[{"uuid": networks["private"].id}],
    )
    try:
        conn.compute.wait_for_server(failing, interval=0.05, wait=30)
        raise AssertionError("the build did not fail")
    except exceptions.ResourceFailure:
        pass
    failed = conn.compute.get_server(failing.id)
    assert failed.status == "ERROR", failed.status
    assert failed.fault["message"] == "No valid host was found. There are not enough hosts available.", failed.fault
    conn.compute.delete_server(failed)

    # Create, wait for ACTIVE, read metadata and addresses.
    server = conn.compute.create_server(
        name="sdk-check",
        image_id=images["rhel-9.4"].id,
        flavor_id=flavors["m1.small"].id,
        networks=[{"uuid": networks["private"].id}],
        key_name="alice-key",
        metadata={"broker_id": "rec-1"},
    )
    server = conn.compute.wait_for_server(server, interval=0.05, wait=30)
    assert server.status == "ACTIVE", server.status
    meta = conn.compute.get_server_metadata(server).metadata
    assert meta == {"broker_id": "rec-1"}, meta
    fixed = [a["addr"] for a in server.addresses["private"]]
    assert fixed == ["10.0.0.10"], server.addresses
    assert [s.id for s in conn.compute.servers(name="sdk-check")] == [server.id]

    # A floating IP on the server's port shows in its addresses.
    port = next(conn.network.ports(device_id=server.id))
    fip = conn.network.create_ip(floating_network_id=networks["public"].id, port_id=port.id)
    addresses = conn.compute.get_server(server.id).addresses["private"]
    kinds = {a["OS-EXT-IPS:type"]: a["addr"] for a in addresses}
    assert kinds == {"fixed": "10.0.0.10", "floating": fip.floating_ip_address}, addresses

    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.05, wait=30)
    assert conn.compute.find_server("sdk-check") is None
    conn.network.delete_ip(fip)

    assert [s.name for s in conn.compute.servers()] == []

    # A wrong password is refused.
    try:
        openstack.connect(auth_url=auth_url, username="alice", password="wrong", project_name="demo",
                          user_domain_name="Default", project_domain_name="Default").authorize()
        raise AssertionError("a wrong password was accepted")
    except exceptions.SDKException as e:
        assert "(HTTP 401)" in str(e), e

    # An application credential logs in, scoped to its project.
    app = openstack.connect(
        auth_type="v3applicationcredential",
        auth_url=auth_url,
        application_credential_id="alice-appcred-0001",
        application_credential_secret="alice-appcred-secret",
    )
    assert app.current_project_id == "p-demo", app.current_project_id
    assert len(list(app.image.images())) == 3
    print("openstacksdk OK")


if __name__ == "__main__":
    main(sys.argv[1])
