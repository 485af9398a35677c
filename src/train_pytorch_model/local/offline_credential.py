"""A TokenCredential for validating Azure ML YAMLs without signing in (dry runs, tests).

azure-ai-ml's offline validation never asks for a token; counting the calls proves that it did not.
"""

from __future__ import annotations

import time
from typing import Any


class OfflineCredential:
    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.calls += 1
        return AccessToken("offline", int(time.time()) + 3600)


def offline_ml_client(
    credential: OfflineCredential | None = None,
    *,
    subscription_id: str = "00000000-0000-0000-0000-000000000000",
    resource_group: str = "rg",
    workspace_name: str = "ws",
) -> Any:
    """An MLClient for a workspace (a placeholder unless named), for offline validation only: nothing is sent."""
    from azure.ai.ml import MLClient

    return MLClient(
        credential=credential or OfflineCredential(),
        subscription_id=subscription_id,
        resource_group_name=resource_group,
        workspace_name=workspace_name,
    )
