"""The printed `mlflow ui` command and link use a port that is free, one worker (issue 27)."""

from __future__ import annotations

import re
import socket

import pytest

from al_sim.config.schema import TrackingConf
from al_sim.runtime.errors import ConfigError
from al_sim.tracking.contract import free_port, where_to_look


def test_a_taken_port_is_skipped_and_the_one_printed_is_the_one_linked() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert free_port(first=port, tries=5) != port
        hint = where_to_look("sqlite:///x.db", "7")
    command = re.search(r"mlflow ui --backend-store-uri sqlite:///x.db --port (\d+) --workers 1,"
                        r" then open http://127.0.0.1:(\d+)/#/experiments/7/runs", hint)
    assert command and command[1] == command[2], hint


def test_a_chosen_port_is_used_as_given() -> None:
    hint = where_to_look("sqlite:///x.db", "7", "abc", ui_port=6123)
    assert "--port 6123 --workers 1, then open http://127.0.0.1:6123/#/experiments/7/runs/abc" \
        in hint
    with pytest.raises(ConfigError, match="tracking.ui_port must be a port number"):
        TrackingConf(ui_port=70000)
