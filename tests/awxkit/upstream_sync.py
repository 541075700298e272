"""The Python broker's AnsibleTower inventory sync, done the way it does it (awxkit, one host after
the other), for the `ansible_tower` benchmark to compare against. Reads every page (the Python broker
reads only the first 200 of each list) so that both do the same work.

Usage: python upstream_sync.py BASE_URL TOKEN USER   → prints the number of hosts compiled
"""

import sys

import awxkit.exceptions as exc
from awxkit import config
from awxkit.api.pages import Api


def pages(page):
    while True:
        yield from page.results
        if not page.next:
            return
        page = page.next.get()


def compile_host(host):
    try:
        facts = host.related.ansible_facts.get()
    except (exc.Forbidden, exc.NotFound):
        facts = {}
    variables = host.variables
    return {
        "name": host.name,
        "hostname": variables.get("fqdn") or getattr(facts, "ansible_fqdn", None),
        "ip": variables.get("ansible_host"),
        "os_distribution": getattr(facts, "ansible_distribution", None),
    }


def main(url, token, user):
    config.base_url = url
    root = Api()
    root.connection.login(None, None, token=token, auth_type="Bearer")
    v2 = root.get().available_versions.v2.get()
    invs = [i for i in pages(v2.inventory.get(page_size=200)) if user in i.name]
    hosts = []
    for inv in invs:
        hosts.extend(pages(inv.get_related("hosts", page_size=200)))
    compiled = [compile_host(h) for h in hosts]
    print(len(compiled))


if __name__ == "__main__":
    main(*sys.argv[1:4])
