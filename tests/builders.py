"""Small builders for catalog rows used across tests."""

from __future__ import annotations

import itertools

from catalog.models import Device, Metric

_seq = itertools.count(1)


def device(group: str = "Secil", edge: str = "Portugal", name: str | None = None) -> Device:
    name = name or f"Dev{next(_seq)}"
    return Device.objects.create(group_id=group, edge=edge, device=name, uns_path=f"{group}/{edge}/{name}")


def metric(dev: Device | None = None, name: str | None = None, datatype: int = 11) -> Metric:
    dev = dev or device()
    name = name or f"Plant/Area/Tag{next(_seq)}"
    return Metric.objects.create(device=dev, name=name, uns_path=f"{dev.uns_path}/{name}",
                                 datatype=datatype, fingerprint=b"")
