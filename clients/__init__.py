"""labelprob client: Python clients and command-line tools for labelprob.v1."""

from labelprob.client.client import AsyncClient, ClassifyParams, Client

__all__ = ["AsyncClient", "ClassifyParams", "Client"]
