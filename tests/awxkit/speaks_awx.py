"""Drives the AWX simulator with the official AWX client, awxkit, the way the Python broker did.

Usage: python speaks_awx.py BASE_URL TOKEN

If awxkit can log in, find templates, launch them, wait for their jobs, read workflow nodes,
artifacts, job events, paginate and see AWX's errors, the simulator broker's tests run against
speaks AWX. Prints "awxkit OK" and exits 0, or fails with an assertion.
"""

import json
import sys

import awxkit.exceptions as exc
from awxkit import config
from awxkit.api.pages import Api


def main(url, token):
    config.base_url = url
    root = Api()
    root.connection.login(None, None, token=token, auth_type="Bearer")
    v2 = root.get().available_versions.v2.get()

    me = v2.me.get().results[0]
    assert me.username == "alice", me.username
    assert v2.ping.get().version

    # A workflow: launch, wait, read its nodes' jobs and their artifacts (broker's checkout).
    deploy = v2.workflow_job_templates.get(name="deploy-rhel").results.pop()
    assert deploy.summary_fields.organization.id == 1
    job = deploy.launch(payload={"extra_vars": json.dumps({"deploy_rhel_version": "9.4"})})
    job.wait_until_completed(interval=0.05, timeout=60)
    assert job.status == "successful", job.status
    nodes = job.get_related("workflow_nodes").results
    assert len(nodes) == 2, nodes
    artifacts = {}
    for node in sorted(nodes, key=lambda n: n.summary_fields.job.id):
        child = node.get_related("job")
        artifacts.update(child.artifacts)
    facts = artifacts["_broker_facts"]
    assert facts["fqdn"].endswith(".lab.example.com"), facts
    name = facts["name"]

    # A failed workflow: failed child jobs and their failed events (broker's failure reasons).
    failing = deploy.launch(payload={"extra_vars": json.dumps({"sim_fail": "configure"})})
    failing.wait_until_completed(interval=0.05, timeout=60)
    assert failing.status == "failed", failing.status
    failed_nodes = [
        n for n in failing.get_related("workflow_nodes").results if n.summary_fields.job.failed
    ]
    assert len(failed_nodes) == 1
    events = failed_nodes[0].get_related("job").get_related("job_events", page_size=200).results
    messages = [e.event_data["res"]["msg"] for e in events if e.failed]
    assert messages == [
        "No space left on device",
        "the deployment report could not be sent",
    ], messages

    # The release workflow with source_vm (broker's checkin), on the left VM and the deployed one.
    remove = v2.workflow_job_templates.get(name="remove-vm").results.pop()
    for vm in [name] + [
        n.get_related("job").artifacts.get("vm_name")
        for n in failing.get_related("workflow_nodes").results
        if not n.summary_fields.job.failed
    ]:
        released = remove.launch(payload={"extra_vars": json.dumps({"source_vm": vm})})
        released.wait_until_completed(interval=0.05, timeout=60)
        assert released.status == "successful", released.status

    # A job template's playbook job.
    command = v2.job_templates.get(name="run-command").results.pop()
    ran = command.launch(payload={"extra_vars": json.dumps({"command": "id"})})
    ran.wait_until_completed(interval=0.05, timeout=60)
    assert ran.status == "successful" and ran.artifacts["command_output"] == "ran id"

    # Pagination, as awxkit follows it.
    first = v2.inventory.get(page_size=2)
    assert first.count >= 4 and len(first.results) == 2 and first.next
    second = first.next.get()
    assert second.results[0].id != first.results[0].id

    # Labels, and AWX's duplicate error.
    v2.labels.post({"name": "awxkit=yes", "organization": 1})
    try:
        v2.labels.post({"name": "awxkit=yes", "organization": 1})
    except exc.Duplicate:
        pass
    else:
        raise AssertionError("a duplicate label was accepted")

    # A bad token is refused the AWX way.
    stranger = Api()
    stranger.connection.login(None, None, token="nope", auth_type="Bearer")
    try:
        stranger.get().available_versions.v2.get().me.get()
    except exc.Unauthorized:
        pass
    else:
        raise AssertionError("a bad token was accepted")
    print("awxkit OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
