"""What the `run` CLI tests share (test_run_cli.py, test_exec_options.py): a service over the
fakes with one container, "web", the CLI invoked over it, and web's fake agent client."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from appcontainers.entrypoints.cli import main
from tests.fakes import make_service


@pytest.fixture
def svc():
    s = make_service()
    s.provision("web")
    return s


def invoke(svc, *args, input=None):
    return CliRunner().invoke(main, list(args), obj=lambda reconcile=True: svc, input=input)


def client(svc):
    return svc.ports.agents(svc.settings.layout.agent_dir("web"))
