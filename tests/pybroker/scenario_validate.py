"""Validates scenario files with the Python broker's own validation (broker 0.8.11 from PyPI, whose
package carries the scenario format's JSON schema): the verdict its `broker scenarios validate` gives.

Usage: python scenario_validate.py BROKER_DIRECTORY FILE...

Prints one line per file, "valid NAME" or "invalid NAME: WHY", then "pybroker scenarios OK".
"""

import os
import sys


def main(directory, files):
    # The Python broker reads its settings from here when imported; an empty directory is enough.
    os.environ["BROKER_DIRECTORY"] = directory
    from broker.scenarios import validate_scenario

    for path in files:
        name = os.path.basename(path)
        valid, why = validate_scenario(path)
        print(f"valid {name}" if valid else f"invalid {name}: {why}")
    print("pybroker scenarios OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
