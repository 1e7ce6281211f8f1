"""One test suite per port, written once and run against the fake (tests/unit/test_contracts.py)
and against the real adapter (tests/integration/test_contracts.py), so a fake cannot drift.

Each suite is a class named *Contract (not collected by itself); a runner subclasses it as
Test* and provides its fixtures. A `world` fixture gives what a test needs from outside the
port (writing a test file, reading one back), for the fake and for the real host alike.
"""
