"""The Python broker's OpenStack checkout and check-in, COUNT at once, through openstacksdk: what
`cargo bench -p broker-providers --bench openstack` compares broker with.

Usage: upstream_checkouts.py AUTH_URL COUNT FIRST_PAUSE

As broker/providers/openstack.py does it: one connection; per host the image by id, then by name;
the flavor and the network by id, then by name; create_server; get_server polled with a doubling
pause until ACTIVE; then delete_server for each. Prints the milliseconds of the checkouts (login
included) and of the check-ins.
"""

import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from openstack.exceptions import ResourceNotFound

# The same login as the simulator check's.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from speaks_openstack import password_cloud  # noqa: E402


def main():
    auth_url, count, first_pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    start = time.monotonic()
    conn = password_cloud(auth_url)

    def by_id_then_name(get, listing, name):
        try:
            return get(name).id
        except ResourceNotFound:
            return next(item.id for item in listing() if item.name == name)

    def checkout(_):
        image = by_id_then_name(conn.image.get_image, lambda: conn.image.images(name="rhel-9.4"), "rhel-9.4")
        flavor = by_id_then_name(conn.compute.get_flavor, conn.compute.flavors, "m1.small")
        network = by_id_then_name(conn.network.get_network, lambda: conn.network.networks(name="private"), "private")
        server = conn.compute.create_server(
            name=f"broker-{str(uuid.uuid4()).split('-')[0]}",
            image_id=image,
            flavor_id=flavor,
            networks=[{"uuid": network}],
        )
        pause = first_pause
        while True:
            found = conn.compute.get_server(server.id)
            if found.status == "ACTIVE":
                return found.id
            if found.status == "ERROR":
                raise RuntimeError(f"server {found.id} failed to build")
            time.sleep(pause)
            pause *= 2

    with ThreadPoolExecutor(count) as pool:
        ids = list(pool.map(checkout, range(count)))
    made = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(conn.compute.delete_server, ids))
    done = time.monotonic()
    print(f"{(made - start) * 1000:.0f} {(done - made) * 1000:.0f}")


if __name__ == "__main__":
    main()
