"""Drives the Foreman simulator with the Python broker's own Foreman provider (broker 0.8.11 from
PyPI), as a user of its library would.

Usage: python foreman_checkout.py FOREMAN_URL BROKER_DIRECTORY

Checks out a host from a hostgroup (organisation by name, location by title), then one by image-based
provisioning, lists the hostgroups and describes one, runs a command through remote execution, and
checks both hosts back in. If all that works, the simulator broker's tests run against speaks Foreman
as far as the Python broker knows it. Prints "pybroker foreman OK" and exits 0, or fails.
"""

import os
import sys

SETTINGS = """\
Foreman:
  instances:
    sim:
      foreman_url: {url}
      foreman_username: alice
      foreman_password: alice-password
      organization: Default Organization
      location: Europe/Brno
      verify: false
      default: true
  name_prefix: pybroker
"""


def main(url, directory):
    with open(os.path.join(directory, "broker_settings.yaml"), "w") as f:
        f.write(SETTINGS.format(url=url))
    os.environ["BROKER_DIRECTORY"] = directory
    from broker import Broker
    from broker.providers.foreman import Foreman

    built = Broker(hostgroup="base/rhel9").checkout()
    assert built.hostname.startswith("pybroker-"), built.hostname
    assert built.hostname.endswith(".sim.example.com"), built.hostname
    print("built", built.hostname)

    imaged = Broker(
        hostgroup="fedora", image="fedora-41", computeresource="libvirt-lab"
    ).checkout()
    print("imaged", imaged.hostname)

    foreman = Foreman()
    groups = foreman.provider_help(hostgroups=True)
    assert groups == ["base", "base/rhel9", "fedora"], groups
    described = foreman.provider_help(hostgroup="base/rhel9")
    assert described["Operating System"] == "RedHat 9.4", described
    assert described["Domain"] == "sim.example.com", described

    result = foreman.execute(
        hostname=built.hostname,
        job_template="Run Command - Script Default",
        command="echo hello",
    )
    assert result.status == 0 and result.stdout.strip() == "hello", result
    failed = foreman.execute(
        hostname=built.hostname,
        job_template="Run Command - Script Default",
        command="exit 3",
    )
    assert failed.status == 3, failed

    Broker(hosts=[built, imaged]).checkin()
    print("pybroker foreman OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
