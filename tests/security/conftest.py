from __future__ import annotations

import pytest

from tests.security.servers import LogoutReceiver


@pytest.fixture()
def rp_server():
    rp = LogoutReceiver()
    yield rp
    rp.stop()
