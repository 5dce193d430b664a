"""labelprob client: blocking and asyncio Python clients for labelprob.v1.

The command-line tools built on it live in `labelprob.tools`; this package imports none
of them.
"""

from labelprob.client.calls import StreamResult
from labelprob.client.client import AsyncClient, Client
from labelprob.client.params import ClassifyParams

__all__ = ["AsyncClient", "ClassifyParams", "Client", "StreamResult"]
