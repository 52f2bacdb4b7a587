"""The task service with the dashboard mounted at /ui, as `hqs-sdk-server serve` will mount it.

Usage: python serve_with_ui.py DATA_DIR PORT

Until the service mounts the dashboard itself, the tests build the same thing here: the
service's own application (``create_app``) under ``/`` and
:func:`hqs_sdk_dashboard.service.create_service_dashboard` under ``/ui``, on the service's
database, file store and signing key. The service's lifespan (scheduler, file store) runs.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from hqs_sdk_dashboard.service import create_service_dashboard
from hqs_sdk_server.app import create_app
from hqs_sdk_server.settings import Settings
from starlette.applications import Starlette
from starlette.routing import Mount


def main() -> None:
    data_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    settings = Settings(data_dir=data_dir, port=port, max_running=4,
                        tasks_from=("hqs_sdk.testing.tasks",))
    api = create_app(settings)
    ui = create_service_dashboard(settings)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        async with api.router.lifespan_context(api):
            yield

    app = Starlette(routes=[Mount("/ui", app=ui), Mount("/", app=api)], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
